"""The Dask executor (``hrbench run --cluster``) against the local process pool, side by side.

Sections (``--only`` picks some; all run by default):

- ``scaling``: PatchMatch at 1024 px on the embedded photos with 1 and then 2 Dask workers
  (``local:1``, ``local:2``); speed-up of the execute phase (workers started and warm: the
  items only) and of the whole run; beside it, in the same round, the same items in 1 and
  2 plain warm processes, the machine's own scaling. ``--rounds`` rounds, medians.
- ``overhead``: 1,000 trivial items through the local pool and through ``local:2``;
  milliseconds per item (wall time of the execute phase / items).
- ``default``: a benchmark run, local pool vs ``local:2`` alternately (``--repeats`` rounds),
  in fresh run folders. By default the default methods at 1024 px on the 6 embedded photos
  (the full default run takes ~5 min per side on two idle cores); ``--resolutions 1024 1536
  1792 2048`` runs the full default, ``--images N`` uses the first N photos.
- ``reuse``: ``two-stage-slim`` over 12 items on ``local:2``; counts how often each worker
  created (loaded) the method.

The machine's load average is printed before and after each section: on a shared machine
other processes steal cores, and the numbers mean little without it.

    python -m benchmarks.cluster_scaling [--only scaling overhead default reuse]
        [--workdir DIR] [--resolutions N ...] [--images N] [--repeats R] [--rounds R]
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench import runner
from bench.cluster import DaskExecutor, parse_address
from bench.executors import LocalPool, limit_threads

SECTIONS = ("scaling", "overhead", "default", "reuse")


def noop(task: int) -> dict:
    """A trivial item: the cost measured is the executor's own."""
    return {"task": task}


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


class _Timed:
    """Mixin: seconds of entering the executor and preparing its workers (start-up: the Dask
    cluster, its probe, the workers' imports and metric models) and of the ``run`` itself
    (execute: all items)."""

    start_s = exec_s = 0.0

    def __enter__(self):
        t0 = time.perf_counter()
        out = super().__enter__()
        self.start_s = time.perf_counter() - t0
        return out

    def prepare(self, fn):
        t0 = time.perf_counter()
        super().prepare(fn)
        self.start_s += time.perf_counter() - t0

    def run(self, fn, tasks):
        t0 = time.perf_counter()
        yield from super().run(fn, tasks)
        self.exec_s = time.perf_counter() - t0


class TimedDask(_Timed, DaskExecutor):
    pass


class TimedPool(_Timed, LocalPool):
    pass


def dask(address: str, run_dir: Path, items: bool = True, cls: type = TimedDask) -> TimedDask:
    # What the runner passes for --cluster (group by method identity, free models at the end).
    if not items:  # trivial tasks: plain integers
        return cls(parse_address(address), run_dir)
    return cls(parse_address(address), run_dir, group=lambda t: t.method_key, release=runner.close_methods)


def bench_run(run_dir: Path, executor, methods: list[str], resolutions: list[int], images=None) -> dict:
    cfg = runner.RunConfig(
        out=str(run_dir),
        images=str(images) if images else None,
        methods=methods,
        resolutions=resolutions,
        lpips=False,
        plots=False,
        device="cpu",
    )
    t0 = time.perf_counter()
    summary = runner.run(cfg, progress=False, executor=executor)
    wall = time.perf_counter() - t0
    assert summary.n_failed == 0, f"{summary.n_failed} items failed in {run_dir}"
    return {"wall": wall, "start": executor.start_s, "exec": executor.exec_s, "items": summary.n_done}


def _plain_worker(tasks, warm, barrier, out) -> None:
    """One warm process without any executor: the machine's own scaling, the baseline."""
    limit_threads(1)
    warm()
    barrier.wait()
    for task in tasks:
        runner.run_task(task)
    out.put(None)


def plain_processes(tasks: list, warm, n: int) -> float:
    """Seconds for ``n`` processes, already warm, to run ``tasks`` (dealt round-robin)."""
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(n + 1), ctx.Queue()
    procs = [ctx.Process(target=_plain_worker, args=(tasks[i::n], warm, barrier, out)) for i in range(n)]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    for _ in procs:
        out.get()
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    return wall


class _Capture(TimedDask):
    """A Dask run that also keeps its tasks and warm-up function (for the plain baseline)."""

    def prepare(self, fn):
        self.warm = fn
        super().prepare(fn)

    def run(self, fn, tasks):
        self.tasks = list(tasks)
        yield from super().run(fn, self.tasks)


def section_scaling(work: Path, rounds: int) -> None:
    """Dask ``local:1`` and ``local:2``, then the same items in 1 and 2 plain warm processes
    (no executor: what the machine itself allows at that moment), ``rounds`` times over:
    on a shared virtual machine the speed of a core changes from minute to minute, so a
    ratio means something only beside its baseline measured in the same round."""
    print(f"\n## scaling: patchmatch @ 1024 px, embedded photos, {rounds} rounds  ({_load()})")
    ratios: dict[str, list[float]] = {"dask": [], "plain": []}
    for r in range(rounds):
        res = {}
        for n in (1, 2):
            run_dir = work / f"scaling-{r}-{n}"
            ex = dask(f"local:{n}", run_dir, cls=_Capture)
            res[n] = out = bench_run(run_dir, ex, ["patchmatch"], [1024])
            print(f"round {r + 1} dask local:{n}: {out['items']} items, execute {out['exec']:.1f} s, "
                  f"start-up {out['start']:.1f} s, whole run {out['wall']:.1f} s")
        tasks = [dataclasses.replace(t, output=None) for t in ex.tasks]  # nothing written
        plain = {n: plain_processes(tasks, ex.warm, n) for n in (1, 2)}
        print(f"round {r + 1} plain processes: 1 -> {plain[1]:.1f} s, 2 -> {plain[2]:.1f} s")
        ratios["dask"].append(res[1]["exec"] / res[2]["exec"])
        ratios["plain"].append(plain[1] / plain[2])
        print(f"round {r + 1}: speed-up 2 vs 1 workers: dask execute {ratios['dask'][-1]:.2f}x "
              f"(whole run {res[1]['wall'] / res[2]['wall']:.2f}x), plain processes "
              f"{ratios['plain'][-1]:.2f}x  ({_load()})")
    print(f"median speed-up over {rounds} rounds: dask {statistics.median(ratios['dask']):.2f}x, "
          f"plain processes {statistics.median(ratios['plain']):.2f}x  (goal >= 1.8x)")


def section_overhead(work: Path, n_items: int = 1000) -> None:
    print(f"\n## overhead: {n_items} trivial items  ({_load()})")
    tasks = list(range(n_items))
    for name, ex in (
        ("local pool (2)", TimedPool(2)),
        ("dask local:2", dask("local:2", work / "overhead", items=False)),
    ):
        with ex:
            got = sorted(t for t, _ in ex.run(noop, tasks))
        assert got == tasks
        print(
            f"{name:15s}: {1000 * ex.exec_s / n_items:.2f} ms per item "
            f"(execute {ex.exec_s:.2f} s, start-up {ex.start_s:.2f} s)"
        )
    print(f"({_load()})")


def section_default(work: Path, resolutions: list[int], n_images: int, repeats: int) -> None:
    """Local pool and local:2 alternately (pool, dask, pool, dask, …), each in a fresh run
    folder, so that a change in the machine's load hits both sides alike."""
    from bench.datasets import sample_dir
    from bench.methods import default_methods

    photos = work / "default-photos"
    photos.mkdir(parents=True, exist_ok=True)
    for p in sorted(sample_dir().glob("*.jpg"))[:n_images]:
        shutil.copy(p, photos / p.name)
    methods = default_methods()
    print(f"\n## default methods {' '.join(methods)} @ {resolutions}, {n_images} photos  ({_load()})")
    walls: dict[str, list[float]] = {"pool": [], "dask": []}
    for i in range(repeats):
        for name in ("pool", "dask"):
            run_dir = work / f"default-{name}-{i}"
            ex = TimedPool(2, threads_per_worker=1) if name == "pool" else dask("local:2", run_dir)
            r = bench_run(run_dir, ex, methods, resolutions, images=photos)
            walls[name].append(r["wall"])
            print(
                f"{'local pool (2)' if name == 'pool' else 'dask local:2':15s}: whole run {r['wall']:.1f} s, "
                f"execute {r['exec']:.1f} s, start-up {r['start']:.1f} s, {r['items']} items  ({_load()})"
            )
    pool, dsk = sum(walls["pool"]), sum(walls["dask"])
    print(f"dask / pool, whole runs summed over {repeats} rounds: {dsk / pool:.3f}")


def section_reuse(work: Path) -> None:
    print(f"\n## reuse: two-stage-slim, 12 items on local:2  ({_load()})")
    run_dir = work / "reuse"
    ex = dask("local:2", run_dir)
    loads: Counter = Counter()
    items: Counter = Counter()
    cfg = runner.RunConfig(
        out=str(run_dir),
        methods=["two-stage-slim"],
        resolutions=[1024, 1536],
        lpips=False,
        plots=False,
        device="cpu",
    )
    original = ex.run

    def counting_run(fn, tasks):
        for task, outcome in original(fn, tasks):
            items[outcome["worker"]] += 1
            loads[outcome["worker"]] += bool(outcome.get("method_loaded"))
            yield task, outcome

    ex.run = counting_run
    summary = runner.run(cfg, progress=False, executor=ex)
    for worker in sorted(items):
        print(f"worker {worker}: {items[worker]} items, method loaded {loads[worker]} time(s)")
    print(f"{summary.n_done} items, {sum(loads.values())} loads on {len(items)} workers")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--workdir", type=Path, help="folder for the run folders (default: a temporary one)")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[1024], help="default section: sizes")
    ap.add_argument("--images", type=int, default=6, help="default section: first N embedded photos")
    ap.add_argument("--repeats", type=int, default=2, help="default section: pool/dask rounds")
    ap.add_argument("--rounds", type=int, default=3, help="scaling section: rounds (median reported)")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.repeats < 1:
        ap.error(f"--repeats must be at least 1, got {args.repeats}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="hrbench-cluster-"))
    print(f"work folder {work}; {_load()}")
    try:
        if "scaling" in args.only:
            section_scaling(work, args.rounds)
        if "overhead" in args.only:
            section_overhead(work)
        if "default" in args.only:
            section_default(work, args.resolutions, args.images, args.repeats)
        if "reuse" in args.only:
            section_reuse(work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
