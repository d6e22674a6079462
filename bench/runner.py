"""The benchmark runner: method × resolution × image, resumable, parallel, recorded.

Layout of a run folder ``RUN``:

- ``data/``            prepared ground truths and masks + ``manifest.csv`` (see datasets.py)
- ``outputs/<method>/<N>/<image>.png``  each method's result (known region pasted back)
- ``records/<method>/<N>/<image>.json`` one record per finished item, written atomically
  (rename); the single source of truth. A rerun skips items whose record says ``ok``, so a
  run killed at any moment (even ``kill -9``) resumes without redoing finished work, and no
  CSV row can be torn or duplicated because the CSVs are regenerated from the records.
- ``items.csv``        method, resolution, image, status, output, runtime_s, peak_rss_mb, …
- ``metrics.csv``      tidy: method, resolution, image, metric, value
- ``methods/<method>.json`` metadata each method reported (weights, sha256, conventions)
- ``logs/``            full tracebacks of failed items
- ``run.json``         config, versions, device, seeds, method metadata, metric conventions

``runtime_s`` covers only the method call (the shared wrapper included), not file I/O or
scoring; ``peak_rss_mb`` is the worker's peak resident memory while the item ran.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import json
import logging
import multiprocessing as mp
import os
import platform
import re
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata as importlib_metadata
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from . import __version__
from .datasets import PrepareSpec, prepare, sample_dir
from .errors import MethodUnavailable, UserError
from .io import read_image, read_mask, write_image, write_json, write_text
from .memory import PeakRSS
from .methods import MethodContext, create, default_methods, unavailable_reason
from .protocol import DEFAULT_HOLE_FRACTION, PROTOCOL_RESOLUTIONS

log = logging.getLogger(__name__)

ITEM_COLUMNS = [
    "method",
    "resolution",
    "image",
    "status",
    "output",
    "runtime_s",
    "peak_rss_mb",
    "gpu_peak_mb",
    "changed_known",
    "error",
]
METRIC_COLUMNS = ["method", "resolution", "image", "metric", "value"]


@dataclass
class RunConfig:
    """Settings of one run; every field can come from the TOML config or the command line."""

    images: str | None = None  # folder of photos; None = the embedded sample set
    out: str = "results/sample-run"
    methods: list[str] = field(default_factory=list)  # empty = the default set
    resolutions: list[int] = field(default_factory=lambda: list(PROTOCOL_RESOLUTIONS))
    resize: str = "nearest"
    mask: str = "centre"
    hole_fraction: float = DEFAULT_HOLE_FRACTION
    metric_size: int | None = None
    jobs: int = 0  # worker processes; 0 = one per CPU core (at most 4)
    device: str = "auto"
    weights_dir: str | None = None
    seed: int = 0
    lpips: bool = True  # compute LPIPS when its weights are available locally
    save_outputs: bool = True

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> RunConfig:
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: config file not found")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: invalid TOML ({exc})") from None
        data = data.get("run", data)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"{path}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(names))}")
        return cls(**data).checked(str(path))

    def checked(self, where: str = "config") -> RunConfig:
        """Type-check fields a user can get wrong; return self."""
        if isinstance(self.methods, str):
            self.methods = [self.methods]
        try:
            self.resolutions = [int(n) for n in self.resolutions]
            self.jobs = int(self.jobs)
            self.seed = int(self.seed)
            self.hole_fraction = float(self.hole_fraction)
            self.metric_size = None if self.metric_size in (None, 0) else int(self.metric_size)
        except (TypeError, ValueError) as exc:
            raise UserError(
                f"{where}: bad value ({exc}); resolutions, jobs, seed, metric_size are integers"
            ) from None
        if self.jobs < 0:
            raise UserError(f"{where}: jobs must be >= 1 (or 0 for one per core), got {self.jobs}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UserError(f"{where}: device must be auto, cpu or cuda, got {self.device!r}")
        if self.metric_size is not None and self.metric_size < 16:
            raise UserError(f"{where}: metric_size must be at least 16 px, got {self.metric_size}")
        return self


def method_slug(name: str) -> str:
    """A file-name-safe form of a method name (``dfnet@512`` -> ``dfnet@512``, ``a:b/c`` -> ``a_b_c``)."""
    return re.sub(r"[^A-Za-z0-9@._+-]+", "_", name)


def resolve_device(device: str) -> str:
    if device != "auto":
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise UserError("--device cuda: no CUDA device is visible; use --device cpu or auto")
        return device
    try:
        import torch
    except ModuleNotFoundError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def _versions() -> dict:
    out = {"python": sys.version.split()[0], "hrbench": __version__, "platform": platform.platform()}
    for dist in ("numpy", "scipy", "scikit-image", "opencv-python-headless", "torch", "pillow", "lpips"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


# -- worker side --------------------------------------------------------------------------
_INSTANCES: dict[str, object] = {}


def _worker_init(threads: int) -> None:
    # Several workers on a small machine: keep each to its share of the cores.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _method(name: str, context: MethodContext, run_dir: Path):
    inst = _INSTANCES.get(name)
    if inst is None:
        inst = create(name, context)
        _INSTANCES[name] = inst
        write_json(run_dir / "methods" / f"{method_slug(name)}.json", inst.metadata())
    return inst


@functools.cache
def _lpips_metric(device: str):
    # Built once per worker; the driver only asks for LPIPS when its weights are present.
    from . import metrics

    return metrics.LPIPSMetric(device=device)


@dataclass
class Task:
    method: str
    resolution: int
    image: str
    gt: str
    mask: str
    run_dir: str
    context: MethodContext
    metric_size: int | None
    use_lpips: bool
    save_output: bool

    @property
    def record_path(self) -> Path:
        return (
            Path(self.run_dir)
            / "records"
            / method_slug(self.method)
            / str(self.resolution)
            / f"{self.image}.json"
        )

    @property
    def output_rel(self) -> str:
        return f"outputs/{method_slug(self.method)}/{self.resolution}/{self.image}.png"


def run_task(task: Task) -> dict:
    """Run one item in this process; write its output and record; return the record."""
    from . import metrics

    run_dir = Path(task.run_dir)
    rec = {
        "method": task.method,
        "resolution": task.resolution,
        "image": task.image,
        "status": "ok",
        "output": "",
        "runtime_s": None,
        "peak_rss_mb": None,
        "gpu_peak_mb": None,
        "changed_known": None,
        "error": "",
        "metrics": {},
    }
    try:
        gt = read_image(run_dir / "data" / task.gt)
        mask = read_mask(run_dir / "data" / task.mask, gt.shape[:2])
        inst = _method(task.method, task.context, run_dir)
        inst.set_item(task.image, task.resolution)
        gpu = task.context.device == "cuda" and getattr(inst, "uses_gpu", False)
        if gpu:
            import torch

            torch.cuda.reset_peak_memory_stats()
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            res = inst.run(gt, mask)
            if gpu:
                torch.cuda.synchronize()
            rec["runtime_s"] = round(time.perf_counter() - t0, 4)
        rec["peak_rss_mb"] = round(mem.peak_mb, 1)
        if gpu:
            rec["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        rec["changed_known"] = res.changed_known
        if task.save_output:
            write_image(run_dir / task.output_rel, res.image)
            rec["output"] = task.output_rel
        lp = _lpips_metric(task.context.device) if task.use_lpips else None
        rec["metrics"] = metrics.compute_metrics(res.image, gt, mask, metric_size=task.metric_size, lpips=lp)
    except Exception as exc:  # one failing item must not stop the run: record it
        rec["status"] = "failed"
        rec["error"] = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]
        log_path = run_dir / "logs" / f"{method_slug(task.method)}_{task.resolution}_{task.image}.txt"
        write_text(log_path, traceback.format_exc())
    write_json(task.record_path, rec)
    return rec


# -- driver side --------------------------------------------------------------------------
@dataclass
class RunSummary:
    run_dir: Path
    n_ok: int
    n_failed: int
    n_reused: int
    skipped_methods: dict[str, str]
    wall_s: float


def load_records(run_dir: Path) -> list[dict]:
    recs = []
    for p in sorted((Path(run_dir) / "records").glob("*/*/*.json")):
        try:
            recs.append(json.loads(p.read_text()))
        except json.JSONDecodeError:  # cannot happen with atomic writes; be safe anyway
            log.warning("ignoring unreadable record %s", p)
    return recs


def write_tables(run_dir: Path, records: list[dict]) -> None:
    """Regenerate items.csv and metrics.csv from the records (atomic writes)."""
    items = pd.DataFrame([{k: r.get(k) for k in ITEM_COLUMNS} for r in records], columns=ITEM_COLUMNS)
    rows = [
        {"method": r["method"], "resolution": r["resolution"], "image": r["image"], "metric": k, "value": v}
        for r in records
        if r["status"] == "ok"
        for k, v in r["metrics"].items()
    ]
    metrics_df = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    items = items.sort_values(["method", "resolution", "image"], kind="stable")
    metrics_df = metrics_df.sort_values(["method", "resolution", "image"], kind="stable")
    write_text(run_dir / "items.csv", items.to_csv(index=False))
    write_text(run_dir / "metrics.csv", metrics_df.to_csv(index=False, float_format="%.6g"))


def _write_run_json(
    run_dir: Path, cfg: RunConfig, device: str, skipped: dict, prep, lpips_note: str, wall_s: float | None
):
    from . import metrics

    meta = {}
    for p in sorted((run_dir / "methods").glob("*.json")):
        m = json.loads(p.read_text())
        meta[m.get("name", p.stem)] = m
    write_json(
        run_dir / "run.json",
        {
            "hrbench_version": __version__,
            "config": asdict(cfg),
            "device": device,
            "seed": cfg.seed,
            "versions": _versions(),
            "cpu_count": os.cpu_count(),
            "metric_conventions": metrics.METRIC_CONVENTIONS,
            "metric_size": cfg.metric_size,
            "lpips": lpips_note,
            "methods": meta,
            "method_order": [m for m in cfg.methods if m not in skipped],
            "skipped_methods": skipped,
            "skipped_images": prep.skipped,
            "wall_s": wall_s,
        },
    )


def run(cfg: RunConfig, progress: bool = True) -> RunSummary:
    """Run the benchmark described by ``cfg``; resume whatever an earlier run left."""
    cfg.checked()
    t_start = time.perf_counter()
    run_dir = Path(cfg.out)
    images = Path(cfg.images) if cfg.images else sample_dir()
    if not cfg.methods:
        cfg.methods = default_methods()
    device = resolve_device(cfg.device)
    jobs = cfg.jobs or min(os.cpu_count() or 1, 4)
    context = MethodContext(
        device=device, weights_dir=Path(cfg.weights_dir) if cfg.weights_dir else None, seed=cfg.seed
    )
    if cfg.weights_dir and not Path(cfg.weights_dir).is_dir():
        raise UserError(f"--weights-dir {cfg.weights_dir}: folder not found")

    skipped: dict[str, str] = {}
    for name in dict.fromkeys(cfg.methods):  # validates names before any work
        reason = unavailable_reason(name, context)
        if reason:
            skipped[name] = reason
    runnable = [m for m in dict.fromkeys(cfg.methods) if m not in skipped]
    if not runnable:
        first = next(iter(skipped))
        raise MethodUnavailable(f"method {first!r} unavailable: {skipped[first]}")
    for name, reason in skipped.items():
        log.warning("skipping %s: %s", name, reason)

    spec = PrepareSpec(tuple(cfg.resolutions), cfg.resize, cfg.mask, cfg.hole_fraction)
    prep = prepare(images, run_dir / "data", spec, progress=progress)

    lpips_note = "LPIPS disabled by configuration"
    if cfg.lpips:
        from . import metrics

        lpips_note = metrics.lpips_available() or "computed"
        if lpips_note != "computed":
            log.info("%s", lpips_note)
    use_lpips = lpips_note == "computed"
    _write_run_json(run_dir, cfg, device, skipped, prep, lpips_note, None)

    tasks, reused = [], 0
    manifest = prep.manifest.sort_values(["resolution", "image"])
    for name in runnable:
        for row in manifest.itertuples():
            task = Task(
                name,
                int(row.resolution),
                row.image,
                row.gt,
                row.mask,
                str(run_dir),
                context,
                cfg.metric_size,
                use_lpips,
                cfg.save_outputs,
            )
            if task.record_path.exists():
                try:
                    done = json.loads(task.record_path.read_text()).get("status") == "ok"
                except json.JSONDecodeError:
                    done = False
                if done:
                    reused += 1
                    continue
            tasks.append(task)
    if reused:
        log.info("resuming: %d items already done, %d to run", reused, len(tasks))

    n_ok = n_failed = 0
    bar = tqdm(total=len(tasks), desc="run", unit="item", disable=not progress, dynamic_ncols=True)
    try:
        if jobs == 1 or len(tasks) <= 1:
            for task in tasks:
                bar.set_postfix_str(f"{task.method} {task.resolution} {task.image[:20]}")
                rec = run_task(task)
                n_ok, n_failed = _tally(rec, n_ok, n_failed, bar)
        else:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            ctx = mp.get_context("spawn")  # forking after torch/OpenCV threads start is unsafe
            with cf.ProcessPoolExecutor(
                jobs, mp_context=ctx, initializer=_worker_init, initargs=(threads,)
            ) as pool:
                futures = [pool.submit(run_task, t) for t in tasks]
                for fut in cf.as_completed(futures):
                    n_ok, n_failed = _tally(fut.result(), n_ok, n_failed, bar)
    finally:
        bar.close()
        for inst in _INSTANCES.values():
            inst.close()
        _INSTANCES.clear()
        write_tables(run_dir, load_records(run_dir))
        _write_run_json(
            run_dir, cfg, device, skipped, prep, lpips_note, round(time.perf_counter() - t_start, 2)
        )
    return RunSummary(run_dir, n_ok, n_failed, reused, skipped, time.perf_counter() - t_start)


def _tally(rec: dict, n_ok: int, n_failed: int, bar) -> tuple[int, int]:
    bar.update(1)
    if rec["status"] == "ok":
        return n_ok + 1, n_failed
    log.warning("FAILED %s %s %s: %s", rec["method"], rec["resolution"], rec["image"], rec["error"])
    return n_ok, n_failed + 1
