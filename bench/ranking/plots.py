"""Charts for the ranking analysis: ranking with CI whiskers, win matrix, planning curves,
vote-level agreement with the metrics, and each metric against the crowd's score.

All functions take tidy tables / arrays, write the figure to the given paths (PNG and PDF when
asked) with the non-interactive Agg backend, and return the paths written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.io import literal_text, save_figure  # noqa: E402


@literal_text()
def ranking_chart(table: pd.DataFrame, stem: Path, unit: str = "method",
                  title: str | None = None, formats: Sequence[str] = ("png", "pdf"),
                  scale: str = "bt") -> list[Path]:
    """Ranking, best first, with 95 % participant-bootstrap whiskers.

    ``table`` is ``fit.ranking_table``'s output. ``scale='bt'``: bars of P(beat an average
    method) (the paper's figures 5–6 showed such bars without uncertainty); ``scale='jod'``:
    JOD scores (1 JOD = 75 % preference) as points around 0. Missing (zero-width)
    intervals draw no whisker.
    """
    col, lo, hi = (("p_beat_avg", "p_ci_low", "p_ci_high") if scale == "bt"
                   else ("jod", "jod_low", "jod_high"))
    t = table.sort_values(col, ascending=False)
    n = len(t)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * n + 1.5), 3.8))
    x = np.arange(n)
    y = t[col].to_numpy(dtype=float)
    err = np.nan_to_num(np.vstack([y - t[lo].to_numpy(dtype=float),
                                   t[hi].to_numpy(dtype=float) - y]))
    if scale == "bt":
        ax.bar(x, y, color="#4C72B0", width=0.65, zorder=2)
        ax.axhline(0.5, color="grey", lw=0.8, ls="--", zorder=1)
        ax.set_ylim(0, 1.08)
        ax.set_ylabel("P(beats an average method)")
        top = np.fmin(np.nan_to_num(t[hi].to_numpy(dtype=float), nan=y), 1.0)
    else:
        ax.plot(x, y, "o", color="#4C72B0", ms=7, zorder=3)
        ax.axhline(0.0, color="grey", lw=0.8, ls="--", zorder=1)
        ax.set_ylabel("quality (JOD, 1 JOD = 75 % preference)")
        top = np.nan_to_num(t[hi].to_numpy(dtype=float), nan=y)
    ax.errorbar(x, y, yerr=err, fmt="none", ecolor="black", capsize=4, lw=1.2, zorder=3)
    ax.set_xticks(x)
    ax.set_xticklabels(t[unit].astype(str), rotation=30 if n > 5 else 0, ha="right"
                       if n > 5 else "center")
    span = max(float(np.nanmax(top) - np.nanmin(y)), 1e-6)
    for xi, (tp, nv) in enumerate(zip(top, t["n_votes"], strict=True)):
        ax.text(xi, tp + 0.02 * span, f"n={nv:g}", ha="center", va="bottom", fontsize=7)
    ax.margins(y=0.12)
    ax.set_title(title or ("Bradley–Terry scores" if scale == "bt" else "Thurstone scaling"))
    ax.grid(axis="y", alpha=0.3, zorder=0)
    return save_figure(fig, stem, formats)


@literal_text()
def win_heatmap(items: Sequence[str], wins: np.ndarray, stem: Path,
                formats: Sequence[str] = ("png",)) -> list[Path]:
    """Heatmap of the share of votes the row item won against the column item.

    Cells are annotated ``share`` and ``(n votes)``; pairs never compared are blank.
    """
    wins = np.asarray(wins, dtype=np.float64)
    n = wins + wins.T
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(n > 0, wins / n, np.nan)
    k = len(items)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * k, 0.8 + 0.7 * k))
    im = ax.imshow(np.ma.masked_invalid(share), cmap="RdBu", vmin=0, vmax=1)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(items, rotation=45, ha="right")
    ax.set_yticklabels(items)
    if k <= 15:
        for i in range(k):
            for j in range(k):
                if n[i, j] > 0:
                    ax.text(j, i, f"{share[i, j]:.2f}\n({n[i, j]:g})", ha="center",
                            va="center", fontsize=7,
                            color="white" if abs(share[i, j] - 0.5) > 0.3 else "black")
    ax.set_xlabel("against")
    ax.set_ylabel("winner")
    fig.colorbar(im, ax=ax, label="share of votes won")
    ax.set_title("Win matrix")
    return save_figure(fig, stem, formats)


@literal_text()
def planning_plot(summary: pd.DataFrame, stem: Path,
                  formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Recovery and separation probabilities against the number of participants.

    ``summary`` is ``simulate.simulate_grid``'s per-N table: ``participants``,
    ``p_order``, ``p_all_adjacent``, and ``p_sep_<a>_<b>`` per adjacent pair.
    """
    s = summary.sort_values("participants")
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    x = s["participants"].to_numpy()
    ax.plot(x, s["p_order"], "o-", lw=2, label="true order recovered")
    ax.plot(x, s["p_all_adjacent"], "s-", lw=2, label="every adjacent pair separated (95 %)")
    for col in [c for c in s.columns if c.startswith("p_sep_")]:
        ax.plot(x, s[col], ":", lw=1, label=f"{col[6:].replace('__', ' > ')} separated")
    ax.axhline(0.8, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("participants (before exclusions)")
    ax.set_ylabel("probability over simulated studies")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("How many people does the study need?")
    return save_figure(fig, stem, formats)


def _metric_labels(name: str) -> str:
    """Display form of a predictor name: registered metrics by their labels ("hole L1 = L1")."""
    from bench.metrics.registry import METRICS, label

    return " = ".join(label(n) if n in METRICS else n for n in name.split(" = "))


@literal_text()
def agreement_chart(agree: pd.DataFrame, stem: Path,
                    formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """2AFC agreement with people per metric group (and the BT model), with 95 % whiskers;
    the human ceiling as a shaded band and chance (0.5) as a dashed line.

    ``agree`` is ``agreement.vote_agreement``'s table.
    """
    rows = agree[agree["kind"].isin(["metric", "model"])].sort_values("agreement")
    ceiling = agree[agree["kind"] == "ceiling"]
    n = len(rows)
    fig, ax = plt.subplots(figsize=(6.0, 0.45 * n + 1.4))
    y = np.arange(n)
    a = rows["agreement"].to_numpy(dtype=float)
    err = np.nan_to_num(np.vstack([a - rows["agreement_low"].to_numpy(dtype=float),
                                   rows["agreement_high"].to_numpy(dtype=float) - a]))
    colours = np.where(rows["kind"] == "model", "#DD8452", "#4C72B0")
    ax.barh(y, a - 0.5, left=0.5, color=colours, height=0.6, zorder=2)
    ax.errorbar(a, y, xerr=err, fmt="none", ecolor="black", capsize=3, lw=1.0, zorder=3)
    if len(ceiling) and not np.isnan(ceiling["agreement"].iloc[0]):
        c = ceiling.iloc[0]
        lo = c["agreement_low"] if not np.isnan(c["agreement_low"]) else c["agreement"]
        hi = c["agreement_high"] if not np.isnan(c["agreement_high"]) else c["agreement"]
        ax.axvspan(lo, hi, color="#55A868", alpha=0.25, zorder=1)
        ax.axvline(c["agreement"], color="#55A868", lw=1.5, zorder=1,
                   label=f"human ceiling {c['agreement']:.3f}")
        ax.legend(fontsize=7, loc="lower right")
    ax.axvline(0.5, color="grey", lw=0.8, ls="--", zorder=1)
    ax.set_yticks(y)
    ax.set_yticklabels([_metric_labels(n) for n in rows["name"].astype(str)])
    ax.set_xlabel("2AFC agreement with people (ties count half)")
    ax.set_xlim(0.45, 1.0)
    ax.grid(axis="x", alpha=0.3, zorder=0)
    ax.set_title("Which metric agrees with people?")
    return save_figure(fig, stem, formats)


@literal_text()
def metric_scatter(means: pd.DataFrame, table: pd.DataFrame, stem: Path, scale: str = "bt",
                   formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """One panel per metric: each method's mean metric value (x) against the crowd's score
    (y, with 95 % whiskers), points labelled with the method, and in the title Kendall tau
    between the crowd and the metric oriented so that + means the same order as people.

    ``means``: ``method, metric, value`` (per-method means over the study's images);
    ``table``: ``fit.ranking_table``'s output (method level).
    """
    from bench.metrics.registry import higher_is_better, label

    from .bt import kendall_tau_b

    col, lo, hi = ("score", "ci_low", "ci_high") if scale == "bt" else ("jod", "jod_low",
                                                                        "jod_high")
    crowd = table.set_index("method")
    metrics = sorted(means["metric"].unique())
    ncol = min(3, len(metrics))
    nrow = -(-len(metrics) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol, 3.0 * nrow), squeeze=False)
    for ax, metric in zip(axes.ravel(), metrics, strict=False):
        m = means[(means["metric"] == metric) & means["method"].isin(crowd.index)]
        x = m["value"].to_numpy(dtype=float)
        c = crowd.loc[m["method"]]
        y = c[col].to_numpy(dtype=float)
        err = np.nan_to_num(np.vstack([y - c[lo].to_numpy(dtype=float),
                                       c[hi].to_numpy(dtype=float) - y]))
        ax.errorbar(x, y, yerr=err, fmt="o", color="#4C72B0", ecolor="grey", capsize=3, ms=5)
        for xi, yi, name in zip(x, y, m["method"], strict=True):
            ax.annotate(str(name), (xi, yi), xytext=(3, 3), textcoords="offset points",
                        fontsize=7)
        sign = 1.0 if higher_is_better(metric) else -1.0
        tau = kendall_tau_b(sign * x, y) if len(x) >= 3 else np.nan
        ax.set_title(f"{label(metric, arrow=True)}  (τ = {float(tau):.2f})"
                     if np.isfinite(tau) else label(metric, arrow=True), fontsize=9)
        ax.set_xlabel(f"mean {label(metric)}", fontsize=8)
        ax.set_ylabel("crowd: BT log-strength" if scale == "bt" else "crowd: JOD", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(metrics):]:
        ax.set_visible(False)
    fig.tight_layout()
    return save_figure(fig, stem, formats)
