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
from .protocol import TABLE_FORMATS as FORMATS

TABLE_METRICS = ("l1", "psnr", "ssim")
LOWER_IS_BETTER = {"l1", "hole_l1", "lpips"}
LABELS = {
    "l1": "L1",
    "psnr": "PSNR",
    "ssim": "SSIM",
    "hole_l1": "hole L1",
    "hole_psnr": "hole PSNR",
    "lpips": "LPIPS",
}
METRIC_NOTE = (
    "L1: mean absolute error on 0–255 over all pixels and channels; PSNR: data range 255; "
    "SSIM: Gaussian window σ = 1.5, K1 = 0.01, K2 = 0.03, population covariance, per channel "
    "then averaged (= scikit-image); full conventions in run.json."
)
DIGITS = {"l1": 3, "psnr": 3, "ssim": 3, "hole_l1": 2, "hole_psnr": 2, "lpips": 4}


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


def _fmt(x: float, metric: str) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{DIGITS.get(metric, 3)}f}"


def build_table(df: pd.DataFrame, info: dict | None = None, metrics=TABLE_METRICS, ci: bool = False):
    """Return (header rows, body rows, notes) as plain strings with ``bold`` flags.

    Body cells are (text, is_best) pairs; the renderers add the markup.
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
                best[(n, m)] = (min if m in LOWER_IS_BETTER else max)(vals)[1]
    all_uniform = all(uniform_n.values()) and len(set(max_n.values())) == 1
    header = [
        (
            f"{n}" + (f" (n={max_n[n]})" if uniform_n[n] and not all_uniform else ""),
            [LABELS.get(m, m) + (" ↓" if m in LOWER_IS_BETTER else " ↑") for m in metrics],
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
                    row.append(("–", False))
                    continue
                text = _fmt(c.mean, m)
                if ci and np.isfinite(c.ci_half):
                    text += f" ± {_fmt(c.ci_half, m)}"
                if not uniform_n[n]:
                    text += f" (n={c.n})"
                row.append((text, best.get((n, m)) == meth))
        body.append((meth, row))
    notes = []
    if all_uniform:
        notes.append(f"Every cell is the mean over n = {next(iter(max_n.values()))} images.")
    for name, reason in (info.get("skipped_methods") or {}).items():
        notes.append(f"{name}: skipped — {reason}")
    if info.get("metric_conventions"):
        notes.append(METRIC_NOTE)
    if info.get("metric_size"):
        notes.append(f"Scored after nearest-neighbour downsampling to {info['metric_size']} px.")
    if ci:
        notes.append("± is the half-width of the 95 % Student-t interval of the mean over images.")
    return header, body, notes


def render_markdown(header, body, notes) -> str:
    cols = ["Method"] + [f"{res} {m}" for res, ms in header for m in ms]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for meth, row in body:
        cells = [f"**{t}**" if b else t for t, b in row]
        lines.append("| " + " | ".join([meth, *cells]) + " |")
    if notes:
        lines.append("")
        lines.extend(f"- {n}" for n in notes)
    return "\n".join(lines) + "\n"


def _latex_escape(s: str) -> str:
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
        ("±", r"$\pm$"),
        ("↓", r"$\downarrow$"),
        ("↑", r"$\uparrow$"),
        ("–", "--"),
        ("—", "---"),
    ):
        s = s.replace(a, b)
    return s


def render_latex(header, body, notes) -> str:
    k = len(header[0][1]) if header else 0
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\begin{tabular}{l" + ("|" + "c" * k) * len(header) + "}",
        r"\hline",
    ]
    lines.append(
        " & " + " & ".join(rf"\multicolumn{{{k}}}{{c}}{{{_latex_escape(res)}}}" for res, _ in header) + r" \\"
    )
    lines.append("Method & " + " & ".join(_latex_escape(m) for _, ms in header for m in ms) + r" \\ \hline")
    for meth, row in body:
        cells = [rf"\textbf{{{_latex_escape(t)}}}" if b else _latex_escape(t) for t, b in row]
        lines.append(_latex_escape(meth) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    if notes:
        lines.append(r"\caption{" + _latex_escape(" ".join(notes)) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def render_csv(df: pd.DataFrame, metrics=TABLE_METRICS) -> str:
    s = summarize(df[df["metric"].isin(metrics)])
    return s[["method", "resolution", "metric", "mean", "ci_low", "ci_high", "n"]].to_csv(
        index=False, float_format="%.6g"
    )


def table(run_dir: str | Path, fmt: str = "md", metrics=TABLE_METRICS, ci: bool = False) -> str:
    """The run's table as text in ``fmt`` (md, csv or latex)."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    df, info = load_run(run_dir)
    unknown = sorted(set(metrics) - set(df["metric"].unique()))
    if unknown:
        raise UserError(
            f"--metrics: {unknown[0]!r} not in this run; it has {', '.join(sorted(df.metric.unique()))}"
        )
    if fmt == "csv":
        return render_csv(df, metrics)
    header, body, notes = build_table(df, info, metrics, ci)
    return render_markdown(header, body, notes) if fmt == "md" else render_latex(header, body, notes)
