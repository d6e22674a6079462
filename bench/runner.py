"""The benchmark runner: plan -> execute -> record, resumable and parallel.

1. **Plan** (this process): prepare the ground truths and masks, compute every item's
   settings and fingerprint (``bench.records``) and compare them with the item's existing
   record: reuse it when the fingerprint matches, redo it (saying which setting differed)
   when not, or stop with ``redo=False``.
2. **Execute**: an executor (``bench.executors``: inline, local processes, or a cluster) runs
   :func:`run_task` for each item to do; a worker writes the output image and returns the
   numbers.
3. **Record** (this process only): each result becomes an atomic item record as it arrives,
   so a run killed at any moment (even ``kill -9``) resumes without redoing finished work;
   at the end the CSVs, run.json, table.md and plots/ are regenerated from the records.

The run folder's layout is documented in ``bench.records``.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import sys
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata as importlib_metadata
from pathlib import Path

from tqdm import tqdm

from . import __version__, records
from .cli_args import split_values
from .datasets import PrepareSpec, prepare, sample_dir
from .devices import DEVICES, resolve_device
from .errors import MethodUnavailable, UserError
from .executors import Executor, TaskFailed, local_executor
from .io import display_path, read_image, read_mask, write_image, write_text
from .memory import PeakRSS
from .methods import MethodContext, create, default_methods, identity, unavailable_reason
from .protocol import DEFAULT_HOLE_FRACTION, PROTOCOL_RESOLUTIONS

log = logging.getLogger(__name__)


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
    metrics: list[str] = field(default_factory=list)  # empty = the default set (bench.metrics)
    metric_region: str = "hole"  # pixels the perceptual metrics see: full | hole (crop)
    display: str = "standard_fhd"  # display model of cvvdp and flip (bench.metrics.display)
    save_outputs: bool = True
    plots: bool = True  # write plots/ at the end of the run
    cluster: str | None = None  # Dask: tcp://HOST:PORT, local:N or slurm (bench.cluster)
    cluster_table: dict = field(default_factory=dict)  # the TOML file's [cluster] table (SLURM)

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
        # [cluster] (a table) holds the SLURM settings; `cluster = "ADDRESS"` is a run key.
        table = data.pop("cluster") if isinstance(data.get("cluster"), dict) else {}
        data = data.get("run", data)
        names = {f.name for f in fields(cls)} - {"cluster_table"}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"{path}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(names))}")
        return cls(**data, cluster_table=table).checked(str(path))

    def checked(self, where: str | None = None) -> RunConfig:
        """Type-check fields a user can get wrong; return self.

        ``where``: the config file the values came from, named in errors; None = the command
        line (errors name the flag).
        """

        def name(key: str) -> str:
            return f"{where}: {key}" if where else "--" + key.replace("_", "-")

        # a config file may give one value, or comma-separated ones, where a list is expected
        for key in ("methods", "metrics", "resolutions"):
            value = getattr(self, key)
            if isinstance(value, (str, int, float)):
                value = [value]
            if isinstance(value, (list, tuple)):
                setattr(self, key, split_values(value))
        try:
            self.resolutions = list(dict.fromkeys(int(n) for n in self.resolutions))
        except (TypeError, ValueError):
            raise UserError(
                f"{name('resolutions')}: {self.resolutions!r} are not whole numbers; "
                "give sizes such as [1024, 2048]"
            ) from None
        for key, kind in (("jobs", int), ("seed", int), ("hole_fraction", float), ("metric_size", int)):
            value = getattr(self, key)
            if key == "metric_size" and value in (None, 0):
                self.metric_size = None
                continue
            try:
                setattr(self, key, kind(value))
            except (TypeError, ValueError):
                raise UserError(
                    f"{name(key)}: {value!r} is not a {'whole ' if kind is int else ''}number"
                ) from None
        if self.jobs < 0:
            raise UserError(f"{name('jobs')} must be >= 1 (or 0 for one per core), got {self.jobs}")
        if self.device not in DEVICES:
            raise UserError(f"{name('device')} must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.metric_size is not None and self.metric_size < 16:
            raise UserError(f"{name('metric_size')} must be at least 16 px, got {self.metric_size}")
        if self.metric_size is not None and self.resolutions and self.metric_size > min(self.resolutions):
            raise UserError(
                f"{name('metric_size')} {self.metric_size} is larger than the resolution "
                f"{min(self.resolutions)}; scores are taken at most at the test size, never upsampled"
            )
        from .metrics import check_region, parse_display

        check_region(self.metric_region)
        parse_display(self.display)
        if self.cluster or self.cluster_table:
            from .cluster import parse_address, slurm_settings

            if self.cluster_table or parse_address(self.cluster).kind == "slurm":
                slurm_settings(self.cluster_table, where or "--config")
            if self.cluster:
                parse_address(self.cluster)
        return self


def _versions() -> dict:
    out = {"python": sys.version.split()[0], "hrbench": __version__, "platform": platform.platform()}
    dists = ("numpy", "scipy", "scikit-image", "opencv-python-headless", "torch", "pillow", "lpips")
    for dist in (*dists, "cvvdp", "flip-evaluator"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


# -- worker side --------------------------------------------------------------------------
@dataclass
class Task:
    """One item: picklable, self-contained (absolute paths), run by :func:`run_task`."""

    method: str
    method_key: str  # fingerprint of the method's identity: workers cache instances by it
    resolution: int
    image: str
    gt: str  # absolute paths
    mask: str
    output: str | None  # absolute path of the output image, None = do not save
    context: MethodContext
    metric_names: tuple[str, ...]
    metric_region: str
    display: str
    metric_size: int | None


_INSTANCES: dict[str, object] = {}


def _method(task: Task) -> tuple[object, bool]:
    """The task's method from this process's cache, and whether it was loaded just now."""
    inst = _INSTANCES.get(task.method_key)
    if inst is not None:
        return inst, False
    inst = create(task.method, task.context)
    _INSTANCES[task.method_key] = inst
    return inst, True


@functools.cache
def _metadata(method_key: str) -> dict:
    return _INSTANCES[method_key].metadata()


def close_methods() -> None:
    """Free the methods this process loaded (inline runs; pool workers just exit)."""
    for inst in _INSTANCES.values():
        inst.close()
    _INSTANCES.clear()
    _metadata.cache_clear()


def warm_worker(methods: tuple[str, ...], context: MethodContext, metric_names: tuple[str, ...],
                display: str | None) -> None:
    """On a worker before its first item: import the methods' code and build the run's
    model-based metrics (importing torch and cvvdp alone takes seconds). Best effort: an
    error here shows again, with its item, when an item needs the same thing."""
    from . import metrics

    try:
        for name in methods:
            unavailable_reason(name, context)  # resolving the name imports its module
        metrics.prepare_metrics(metric_names, display, _metric_device(context.device))
    except Exception as exc:
        log.debug("warming this worker failed: %s", exc)


def _metric_device(device: str) -> str:
    """Where this process computes model-based metrics: the run's device, except ``cpu`` on
    a cluster worker without CUDA (a classical method's item may land there in a
    ``--device cuda`` run; its metrics must not need the GPU it was not sent to)."""
    if device != "cuda":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_task(task: Task) -> dict:
    """Run one item in this process: write its output image, return its numbers.

    Never raises for a failing item: the result says ``status: failed`` with the error and
    traceback, so one bad item cannot stop a run.
    """
    from . import metrics

    res = {
        "status": "ok",
        "runtime_s": None,
        "peak_rss_mb": None,
        "gpu_peak_mb": None,
        "changed_known": None,
        "metrics": {},
        "error": "",
        "traceback": "",
        "method_meta": None,
        "method_loaded": False,  # this item loaded the method (cluster benchmark counts loads)
    }
    try:
        gt = read_image(task.gt)
        mask = read_mask(task.mask, gt.shape[:2])
        inst, res["method_loaded"] = _method(task)
        res["method_meta"] = _metadata(task.method_key)
        inst.set_item(task.image, task.resolution)
        gpu = task.context.device == "cuda" and getattr(inst, "uses_gpu", False)
        if gpu:
            import torch

            torch.cuda.reset_peak_memory_stats()
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            out = inst.run(gt, mask)
            if gpu:
                torch.cuda.synchronize()
            res["runtime_s"] = round(time.perf_counter() - t0, 4)
        res["peak_rss_mb"] = round(mem.peak_mb, 1)
        if gpu:
            res["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        res["changed_known"] = out.changed_known
        if task.output:
            write_image(task.output, out.image)
        # Metric objects (LPIPS, cvvdp) are built on first use and kept: once per worker.
        res["metrics"] = metrics.compute_metrics(
            out.image,
            gt,
            mask,
            task.metric_names,
            region=task.metric_region,
            metric_size=task.metric_size,
            display=task.display,
            device=_metric_device(task.context.device),
        )
    except Exception as exc:
        res["status"] = "failed"
        res["error"] = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]
        res["traceback"] = traceback.format_exc()
    return res


# -- client side: plan ----------------------------------------------------------------------
@dataclass
class PlannedItem:
    task: Task
    settings: dict
    fingerprint: str
    action: str  # "new", "redo" or "reuse"
    why: str | None  # for "redo": the first setting that differed, or "failed before", …
    settings_changed: bool  # the existing record has another fingerprint


@dataclass
class RunSummary:
    run_dir: Path
    n_done: int  # computed now, no earlier record
    n_reused: int
    n_redone: int  # computed again: the earlier record's settings differed, or it failed
    n_failed: int  # of those computed now
    redo_reasons: dict[str, int]  # why -> number of items
    skipped_methods: dict[str, str]
    unreadable_images: list[dict]  # image, reason: photos that could not be read, skipped
    wall_s: float
    table_md: Path | None = None  # written when some item has numbers
    plots: list[Path] = field(default_factory=list)

    def counts_line(self) -> str:
        """ "n done, n reused, n redone (why)" — the run's one-line account."""
        why = "; ".join(
            f"{n} × {r}" if len(self.redo_reasons) > 1 else r for r, n in self.redo_reasons.items()
        )
        line = f"{self.n_done} done, {self.n_reused} reused, {self.n_redone} redone"
        line += f" ({why})" if why else ""
        return line + (f", {self.n_failed} failed" if self.n_failed else "")


def _metric_settings(cfg: RunConfig, names: tuple[str, ...]) -> dict:
    """The metric set and its conventions (from the metric registry): one place for both."""
    from . import metrics

    return {
        "names": list(names),
        "conventions": metrics.metric_conventions(names, cfg.metric_region, cfg.display, cfg.metric_size),
    }


def _protocol_settings(cfg: RunConfig) -> dict:
    centre = cfg.mask == "centre"
    out = {"resize": cfg.resize, "mask": "centre" if centre else "files"}
    if centre:  # with mask files, the mask's sha256 (per item) is the whole story
        out["hole_fraction"] = cfg.hole_fraction
    out.update(seed=cfg.seed, metric_size=cfg.metric_size)
    return out


def _stale_before_prepare(run_dir: Path, settings: dict, planned: list[tuple[str, int]]) -> str | None:
    """With ``redo=False``: the first setting (protocol, metrics, method) that differs from an
    existing record of a planned method x resolution, checked before ``prepare`` rewrites data/.
    """
    for method, n in planned:
        for path in sorted(records.record_dir(run_dir, method, n).glob("*.json")):
            rec = records.read_record(path)
            if rec is None or not isinstance(rec.get("settings"), dict):
                continue
            old = {k: v for k, v in rec["settings"].items() if k != "inputs"}
            new = records.item_settings(settings, method, n, "", "")
            new.pop("inputs")
            why = records.difference(old, new)
            if why:
                return f"{method} at {n} px: {why}"
    return None


def run(
    cfg: RunConfig, progress: bool = True, redo: bool = True, executor: Executor | None = None
) -> RunSummary:
    """Run the benchmark described by ``cfg``; reuse what an earlier run left when it is valid.

    ``redo=False``: stop with a ``UserError`` naming the first differing setting instead of
    redoing items computed with other settings. ``executor``: where the items run (default:
    ``cfg.jobs`` local processes). Ctrl-C stops within seconds; finished items are kept.
    """
    from . import metrics

    cfg.checked()
    t_start = time.perf_counter()
    run_dir = Path(cfg.out)
    images = Path(cfg.images) if cfg.images else sample_dir()
    if not cfg.methods:
        cfg.methods = default_methods()
    if cfg.weights_dir and not Path(cfg.weights_dir).is_dir():
        raise UserError(f"--weights-dir {cfg.weights_dir}: folder not found")
    # On a cluster the GPUs are the workers' (the probe checks them), not this machine's.
    device = "cuda" if cfg.cluster and cfg.device == "cuda" else resolve_device(cfg.device)
    context = MethodContext(
        device=device, weights_dir=Path(cfg.weights_dir) if cfg.weights_dir else None, seed=cfg.seed
    )

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

    metric_names, metrics_left_out = metrics.resolve_metrics(cfg.metrics, cfg.lpips)
    for reason in metrics_left_out.values():
        log.info("%s", reason)
    settings = {
        "protocol": _protocol_settings(cfg),
        "metrics": _metric_settings(cfg, metric_names),
        "methods": {m: identity(m, context) for m in runnable},
    }
    if not redo:
        planned = [(m, int(n)) for m in runnable for n in cfg.resolutions]
        why = _stale_before_prepare(run_dir, settings, planned)
        if why:
            raise UserError(_no_redo_message(run_dir, why))

    if cfg.cluster and executor is None:
        from .cluster import check_reachable, parse_address

        check_reachable(parse_address(cfg.cluster))  # before data/ and run.json are written
    spec = PrepareSpec(tuple(cfg.resolutions), cfg.resize, cfg.mask, cfg.hole_fraction)
    prep = prepare(images, run_dir / "data", spec, progress=progress)
    unreadable = [s for s in prep.skipped if s.get("resolution") is None]

    plan = _plan(run_dir, cfg, runnable, settings, prep.manifest, context, metric_names)
    stale = [p for p in plan if p.action == "redo"]
    changed = [p for p in stale if p.settings_changed]  # retrying failed items is no change
    if changed and not redo:
        first = changed[0]
        raise UserError(
            _no_redo_message(
                run_dir, f"{first.task.method} at {first.task.resolution} px, {first.task.image}: {first.why}"
            )
        )
    todo = [p for p in plan if p.action != "reuse"]
    n_reused = len(plan) - len(todo)
    planned = {records.record_path(run_dir, *_item_key(p.task)) for p in plan}
    others = sum(path not in planned for path in records.record_paths(run_dir))
    if others:
        log.info(
            "%d earlier items in %s (other methods, resolutions or images) are kept but left out "
            "of this run's tables; name them in --methods/--resolutions to include them",
            others,
            display_path(run_dir),
        )
    if n_reused:
        log.info("resuming: %d items already done, %d to run", n_reused, len(todo))

    info = {
        "hrbench_version": __version__,
        "config": asdict(cfg),
        "device": device,
        "seed": cfg.seed,
        "versions": _versions(),
        "cpu_count": os.cpu_count(),
        "metrics": list(metric_names),
        "metrics_left_out": metrics_left_out,
        "metric_conventions": settings["metrics"]["conventions"],
        "metric_size": cfg.metric_size,
        "method_order": runnable,
        "skipped_methods": skipped,
        "skipped_images": prep.skipped,
        "unreadable_images": unreadable,
        "settings": settings,
        "status": "running",
    }
    # From here run.json names this run's settings: the CSVs and table.md must hold only
    # items computed with them, also if this run is then killed (-9) before its end.
    (run_dir / "table.md").unlink(missing_ok=True)
    current = _current_records(run_dir, plan)
    records.write_tables(run_dir, current)
    records.write_run_json(run_dir, {**info, "methods": records.read_method_meta(run_dir, runnable)})
    if any(r["status"] == "ok" for r in current):
        from .report import table

        write_text(run_dir / "table.md", table(run_dir, "md"))

    counts = Counter()
    reasons = Counter(p.why for p in stale)
    by_item = {_item_key(p.task): p for p in todo}  # executors may hand back copies of tasks
    meta_written: set[str] = set()
    executor = executor or make_executor(cfg, run_dir, device, len(todo))
    bar = tqdm(total=len(todo), desc="run", unit="item", disable=not (progress and todo), dynamic_ncols=True)
    status = "interrupted"
    try:
        with executor:
            info["executor"] = executor.describe()
            if info["executor"].get("dashboard"):
                log.info("Dask dashboard: %s", info["executor"]["dashboard"])
            warm = functools.partial(warm_worker, tuple(runnable), context, metric_names, cfg.display)
            executor.prepare(warm)
            for task, outcome in executor.run(run_task, [p.task for p in todo]):
                rec = _record(run_dir, by_item[_item_key(task)], outcome, meta_written)
                counts[rec["status"]] += 1
                bar.update(1)
                # the item, and the executor's state (a cluster's workers busy/idle) if any
                postfix = [f"{task.method} {task.resolution} {task.image[:20]}", executor.status()]
                bar.set_postfix_str("; ".join(filter(None, postfix)))
        status = "finished"
    finally:
        bar.close()
        close_methods()
        wall = round(time.perf_counter() - t_start, 2)
        records.write_tables(run_dir, _current_records(run_dir, plan))
        info.update(status=status, wall_s=wall, methods=records.read_method_meta(run_dir, runnable))
        records.write_run_json(run_dir, info)

    n_new = sum(p.action == "new" for p in todo)
    summary = RunSummary(
        run_dir=run_dir,
        n_done=n_new,
        n_reused=n_reused,
        n_redone=len(todo) - n_new,
        n_failed=counts["failed"],
        redo_reasons=dict(reasons.most_common()),
        skipped_methods=skipped,
        unreadable_images=unreadable,
        wall_s=time.perf_counter() - t_start,
    )
    if counts["ok"] + n_reused:
        _write_report(run_dir, cfg, summary, redraw=bool(todo))
    return summary


def make_executor(cfg: RunConfig, run_dir: Path, device: str, n_tasks: int) -> Executor:
    """Where this run's items go: a Dask cluster (``cfg.cluster``), else ``cfg.jobs`` local
    processes (or this one, for one job)."""
    if not (cfg.cluster and n_tasks):
        return local_executor(cfg.jobs or min(os.cpu_count() or 1, 4), n_tasks)
    from .cluster import DaskExecutor, parse_address

    @functools.cache
    def on_gpu(method: str, context: MethodContext) -> bool:
        return identity(method, context)["device"] == "cuda"

    return DaskExecutor(
        parse_address(cfg.cluster),
        run_dir,
        device=device,
        slurm=cfg.cluster_table,
        group=lambda task: task.method_key,  # workers keep one loaded model per identity
        needs_gpu=lambda task: on_gpu(task.method, task.context),
        release=close_methods,
    )


def _item_key(task: Task) -> tuple[str, int, str]:
    return task.method, task.resolution, task.image


def _no_redo_message(run_dir: Path, why: str) -> str:
    return (
        f"--no-redo: {display_path(run_dir)} holds results computed with other settings ({why}); "
        "rerun without --no-redo to redo them, or choose another --out"
    )


def _plan(run_dir, cfg, runnable, settings, manifest, context, metric_names) -> list[PlannedItem]:
    plan = []
    data = (run_dir / "data").absolute()
    manifest = manifest.sort_values(["resolution", "image"])
    for name in runnable:
        key = records.fingerprint(settings["methods"][name])
        for row in manifest.itertuples():
            n, image = int(row.resolution), str(row.image)
            item = records.item_settings(settings, name, n, row.gt_sha256, row.mask_sha256)
            fp = records.fingerprint(item)
            out_rel = records.output_rel(name, n, image)
            task = Task(
                name,
                key,
                n,
                image,
                str(data / row.gt),
                str(data / row.mask),
                str(run_dir.absolute() / out_rel) if cfg.save_outputs else None,
                context,
                tuple(metric_names),
                cfg.metric_region,
                cfg.display,
                cfg.metric_size,
            )
            old = records.read_record(records.record_path(run_dir, name, n, image))
            action, why = records.reuse_decision(old, item, fp, run_dir, cfg.save_outputs)
            changed = old is not None and old.get("fingerprint") != fp
            plan.append(PlannedItem(task, item, fp, action, why, changed))
    return plan


def _current_records(run_dir: Path, plan: list[PlannedItem]) -> list[dict]:
    """Only this run's items, with this run's fingerprints, make the tables."""
    current = []
    for p in plan:
        rec = records.read_record(records.record_path(run_dir, *_item_key(p.task)))
        if rec is not None and rec.get("fingerprint") == p.fingerprint:
            current.append(rec)
    return current


def _record(run_dir: Path, item: PlannedItem, outcome: dict | TaskFailed, meta_written: set[str]) -> dict:
    """Turn a worker's outcome into the item's record and write it (client side only)."""
    if isinstance(outcome, TaskFailed):
        outcome = {"status": "failed", "error": outcome.error, "traceback": outcome.detail}
    t = item.task
    rec = {
        "method": t.method,
        "resolution": t.resolution,
        "image": t.image,
        "status": outcome["status"],
        "output": records.output_rel(t.method, t.resolution, t.image)
        if t.output and outcome["status"] == "ok"
        else "",
        **{k: outcome.get(k) for k in ("runtime_s", "peak_rss_mb", "gpu_peak_mb", "changed_known")},
        "error": outcome.get("error", ""),
        "metrics": outcome.get("metrics") or {},
        "fingerprint": item.fingerprint,
        "settings": item.settings,
    }
    if rec["status"] != "ok":
        log.warning("FAILED %s %s %s: %s", t.method, t.resolution, t.image, rec["error"])
        write_text(records.log_path(run_dir, t.method, t.resolution, t.image), outcome.get("traceback") or "")
    if outcome.get("method_meta") and t.method not in meta_written:  # once per method and run
        records.write_method_meta(run_dir, t.method, outcome["method_meta"])
        meta_written.add(t.method)
    records.write_record(run_dir, rec)
    return rec


def _plots_current(run_dir: Path) -> list[Path]:
    """The figures in plots/ if each has its PNG and PDF and all are newer than every item
    record, else []."""
    png, pdf = (sorted((run_dir / "plots").glob(f"*.{ext}")) for ext in ("png", "pdf"))
    plots = png + pdf
    if not png or [p.stem for p in png] != [p.stem for p in pdf]:
        return []
    newest_record = max((p.stat().st_mtime for p in records.record_paths(run_dir)), default=0.0)
    return plots if min(p.stat().st_mtime for p in plots) > newest_record else []


def _write_report(run_dir: Path, cfg: RunConfig, summary: RunSummary, redraw: bool) -> None:
    """table.md and plots/ from the CSVs just written. A run that computed nothing keeps
    figures drawn after the last record was written (drawing them costs seconds)."""
    from .report import table

    summary.table_md = run_dir / "table.md"
    write_text(summary.table_md, table(run_dir, "md"))
    if cfg.plots:
        summary.plots = [] if redraw else _plots_current(run_dir)
        if not summary.plots:
            from .plots import plot_run

            summary.plots = plot_run(run_dir)
