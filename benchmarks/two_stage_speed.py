"""Seconds per image and peak memory of ``two-stage`` against the authors' per-image loop.

The baseline is a transcription of the published inference script's loop
(a-mos/High_Resolution_Image_Inpainting ``test.py``, as described in
``../shared/reference/ARCHITECTURES.md``): for every image it builds both networks afresh,
loads both checkpoints, runs the coarse stage, builds the four shifted copies with
``scipy.ndimage.shift(order=0)`` on numpy arrays, stacks the 20 channels with
``numpy.dstack`` and runs the refinement on the whole image, outside ``torch.no_grad``
(as the script does). The networks are this project's modules (the published ones are
only compiled bytecode); the refinement runs its full decoder, as the original has no
other. Ours is ``hrbench``'s ``two-stage`` method: both networks loaded once, inference
mode, shifts on tensors, the fine decoder levels run over the hole's bounding box only.

Both variants use the same random-weight checkpoints (``bench.weights_gen``, seed 0), the
same images (the embedded sample photos, centre-cropped, nearest-resized to N×N, centre
hole of side round(N/3)), the same torch thread count, and each runs in its own
subprocess so its peak RSS is its own. Outputs are compared value by value.

    python -m benchmarks.two_stage_speed [--sizes 1024 2048] [--images 3]
        [--weights-dir DIR] [--threads N]

On two shared CPU cores the default (1024 and 2048, three images) takes about 12 minutes,
most of it the published loop at 2048 (about a minute per image and ~12 GB peak);
``--sizes 1024`` takes about 3 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SAMPLES = Path(__file__).resolve().parents[1] / "datasets" / "sample"


# -- inputs -------------------------------------------------------------------------------------
def make_inputs(folder: Path, size: int, count: int) -> list[tuple[Path, Path]]:
    """Write ``count`` protocol inputs at ``size`` px (image with zeroed hole, mask)."""
    from bench.io import list_images, read_image, write_image, write_mask
    from bench.masks import centre_square_mask
    from bench.resize import centre_square, resize_nearest

    photos = list_images(SAMPLES)
    if len(photos) < count:
        raise SystemExit(f"{SAMPLES}: {len(photos)} photos, --images {count} asked")
    pairs = []
    for photo in photos[:count]:
        gt = resize_nearest(centre_square(read_image(photo)), (size, size))
        hole = centre_square_mask(size, size)
        gt[hole] = 0
        img_p, mask_p = folder / f"{photo.stem}.png", folder / f"{photo.stem}_mask.png"
        write_image(img_p, np.ascontiguousarray(gt))
        write_mask(mask_p, hole)
        pairs.append((img_p, mask_p))
    return pairs


# -- the published loop, transcribed ----------------------------------------------------------------
def _published_pad(img: np.ndarray) -> np.ndarray:
    """Zero-pad bottom/right to the next multiple of 256 (a uint8 copy, as published)."""
    h = (img.shape[0] + 255) // 256 * 256
    w = (img.shape[1] + 255) // 256 * 256
    out = np.zeros((h, w, img.shape[2]), dtype="uint8")
    out[: img.shape[0], : img.shape[1]] = img
    return out


def _published_fit512(img: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Nearest resize into a centred 512x512 zero canvas; returns (canvas, cols, rows)."""
    import cv2

    h, w = img.shape[:2]
    channels = img.shape[2] if img.ndim > 2 else 1
    canvas = np.zeros((512, 512) if channels == 1 else (512, 512, channels), dtype=img.dtype)
    if h / 512 > w / 512:
        cols, rows = w * 512 // h, 512
        small = cv2.resize(img, (cols, rows), interpolation=cv2.INTER_NEAREST)
        canvas[:, (512 - cols) // 2 : (512 - cols) // 2 + cols] = small
    else:
        cols, rows = 512, h * 512 // w
        small = cv2.resize(img, (cols, rows), interpolation=cv2.INTER_NEAREST)
        canvas[(512 - rows) // 2 : (512 - rows) // 2 + rows, :] = small
    return canvas, cols, rows


def _published_coarse(image_bgr: np.ndarray, mask: np.ndarray, model) -> np.ndarray:
    import cv2
    import torch

    image, cols, rows = _published_fit512(image_bgr)
    mask512, _, _ = _published_fit512(mask)
    image = np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.uint8)
    mask512 = np.ascontiguousarray(np.expand_dims(mask512, 0)).astype(np.uint8)
    image_t = torch.from_numpy(image).float().div(255)
    known = 1 - torch.from_numpy(mask512).float().div(255)
    out = model((image_t * known).unsqueeze(0), known.unsqueeze(0))[0]
    out = image_t * known + out * (1 - known)
    out = out.mul(255).byte().data.numpy().transpose(0, 2, 3, 1)[0]
    out = cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
    top, left = (512 - rows) // 2, (512 - cols) // 2
    return out[top : top + rows, left : left + cols]


def _published_refine(image_bgr: np.ndarray, mask: np.ndarray, coarse: np.ndarray, model):
    import cv2
    import scipy.ndimage
    import torch

    image = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    s = (100 / 512) * image.shape[0]
    resized = cv2.resize(coarse, (image.shape[1], image.shape[0]))
    m = mask // 255
    matched = image * (1 - m) + resized * m
    m = m * 255
    parts = [m, matched]
    for sh in ((-s, 0, 0), (s, 0, 0), (0, s, 0), (0, -s, 0)):
        parts.append(scipy.ndimage.shift(matched, sh, order=0, mode="constant", cval=1))
        parts.append(scipy.ndimage.shift(m, sh, order=0, mode="constant", cval=255))
    cat = np.dstack(parts)
    t = torch.from_numpy(cat).float().div(255).unsqueeze(0).permute(0, -1, 1, 2)
    out = model(t[:, 1:], t[:, 0:1])
    out = out.mul(255).byte().data.numpy()
    return np.transpose(out, [0, 2, 3, 1])[0]


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(t0: tuple[float, float]) -> tuple[float, float]:
    """(wall s, CPU s of this process, all threads) since ``t0``."""
    return time.perf_counter() - t0[0], time.process_time() - t0[1]


def run_published(pairs, weights_dir: Path, out_dir: Path) -> list[float]:
    """The per-image loop; returns (wall s, CPU s) per image (everything inside the loop)."""
    import cv2
    import torch
    from matplotlib import pyplot as plt
    from skimage import io

    from bench.methods.nets import DFNet, RefinementNet
    from bench.methods.weights import DFNET, REFINEMENT

    times = []
    for img_p, mask_p in pairs:
        t0 = _clock()
        img = io.imread(img_p)
        mask = io.imread(mask_p)
        if mask.ndim != 3:
            mask = mask[..., np.newaxis]
        mask = mask[..., :1]
        image = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        shape = image.shape
        image, mask = _published_pad(image), _published_pad(mask)
        dfnet = DFNet()
        dfnet.load_state_dict(torch.load(weights_dir / DFNET.filename, map_location="cpu"))
        dfnet.eval()
        coarse = _published_coarse(image, mask, dfnet)
        refinement = RefinementNet()
        refinement.roi = False  # the published network decodes the whole image
        state = torch.load(weights_dir / REFINEMENT.filename, map_location="cpu")["state_dict"]
        refinement.load_state_dict(state)
        refinement.eval()
        out = _published_refine(image, mask, coarse, refinement)
        out = out[: shape[0], : shape[1]][..., :3]
        plt.imsave(out_dir / img_p.name, out)
        times.append(_since(t0))
    return times


def run_ours(pairs, weights_dir: Path, out_dir: Path) -> list[float]:
    """``two-stage`` through the library: created once, then one call per image."""
    from bench.io import read_image, read_mask, write_image
    from bench.methods import MethodContext, create

    method = create("two-stage", MethodContext(device="cpu", weights_dir=weights_dir))
    times = []
    for img_p, mask_p in pairs:
        t0 = _clock()
        image = read_image(img_p)
        write_image(out_dir / img_p.name, method(image, read_mask(mask_p, image.shape[:2])))
        times.append(_since(t0))
    method.close()
    return times


def worker(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    pairs = [(Path(a), Path(b)) for a, b in json.loads(args.pairs)]
    run = run_published if args.worker == "published" else run_ours
    times = run(pairs, Path(args.weights_dir), Path(args.out))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print(json.dumps({"times": times, "peak_rss_mb": peak_mb}))
    return 0


# -- the comparison ----------------------------------------------------------------------------------
def _spawn(variant: str, pairs, weights_dir: Path, out: Path, threads: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.two_stage_speed", "--worker", variant,
           "--pairs", json.dumps([[str(a), str(b)] for a, b in pairs]),
           "--weights-dir", str(weights_dir), "--out", str(out), "--threads", str(threads)]
    env = dict(os.environ, HRBENCH_THREADS=str(threads))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{variant} worker failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def compare_outputs(pairs, dir_a: Path, dir_b: Path) -> tuple[int, float]:
    """(max |a - b| in 8-bit levels, fraction of values exactly equal) over all images."""
    from bench.io import read_image

    worst, equal, total = 0, 0, 0
    for img_p, _ in pairs:
        a = read_image(dir_a / img_p.name).astype(np.int16)
        b = read_image(dir_b / img_p.name).astype(np.int16)
        d = np.abs(a - b)
        worst, equal, total = max(worst, int(d.max())), equal + int((d == 0).sum()), total + d.size
    return worst, equal / total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--weights-dir", type=Path, default=None,
                    help="checkpoints to use (default: random ones written to a temp folder)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all CPUs)")
    ap.add_argument("--worker", choices=("published", "ours"), help=argparse.SUPPRESS)
    ap.add_argument("--pairs", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads <= 0:
        args.threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if args.worker:
        return worker(args)

    with tempfile.TemporaryDirectory(prefix="hrbench-speed-") as tmp:
        tmp = Path(tmp)
        wdir = args.weights_dir
        if wdir is None:
            from bench.weights_gen import write_random_weights

            wdir = tmp / "weights"
            write_random_weights(wdir, seed=0)
        print(f"two-stage vs the published per-image loop; {args.images} images per size, "
              f"CPU, {args.threads} torch threads; mean per image: wall s and CPU s (all "
              "threads; robust when other processes share the cores), peak RSS MB")
        print(f"{'size':>5} {'publ wall':>9} {'ours wall':>9} {'ratio':>6} {'publ CPU':>9} "
              f"{'ours CPU':>9} {'ratio':>6} {'publ MB':>8} {'ours MB':>8} {'ratio':>6} "
              f"{'max diff':>8} {'equal %':>8}")
        for size in args.sizes:
            folder = tmp / f"in{size}"
            folder.mkdir()
            pairs = make_inputs(folder, size, args.images)
            res = {}
            for variant in ("published", "ours"):
                out = tmp / f"{variant}{size}"
                out.mkdir()
                res[variant] = _spawn(variant, pairs, wdir, out, args.threads)
            worst, equal = compare_outputs(pairs, tmp / f"published{size}", tmp / f"ours{size}")
            (wp, cp), (wo, co) = (np.mean(res[v]["times"], axis=0) for v in ("published", "ours"))
            mp, mo = res["published"]["peak_rss_mb"], res["ours"]["peak_rss_mb"]
            print(f"{size:>5} {wp:>9.2f} {wo:>9.2f} {wp / wo:>5.2f}x {cp:>9.2f} {co:>9.2f} "
                  f"{cp / co:>5.2f}x {mp:>8.0f} {mo:>8.0f} {mp / mo:>5.2f}x {worst:>8d} "
                  f"{100 * equal:>8.4f}", flush=True)
            for v in ("published", "ours"):
                per = ", ".join(f"{w:.1f}/{c:.1f}" for w, c in res[v]["times"])
                print(f"      {v} per image (wall/CPU s): {per}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
