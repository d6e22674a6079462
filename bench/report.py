"""Tables from a run's ``metrics.csv`` in the layout of the paper's Table 1.

Methods are rows; for each resolution there are L1 (↓), PSNR (↑) and SSIM (↑) columns (the
metric list is configurable). Cells are means over images; the best mean of each column is
bold; ``n`` (images averaged) is shown in the header when every method has the same count,
and in the cell otherwise. With ``ci=True`` cells read ``mean ± h`` where ``h`` is the
half-width of the 95 % Student-t interval of the mean over images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .errors import UserError
from .metrics import fmt, higher_is_better, label, spec
from .tables import FORMATS, Cell, Table, render

TABLE_METRICS = ("l1", "psnr", "ssim")
METRIC_PROTOCOL = (
    "L1: mean absolute error on 0–255 over all pixels and channels; PSNR: data range 255; "
    "SSIM: Gaussian window σ = 1.5, K1 = 0.01, K2 = 0.03, population covariance, per channel "
    "then averaged (= scikit-image)"
)
METRIC_NOTE = METRIC_PROTOCOL + "; full conventions in run.json."
CI_NOTE = "± is the half-width of the 95 % Student-t interval of the mean over images."


def load_run(run_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """metrics.csv and run.json of a run folder, with clear errors."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run folder not found; give the --out folder of `hrbench run`")
    path = run_dir / "metrics.csv"
    if not path.exists():
        raise UserError(
            f"{path}: missing; this folder has no finished run (rerun `hrbench run --out {run_dir}`)"
        )
    df = pd.read_csv(path)
    if df.empty:  # a run stopped before any item with its settings finished, or all failed
        raise UserError(
            f"{path}: no finished item yet; see items.csv and logs/, and rerun the same "
            "`hrbench run` to finish it"
        )
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    return df, info


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per method × resolution × metric: mean, std, n, and the 95 % t-interval of the mean."""
    g = df.groupby(["method", "resolution", "metric"], sort=False)["value"]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    t = stats.t.ppf(0.975, np.maximum(out["n"] - 1, 1))
    half = np.where(out["n"] > 1, t * out["std"] / np.sqrt(out["n"]), np.nan)
    out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    out["ci_half"] = half
    return out


def method_order(df: pd.DataFrame, info: dict) -> list[str]:
    """Methods present in ``df`` (any table with a ``method`` column) in the run's order."""
    present = list(dict.fromkeys(df["method"]))
    order = [m for m in info.get("method_order", []) if m in present]
    return order + [m for m in present if m not in order]


def _perceptual_note(metrics, info: dict) -> str | None:
    """How the shown perceptual metrics were computed: region and display model (run.json)."""
    conv = info.get("metric_conventions") or {}
    shown = [m for m in metrics if m in conv and spec(m).region == "selectable"]
    if not shown:
        return None
    region = (conv.get("region") or {}).get("value", "full")
    where = (
        "on a crop around the hole (its box grown by a quarter of its side each way)"
        if region == "hole"
        else "on the whole image"
    )
    text = "; ".join(spec(m).summary for m in shown) + f"; computed {where}"
    display = next((conv[m]["display"] for m in shown if "display" in conv[m]), None)
    if display:
        text += f", display model: {display['summary']}"
    return text + "."


def build_table(
    df: pd.DataFrame, info: dict | None = None, metrics=TABLE_METRICS, ci: bool = False
) -> Table:
    """Table 1 of a run: methods × (resolution × metric) means, best of each column bold.

    ``notes`` (Markdown) include practical remarks such as why a method was skipped; the
    LaTeX ``caption`` states the protocol only.
    """
    info = info or {}
    s = summarize(df[df["metric"].isin(metrics)])
    if s.empty:
        raise UserError("no metric values to tabulate; did every item fail? see items.csv")
    methods = method_order(s, info)
    resolutions = sorted(s["resolution"].unique())
    cell = {(r.method, r.resolution, r.metric): r for r in s.itertuples()}
    max_n = s.groupby("resolution")["n"].max().to_dict()
    uniform_n = {n: s[s.resolution == n]["n"].nunique() == 1 for n in resolutions}
    best = {}
    for n in resolutions:
        for m in metrics:
            vals = [(cell[(meth, n, m)].mean, meth) for meth in methods if (meth, n, m) in cell]
            vals = [v for v in vals if np.isfinite(v[0])]
            if vals:
                best[(n, m)] = (max if higher_is_better(m) else min)(vals)[1]
    all_uniform = all(uniform_n.values()) and len(set(max_n.values())) == 1
    header = [
        (
            f"{n}" + (f" (n={max_n[n]})" if uniform_n[n] and not all_uniform else ""),
            [label(m, arrow=True) for m in metrics],
        )
        for n in resolutions
    ]
    body = []
    for meth in methods:
        row = []
        for n in resolutions:
            for m in metrics:
                c = cell.get((meth, n, m))
                if c is None:
                    row.append(Cell("–"))
                    continue
                text = fmt(m, c.mean)
                if ci and np.isfinite(c.ci_half):
                    text += f" ± {fmt(m, c.ci_half)}"
                if not uniform_n[n]:
                    text += f" (n={c.n})"
                row.append(Cell(text, best.get((n, m)) == meth))
        body.append([meth, *row])
    notes = []
    if all_uniform:
        notes.append(f"Every cell is the mean over n = {next(iter(max_n.values()))} images.")
    for name, reason in (info.get("skipped_methods") or {}).items():
        notes.append(f"{name}: skipped — {reason}")
    if info.get("metric_conventions"):
        notes.append(METRIC_NOTE)
        if _perceptual_note(metrics, info):
            notes.append(_perceptual_note(metrics, info))
    if info.get("metric_size"):
        notes.append(_metric_size_note(info["metric_size"]))
    if ci:
        notes.append(CI_NOTE)
    columns = ["Method"] + [m for _, ms in header for m in ms]
    groups = [(res, len(ms)) for res, ms in header]
    caption = protocol_caption(info, next(iter(max_n.values())) if all_uniform else None, ci)
    perceptual = _perceptual_note(metrics, info)
    if perceptual:
        caption += " " + perceptual
    return Table(columns, body, groups, notes, caption, label="tab:hrbench")


def protocol_caption(info: dict, n_images: int | None, ci: bool) -> str:
    """What a paper's caption must say about how the numbers were made, from run.json.

    ``n_images``: the image count of every cell, or None when cells differ (then each shows n).
    """
    cfg = info.get("config") or {}
    parts = []
    if n_images:
        parts.append(f"Mean over {n_images} images per cell; best of each column in bold.")
    else:
        parts.append("Mean over the images given in each cell (n); best of each column in bold.")
    resize = {"nearest": "nearest-neighbour", "area": "area"}.get(cfg.get("resize"), None)
    if resize:
        parts.append(
            f"Each photo is centre-cropped to a square and reduced to N×N pixels ({resize} resampling)."
        )
    if cfg.get("mask") == "centre" and cfg.get("hole_fraction"):
        frac = cfg["hole_fraction"]
        side = "N/3" if abs(frac - 1 / 3) < 1e-9 else f"{frac:g} N"
        parts.append(f"Centred square hole of side {side}.")
    elif cfg.get("mask"):
        parts.append("Holes from user-supplied mask files.")
    parts.append(METRIC_PROTOCOL + ".")
    if info.get("metric_size"):
        parts.append(_metric_size_note(info["metric_size"]))
    if ci:
        parts.append(CI_NOTE)
    return " ".join(parts)


def _metric_size_note(size: int) -> str:
    return f"Scored after nearest-neighbour downsampling to {size} px."


def render_csv(df: pd.DataFrame, metrics=TABLE_METRICS) -> str:
    s = summarize(df[df["metric"].isin(metrics)])
    columns = ["method", "resolution", "metric", "mean", "ci_low", "ci_high", "n"]
    return render(Table.from_frame(s[columns]), "csv")


def table(run_dir: str | Path, fmt: str = "md", metrics=None, ci: bool = False) -> str:
    """The run's table as text in ``fmt`` (md, csv or latex).

    ``metrics`` None: those of TABLE_METRICS the run computed (a run with ``--metrics l1 psnr``
    shows those two), or every metric it has when it computed none of them.
    """
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    df, info = load_run(run_dir)
    if metrics is None:
        present = list(dict.fromkeys(df["metric"]))
        metrics = tuple(m for m in TABLE_METRICS if m in present) or tuple(present)
    unknown = sorted(set(metrics) - set(df["metric"].unique()))
    if unknown:
        raise UserError(
            f"--metrics: {unknown[0]!r} not in this run; it has {', '.join(sorted(df.metric.unique()))}"
        )
    if fmt == "csv":
        return render_csv(df, metrics)
    return render(build_table(df, info, metrics, ci), fmt)
