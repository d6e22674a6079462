"""Charts for the Bradley–Terry analysis: ranking with CI whiskers, win matrix, planning curves.

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

from bench.io import atomic_path  # noqa: E402


def _save(fig, stem: Path, formats: Sequence[str]) -> list[Path]:
    out = []
    stem.parent.mkdir(parents=True, exist_ok=True)
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
        out.append(path)
    plt.close(fig)
    return out


def ranking_chart(table: pd.DataFrame, stem: Path, unit: str = "method",
                  title: str = "Bradley–Terry scores",
                  formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Bar chart of P(beat an average method), best first, with 95 % bootstrap whiskers.

    ``table`` is ``analysis.ranking_table``'s output (columns ``unit``, ``p_beat_avg``,
    ``p_ci_low``, ``p_ci_high``, ``n_votes``). The paper's figures 5–6 showed bars without
    uncertainty; the whiskers are the participant-bootstrap interval.
    """
    t = table.sort_values("p_beat_avg", ascending=False)
    n = len(t)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * n + 1.5), 3.8))
    x = np.arange(n)
    y = t["p_beat_avg"].to_numpy()
    err = np.vstack([y - t["p_ci_low"].to_numpy(), t["p_ci_high"].to_numpy() - y])
    ax.bar(x, y, color="#4C72B0", width=0.65, zorder=2)
    ax.errorbar(x, y, yerr=err, fmt="none", ecolor="black", capsize=4, lw=1.2, zorder=3)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--", zorder=1)
    ax.set_xticks(x)
    ax.set_xticklabels(t[unit].astype(str), rotation=30 if n > 5 else 0, ha="right"
                       if n > 5 else "center")
    for xi, (hi, nv) in enumerate(zip(t["p_ci_high"], t["n_votes"], strict=True)):
        ax.text(xi, min(hi + 0.02, 1.0), f"n={nv:g}", ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("P(beats an average method)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    return _save(fig, stem, formats)


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
    return _save(fig, stem, formats)


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
    return _save(fig, stem, formats)
