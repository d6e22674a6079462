"""SSIM speed: scikit-image's Gaussian SSIM against ``bench.metrics.ssim``, same run, same inputs.

Two input pairs per size N (made here, no files needed):

- ``general``: a natural-looking N x N image (scikit-image's astronaut, upscaled, with fine
  noise) against its JPEG (quality 75) re-encoding, so nearly every window differs and no
  shortcut applies;
- ``protocol``: the same ground truth against a fill of the protocol's centre hole
  (side round(N/3), here a blurred copy pasted into the hole), known region identical, as
  ``hrbench run`` scores it.

For each, the median wall time over ``--repeats`` runs of each implementation, the speed-up
(scikit-image median / ours median), the process CPU-time ratio (OpenCV may use more than
one core; scikit-image uses one) and the absolute difference of the two SSIM values.

    python -m benchmarks.ssim_speed [--sizes 1024 2048] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import cv2
import numpy as np
from skimage import data
from skimage.metrics import structural_similarity

from bench.masks import centre_square_mask
from bench.metrics import ssim


def skimage_ssim(out: np.ndarray, gt: np.ndarray) -> float:
    """The reference: scikit-image with the protocol's settings."""
    return float(
        structural_similarity(
            out, gt, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            data_range=255, channel_axis=-1,
        )
    )


def make_pairs(n: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'general': (out, gt), 'protocol': (out, gt)} of uint8 N x N x 3 RGB images."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(data.astronaut(), (n, n), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0.0, 4.0, base.shape)
    gt = np.clip(base + noise, 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", gt, [cv2.IMWRITE_JPEG_QUALITY, 75])
    assert ok
    general = cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED)
    mask = centre_square_mask(n, n)
    protocol = gt.copy()
    protocol[mask] = cv2.GaussianBlur(gt, (0, 0), 8.0)[mask]
    return {"general": (general, gt), "protocol": (protocol, gt)}


def time_it(fn: Callable[[], float], repeats: int) -> tuple[float, float, float]:
    """(value, median wall s, median process-CPU s) over ``repeats`` calls."""
    walls, cpus = [], []
    value = float("nan")
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        value = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return value, statistics.median(walls), statistics.median(cpus)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if args.repeats < 1 or any(n < 64 for n in args.sizes):
        print("--repeats must be >= 1 and --sizes >= 64", file=sys.stderr)
        return 2
    print(f"OpenCV threads: {cv2.getNumThreads()}; median of {args.repeats} runs each")
    header = f"{'size':>6} {'case':<9} {'skimage s':>10} {'ours s':>8} {'speed-up':>9}"
    print(header + f" {'cpu ratio':>9} {'|diff|':>9}")
    worst_diff, min_speedup = 0.0, float("inf")
    for n in args.sizes:
        for case, (out, gt) in make_pairs(n).items():
            ssim(out, gt)  # warm-up: first OpenCV call allocates its thread pool
            ref, ref_wall, ref_cpu = time_it(lambda o=out, g=gt: skimage_ssim(o, g), args.repeats)
            got, our_wall, our_cpu = time_it(lambda o=out, g=gt: ssim(o, g), args.repeats)
            diff = abs(ref - got)
            worst_diff = max(worst_diff, diff)
            min_speedup = min(min_speedup, ref_wall / our_wall)
            print(
                f"{n:>6} {case:<9} {ref_wall:>10.3f} {our_wall:>8.3f} {ref_wall / our_wall:>8.1f}x"
                f" {ref_cpu / our_cpu:>8.1f}x {diff:>9.1e}",
                flush=True,
            )
    print(f"smallest speed-up {min_speedup:.1f}x; largest |difference| {worst_diff:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
