"""Seconds per image of the classical baselines at 1024 and 2048 px (protocol input).

One corpus photo is centre-cropped, nearest-resized to N x N and given the protocol's centre
hole (side round(N/3)); every method runs through the shared wrapper, as in ``hrbench run``.
The baseline, measured in the same run, is scikit-image's ``inpaint_biharmonic`` on the whole
image at the smallest size (at 2048 it needs minutes and several GB, so it is not run there);
the script prints our biharmonic's speed-up over it and the largest difference between the
two outputs (8-bit levels).

    python -m benchmarks.classical_speed [--image FILE] [--sizes 1024 2048]
        [--methods telea ns biharmonic patchmatch] [--no-baseline]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.io import read_image
from bench.masks import centre_square_mask
from bench.methods import create
from bench.resize import centre_square, resize_nearest

DEFAULT_IMAGE = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "corpus" / "images"
    / "lomiri16__aitzgorri_by_aitzol_berasategi.jpg"
)


def protocol_input(photo: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth (uint8 N x N x 3) and centre hole mask (bool N x N) at size ``n``."""
    gt = resize_nearest(centre_square(photo), (n, n))
    return np.ascontiguousarray(gt), centre_square_mask(n, n)


def timed(fn, *args) -> tuple[object, float, float]:
    """Result, wall seconds and process CPU seconds of ``fn(*args)``."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - w0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--methods", nargs="+", default=["telea", "ns", "biharmonic", "patchmatch"])
    ap.add_argument("--no-baseline", action="store_true", help="skip scikit-image's biharmonic")
    args = ap.parse_args(argv)
    if not args.image.is_file():
        print(f"{args.image}: image not found; pass --image FILE")
        return 2
    photo = read_image(args.image)
    print(f"image {args.image.name}; wall s (cpu s) per image, hole L1 vs ground truth")
    print(f"{'method':<12}" + "".join(f"{n:>26}" for n in args.sizes))
    ours_bih: dict[int, np.ndarray] = {}
    ours_bih_s: dict[int, float] = {}
    inputs = {n: protocol_input(photo, n) for n in args.sizes}
    for name in args.methods:
        inst = create(name)
        cells = []
        for n in args.sizes:
            gt, mask = inputs[n]
            out, wall, cpu = timed(inst, gt, mask)
            hole_l1 = np.abs(out.astype(np.float64) - gt)[mask].mean()
            cells.append(f"{wall:7.2f}s ({cpu:6.2f}) L1 {hole_l1:5.1f}")
            if name == "biharmonic":
                ours_bih[n], ours_bih_s[n] = out, wall
        print(f"{name:<12}" + "".join(f"{c:>26}" for c in cells), flush=True)
    if not args.no_baseline and "biharmonic" in args.methods:
        from skimage.restoration import inpaint_biharmonic

        n = min(args.sizes)
        gt, mask = inputs[n]
        zeroed = gt.copy()
        zeroed[mask] = 0
        ref, wall, cpu = timed(lambda: inpaint_biharmonic(zeroed, mask, channel_axis=-1))
        ref8 = np.clip(np.rint(ref * 255), 0, 255).astype(np.int16)
        diff = np.abs(ref8 - ours_bih[n].astype(np.int16))
        print(f"baseline skimage inpaint_biharmonic at {n}: {wall:.2f}s ({cpu:.2f} cpu); "
              f"ours {ours_bih_s[n]:.2f}s -> speed-up x{wall / ours_bih_s[n]:.1f}; "
              f"max |diff| {diff.max()} levels, {np.count_nonzero(diff)} of {diff.size} values differ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
