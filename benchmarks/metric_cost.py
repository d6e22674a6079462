"""Cost of the perceptual metrics (cvvdp, flip) against the protocol metrics, same run.

Part 1 (per pair): the embedded sample photos as protocol items (centre crop, nearest
reduction to N, centre hole N/3) with a blurred fill pasted into the hole, scored in this
one process with one thread (as each worker of a 2-core run is). Per N and metric the
median CPU seconds per pair over the images, and the ratio to the five protocol metrics (l1,
psnr, ssim, hole_l1, hole_psnr) measured on the same pairs; cvvdp and flip are timed on
the whole image (``full``) and on the hole crop (``hole``, bench.metrics.hole_crop).
The first call of each model-based metric (building it, importing torch) is timed apart.

Part 2 (``--run``): the default benchmark (default methods, the given resolutions, the
first ``--run-images`` sample photos) run three times into fresh folders: protocol metrics
only, the default metric set, protocol metrics only again; the ratio of the default run's
wall time, and of its CPU time (driver + workers), to the mean of the other two (the load
of a shared machine drifts; CPU time is the steadier measure there); then the
per-method means of every metric, so the perceptual columns can be read against L1/PSNR/SSIM.

    python -m benchmarks.metric_cost [--sizes 1024 2048] [--images 3]
        [--run | --only-run] [--run-sizes 1024 2048] [--run-images 6] [--no-repeat]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

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


def timed(*args, **kwargs) -> float:
    """CPU seconds of one ``compute_metrics(*args, **kwargs)`` call (all threads of this process).

    CPU time, not wall time: on a shared machine other processes' load changes wall times by
    several times from one minute to the next, while a single-threaded call's CPU time moves
    much less.
    """
    t = time.process_time()
    compute_metrics(*args, **kwargs)
    return time.process_time() - t


def per_pair(sizes: list[int], count: int) -> None:
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    first = {}
    fill, gt, mask = pairs(sizes[0], 1)[0]
    for name in ("cvvdp", "flip"):
        first[name] = timed(fill, gt, mask, (name,), region="hole")
    print(
        "first call (builds the metric, imports its package): "
        + ", ".join(f"{k} {v:.2f} s" for k, v in first.items())
    )
    print(f"\n{'N':>5} {'metric':<12} {'CPU s/pair':>10} {'x core':>7}")
    for n in sizes:
        items = pairs(n, count)
        core = statistics.median(timed(*p, CORE_METRICS) for p in items)
        print(f"{n:>5} {'core (5)':<12} {core:10.3f} {1.0:7.2f}")
        for name in ("cvvdp", "flip"):
            for region in ("full", "hole"):
                t = statistics.median(timed(*p, (name,), region=region) for p in items)
                print(f"{n:>5} {name + ' ' + region:<12} {t:10.3f} {t / core:7.2f}")


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (the workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def end_to_end(sizes: list[int], count: int, repeat: bool = True) -> None:
    import shutil

    import pandas as pd

    from bench.runner import RunConfig, run

    default, left_out = resolve_metrics(None)
    sets = {"protocol": list(CORE_METRICS), "default": list(default)}
    walls: dict[str, list[float]] = {k: [] for k in sets}
    cpus: dict[str, list[float]] = {k: [] for k in sets}
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp, "photos")
        photos.mkdir()
        for path in list_images(sample_dir())[:count]:
            shutil.copy(path, photos)
        # protocol, default, protocol: the machine's load drifts; the default run is compared
        # with the mean of the runs before and after it.
        order = ("protocol", "default", "protocol") if repeat else ("protocol", "default")
        for k, label in enumerate(order):
            cfg = RunConfig(
                images=str(photos), out=f"{tmp}/{k}", resolutions=sizes, metrics=sets[label], plots=False
            )
            cpu0 = cpu_seconds()
            walls[label].append(run(cfg, progress=False).wall_s)
            cpus[label].append(cpu_seconds() - cpu0)
            print(
                f"{label:<9} ({', '.join(sets[label])}): wall {walls[label][-1]:.1f} s, "
                f"CPU {cpus[label][-1]:.1f} s",
                flush=True,
            )
        for what, t in (("wall", walls), ("CPU", cpus)):
            ratio = t["default"][0] / statistics.mean(t["protocol"])
            print(f"ratio default / protocol-only, {what} time: {ratio:.2f}")
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
    p.add_argument("--run-images", type=int, default=6, help="sample photos in part 2 (all: 6)")
    p.add_argument("--no-repeat", action="store_true", help="part 2 without the second protocol run")
    p.add_argument("--only-run", action="store_true", help="part 2 only")
    args = p.parse_args(argv)
    print(f"default metric set: {', '.join(DEFAULT_METRICS)}")
    if not args.only_run:
        per_pair(args.sizes, args.images)
    if args.run or args.only_run:
        print()
        end_to_end(args.run_sizes, args.run_images, repeat=not args.no_repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
