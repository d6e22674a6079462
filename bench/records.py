"""THE run-folder format: paths, fingerprints, atomic item records, CSVs and run.json.

Layout of a run folder ``RUN``:

- ``data/``            prepared ground truths and masks + ``manifest.csv`` (see datasets.py)
- ``outputs/<method>/<N>/<image>.png``  each method's result (known region pasted back)
- ``records/<method>/<N>/<image>.json`` one record per finished item, written atomically by
  the runner (never by a worker): the single source of truth for every number. A record
  holds the item's results, the ``settings`` they were computed with and their
  ``fingerprint`` (sha256 of the canonical JSON of ``settings``).
- ``items.csv``        method, resolution, image, status, output, runtime_s, peak_rss_mb, …,
                       fingerprint
- ``metrics.csv``      tidy: method, resolution, image, metric, value
- ``methods/<method>.json`` metadata each method reported (weights, sha256, conventions)
- ``logs/``            full tracebacks of failed items
- ``run.json``         config, versions, device, seeds, method metadata, metric conventions,
                       and ``settings``: what every item's fingerprint is computed from
- ``table.md``, ``plots/``  written from the CSVs at the end of a run

An item's settings are :func:`item_settings` of ``run.json``'s ``settings`` and the item's
row of ``data/manifest.csv``; both CSVs are regenerated from the records of the current run
only, and a record is only reused when its fingerprint equals the one planned from
``run.json``. So no row of ``metrics.csv`` can come from settings other than those in
``run.json`` (:func:`verify` checks it).

``runtime_s`` covers only the method call (the shared wrapper included), not file I/O or
scoring; ``peak_rss_mb`` is the worker's peak resident memory while the item ran.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .io import write_json, write_text

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # of item records; records of another version are redone
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
    "fingerprint",
]
METRIC_COLUMNS = ["method", "resolution", "image", "metric", "value"]


# -- paths ---------------------------------------------------------------------------------------
def method_slug(name: str) -> str:
    """A file-name-safe form of a method name (``dfnet@512`` -> ``dfnet@512``, ``a:b/c`` -> ``a_b_c``)."""
    return re.sub(r"[^A-Za-z0-9@._+-]+", "_", name)


def record_dir(run_dir: Path, method: str, resolution: int) -> Path:
    return Path(run_dir) / "records" / method_slug(method) / str(resolution)


def record_path(run_dir: Path, method: str, resolution: int, image: str) -> Path:
    return record_dir(run_dir, method, resolution) / f"{image}.json"


def record_paths(run_dir: Path) -> list[Path]:
    """Every item record in the folder, of any method, resolution or image; not the temporary
    files an interrupted atomic write may leave beside them (their names start with a dot)."""
    return [p for p in (Path(run_dir) / "records").glob("*/*/*.json") if not p.name.startswith(".")]


def output_rel(method: str, resolution: int, image: str) -> str:
    """Where an item's output image goes, relative to the run folder."""
    return f"outputs/{method_slug(method)}/{resolution}/{image}.png"


def log_path(run_dir: Path, method: str, resolution: int, image: str) -> Path:
    return Path(run_dir) / "logs" / f"{method_slug(method)}_{resolution}_{image}.txt"


def method_meta_path(run_dir: Path, method: str) -> Path:
    return Path(run_dir) / "methods" / f"{method_slug(method)}.json"


# -- fingerprints --------------------------------------------------------------------------------
def canonical_json(obj: object) -> str:
    """One text per value: sorted keys, no spaces, floats as repr; NaN/inf are refused."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def fingerprint(settings: dict) -> str:
    return hashlib.sha256(canonical_json(settings).encode("utf-8")).hexdigest()


def item_settings(run_settings: dict, method: str, resolution: int, gt_sha256: str, mask_sha256: str) -> dict:
    """Everything one item's numbers depend on, from run.json's ``settings`` and the manifest.

    The order of the keys is the order in which :func:`difference` names a changed setting.
    """
    return {
        "format": FORMAT_VERSION,
        "protocol": {"resolution": int(resolution), **run_settings["protocol"]},
        "inputs": {"gt_sha256": gt_sha256, "mask_sha256": mask_sha256},
        "metrics": run_settings["metrics"],
        "method": run_settings["methods"][method],
    }


def _flatten(obj: object, prefix: str = "") -> dict[str, object]:
    if isinstance(obj, dict):
        out: dict[str, object] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    return {prefix: obj}


_ABSENT = object()


def _show(value: object) -> str:
    if value is _ABSENT:
        return "absent"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = "none" if value is None else str(value)
    return text if len(text) <= 24 else text[:12] + "…"


def difference(old: dict | None, new: dict) -> str | None:
    """The first setting that differs, as ``"protocol.hole_fraction 0.333333 -> 0.25"``.

    ``None`` when they are equal. A setting missing on one side reads as ``absent``.
    """
    if old == new:
        return None
    if not isinstance(old, dict):
        return "no settings in the old record"
    a, b = _flatten(old), _flatten(new)
    for key in [*b, *(k for k in a if k not in b)]:
        va, vb = a.get(key, _ABSENT), b.get(key, _ABSENT)
        if va != vb and not (isinstance(va, float) and isinstance(vb, float) and math.isclose(va, vb)):
            if isinstance(va, str) and isinstance(vb, str) and len(va) == len(vb) == 64:
                return f"{key} changed"  # a sha256: the digits mean nothing to a reader
            return f"{key} {_show(va)} -> {_show(vb)}"
    return "settings changed"  # equal up to float rounding in the text form


# -- records -------------------------------------------------------------------------------------
def write_record(run_dir: Path, rec: dict) -> Path:
    """Write one item record atomically (a reader or a crash never sees half a record)."""
    path = record_path(run_dir, rec["method"], rec["resolution"], rec["image"])
    write_json(path, rec)
    return path


def read_record(path: Path) -> dict | None:
    """The record at ``path``, or None if there is none or it cannot be read."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("ignoring unreadable record %s (%s)", path, exc)
        return None


def reuse_decision(
    rec: dict | None, settings: dict, fp: str, run_dir: Path, want_output: bool
) -> tuple[str, str | None]:
    """``("new", None)``, ``("reuse", None)`` or ``("redo", why)`` for a planned item."""
    if rec is None:
        return "new", None
    if rec.get("fingerprint") != fp:
        return "redo", difference(rec.get("settings"), settings) or "fingerprint differs"
    if rec.get("status") != "ok":
        return "redo", "failed before"
    if want_output and not (rec.get("output") and (Path(run_dir) / rec["output"]).is_file()):
        return "redo", "output image missing"
    return "reuse", None


# -- tables --------------------------------------------------------------------------------------
def write_tables(run_dir: Path, records: Iterable[dict]) -> None:
    """Regenerate ``items.csv`` and ``metrics.csv`` from ``records`` (atomic writes)."""
    records = list(records)
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
    write_text(Path(run_dir) / "items.csv", items.to_csv(index=False))
    write_text(Path(run_dir) / "metrics.csv", metrics_df.to_csv(index=False, float_format="%.6g"))


def write_method_meta(run_dir: Path, method: str, meta: dict) -> None:
    write_json(method_meta_path(run_dir, method), meta)


def read_method_meta(run_dir: Path, methods: Iterable[str]) -> dict[str, dict]:
    """``methods/<method>.json`` of the given methods that have one."""
    out = {}
    for m in methods:
        path = method_meta_path(run_dir, m)
        if path.is_file():
            out[m] = json.loads(path.read_text(encoding="utf-8"))
    return out


def write_run_json(run_dir: Path, info: dict) -> None:
    """``run.json``; ``info["settings"]`` must be what the items' fingerprints came from."""
    write_json(Path(run_dir) / "run.json", info)


def verify(run_dir: Path) -> list[str]:
    """Problems that make ``metrics.csv``/``items.csv`` disagree with ``run.json``; [] if none.

    Recomputes every item's fingerprint from run.json's ``settings`` and the manifest and
    compares it with ``items.csv``, and checks every metrics row belongs to such an item.
    """
    run_dir = Path(run_dir)
    settings = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["settings"]
    manifest = pd.read_csv(run_dir / "data" / "manifest.csv").set_index(["image", "resolution"])
    items = pd.read_csv(run_dir / "items.csv", keep_default_na=False)
    problems, ok = [], set()
    for row in items.itertuples():
        key = (row.method, int(row.resolution), str(row.image))
        try:
            m = manifest.loc[(str(row.image), int(row.resolution))]
            expected = fingerprint(item_settings(settings, *key[:2], m.gt_sha256, m.mask_sha256))
        except KeyError as exc:
            problems.append(f"{key}: not in run.json settings or the manifest ({exc})")
            continue
        if row.fingerprint != expected:
            problems.append(f"{key}: fingerprint {row.fingerprint[:12]} is not run.json's {expected[:12]}")
        elif row.status == "ok":
            ok.add(key)
    metrics = pd.read_csv(run_dir / "metrics.csv")
    for key in {(r.method, int(r.resolution), str(r.image)) for r in metrics.itertuples()} - ok:
        problems.append(f"{key}: in metrics.csv but not a verified item of items.csv")
    return problems
