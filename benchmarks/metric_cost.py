"""Cost of the perceptual metrics (cvvdp, flip) against the protocol metrics, same run.

Part 1 (per pair): the embedded sample photos as protocol items (centre crop, nearest
reduction to N, centre hole N/3) with a blurred fill pasted into the hole, scored in this
one process with one thread (as each worker of a 2-core run is). Per N and metric the
median seconds per pair over the images, and the ratio to the five protocol metrics (l1,
psnr, ssim, hole_l1, hole_psnr) measured on the same pairs; cvvdp and flip are timed on
the whole image (``full``) and on the hole crop (``hole``, bench.metrics.hole_crop).
The first call of each model-based metric (building it, importing torch) is timed apart.

Part 2 (``--run``): the default benchmark (default methods, the given resolutions) run
twice into fresh folders, once with the protocol metrics only and once with the default
metric set, and the wall-time ratio; then the per-method means of every metric, so the
perceptual columns can be read against L1/PSNR/SSIM.

    python -m benchmarks.metric_cost [--sizes 1024 2048] [--images 3] [--run] [--run-sizes 1024 2048]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import cv2
import numpy as np

from bench.datasets import sample_dir
from bench.io import list_images, read_image
from bench.metrics import CORE_METRICS, DEFAULT_METRICS, compute_metrics, resolve_metrics
from bench.train.data import protocol_item


def pairs(n: int, count: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(fill, gt, mask) for the first ``count`` sample photos at N x N."""
    out = []
    for path in list_images(sample_dir())[:count]:
        gt, mask = protocol_item(read_image(path), n)
        fill = gt.copy()
        fill[mask] = cv2.GaussianBlur(gt, (0, 0), 8.0)[mask]
        out.append((fill, gt, mask))
    return out


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def per_pair(sizes: list[int], count: int) -> None:
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    first = {}
    for name in ("cvvdp", "flip"):
        fill, gt, mask = pairs(sizes[0], 1)[0]
        first[name] = timed(lambda n=name: compute_metrics(fill, gt, mask, (n,), region="hole"))
    print("first call (builds the metric, imports its package): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in first.items()))
    print(f"\n{'N':>5} {'metric':<12} {'s/pair':>8} {'x core':>7}")
    for n in sizes:
        items = pairs(n, count)
        core = statistics.median(timed(lambda p=p: compute_metrics(*p, CORE_METRICS)) for p in items)
        print(f"{n:>5} {'core (5)':<12} {core:8.3f} {1.0:7.2f}")
        for name in ("cvvdp", "flip"):
            for region in ("full", "hole"):
                t = statistics.median(
                    timed(lambda p=p: compute_metrics(*p, (name,), region=region)) for p in items
                )
                print(f"{n:>5} {name + ' ' + region:<12} {t:8.3f} {t / core:7.2f}")


def end_to_end(sizes: list[int]) -> None:
    import pandas as pd

    from bench.runner import RunConfig, run

    default, left_out = resolve_metrics(None)
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, names in (("protocol metrics", list(CORE_METRICS)), ("default metrics", list(default))):
            cfg = RunConfig(out=f"{tmp}/{len(walls)}", resolutions=sizes, metrics=names)
            walls[label] = run(cfg, progress=False).wall_s
            print(f"{label:<17} {', '.join(names)}: {walls[label]:.1f} s", flush=True)
        base, full = walls["protocol metrics"], walls["default metrics"]
        print(f"ratio default / protocol-only: {full / base:.2f}")
        if left_out:
            print("left out of the default here: " + "; ".join(left_out.values()))
        df = pd.read_csv(f"{tmp}/1/metrics.csv")
        table = df.pivot_table(index="method", columns=["resolution", "metric"], values="value")
        shown = [m for m in ("l1", "psnr", "ssim", "cvvdp", "flip") if m in df.metric.unique()]
        with pd.option_context("display.width", 200, "display.max_columns", 40):
            for n in sizes:
                print(f"\nmeans at {n} px (cvvdp: JOD, higher better; flip: lower better)")
                print(table[n][shown].round(4).to_string())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", type=int, default=[1024, 2048])
    p.add_argument("--images", type=int, default=3, help="sample photos per size (part 1)")
    p.add_argument("--run", action="store_true", help="also part 2: two default runs, wall ratio")
    p.add_argument("--run-sizes", nargs="+", type=int, default=[1024, 2048])
    args = p.parse_args(argv)
    print(f"default metric set: {', '.join(DEFAULT_METRICS)}")
    per_pair(args.sizes, args.images)
    if args.run:
        print()
        end_to_end(args.run_sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
