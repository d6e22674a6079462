"""Figures of a run: metric vs resolution, runtime vs resolution, a qualitative comparison.

Each figure is written as PNG (150 dpi) and PDF, sized for a paper column or page.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .errors import UserError  # noqa: E402
from .io import read_image, read_mask, save_figure  # noqa: E402
from .masks import hole_bbox  # noqa: E402
from .report import LABELS, LOWER_IS_BETTER, load_run, method_order, summarize  # noqa: E402

log = logging.getLogger(__name__)
MARKERS = "osD^v<>pPX*h"


def plot_metrics(df: pd.DataFrame, info: dict, out: Path, metrics=("l1", "psnr", "ssim")) -> list[Path]:
    s = summarize(df[df.metric.isin(metrics)])
    methods = method_order(s, info)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.0), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, meth in enumerate(methods):
            d = s[(s.method == meth) & (s.metric == metric)].sort_values("resolution")
            if d.empty:
                continue
            dodge = (i - (len(methods) - 1) / 2) * 12  # px, so overlapping whiskers stay readable
            ax.errorbar(
                d.resolution + dodge,
                d["mean"],
                yerr=np.nan_to_num(d.ci_half),
                marker=MARKERS[i % len(MARKERS)],
                capsize=2,
                label=meth,
                lw=1.2,
                ms=4,
            )
        arrow = "↓" if metric in LOWER_IS_BETTER else "↑"
        ax.set_title(f"{LABELS.get(metric, metric)} {arrow} (mean, 95 % CI over images)", fontsize=9)
        ax.set_xlabel("resolution (px)")
        ax.set_xticks(sorted(s.resolution.unique()))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return save_figure(fig, out / "metrics_vs_resolution")


def plot_runtime(items: pd.DataFrame, info: dict, out: Path) -> list[Path]:
    ok = items[items.status == "ok"]
    if ok.empty:
        return []
    g = ok.groupby(["method", "resolution"])["runtime_s"].median().reset_index()
    methods = method_order(g, info)
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    for i, meth in enumerate(methods):
        d = g[g.method == meth].sort_values("resolution")
        ax.plot(d.resolution, d.runtime_s, marker=MARKERS[i % len(MARKERS)], label=meth, lw=1.2, ms=4)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(sorted(g.resolution.unique()))
    ax.set_xlabel("resolution (px)")
    ax.set_ylabel("median time per image (s)")
    device = info.get("device", "?")
    ax.set_title(f"Runtime ({device}, {info.get('cpu_count', '?')} CPU cores)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return save_figure(fig, out / "runtime_vs_resolution")


def plot_qualitative(
    run_dir: Path,
    items: pd.DataFrame,
    info: dict,
    out: Path,
    image: str | None = None,
    resolution: int | None = None,
    margin: float = 0.25,
) -> list[Path]:
    """Ground truth, input and every method: full view on top, zoom on the hole below."""
    ok = items[(items.status == "ok") & items.output.notna() & (items.output != "")]
    if ok.empty:
        return []
    resolution = int(resolution or ok.resolution.max())
    ok = ok[ok.resolution == resolution]
    image = image or sorted(ok.image.unique())[0]
    ok = ok[ok.image == image]
    if ok.empty:
        raise UserError(f"no outputs for image {image!r} at {resolution} px in {run_dir}")
    manifest = pd.read_csv(run_dir / "data" / "manifest.csv")
    row = manifest[(manifest.image == image) & (manifest.resolution == resolution)].iloc[0]
    gt = read_image(run_dir / "data" / row["gt"])
    mask = read_mask(run_dir / "data" / row["mask"])
    masked = gt.copy()
    masked[mask] = 255
    methods = method_order(ok, info)
    panels = [("ground truth", gt), ("input", masked)]
    panels += [(m, read_image(run_dir / ok[ok.method == m].output.iloc[0])) for m in methods]
    t, left, b, r = hole_bbox(mask)
    pad = int(margin * max(b - t, r - left))
    t, left = max(t - pad, 0), max(left - pad, 0)
    b, r = min(b + pad, mask.shape[0]), min(r + pad, mask.shape[1])
    fig, axes = plt.subplots(2, len(panels), figsize=(2.0 * len(panels), 4.2), squeeze=False)
    for j, (title, img) in enumerate(panels):
        axes[0][j].imshow(img)
        axes[0][j].add_patch(plt.Rectangle((left, t), r - left, b - t, fill=False, ec="yellow", lw=0.8))
        axes[1][j].imshow(img[t:b, left:r], interpolation="nearest")
        axes[0][j].set_title(title, fontsize=8)
        for ax in (axes[0][j], axes[1][j]):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{image} at {resolution} px (bottom: zoom on the hole)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out / f"qualitative_{resolution}")


def check_selection(items: pd.DataFrame, image: str | None, resolution: int | None) -> None:
    """Refuse a ``--resolution``/``--image`` for which the run has no saved output."""
    ok = items[(items.status == "ok") & items.output.notna() & (items.output != "")]
    if resolution is not None:
        sizes = sorted(int(n) for n in ok.resolution.unique())
        if int(resolution) not in sizes:
            have = ", ".join(map(str, sizes)) or "none (run without --no-outputs)"
            raise UserError(f"--resolution {resolution}: the run has no outputs at that size; it has {have}")
        ok = ok[ok.resolution == int(resolution)]
    if image is not None and image not in set(ok.image):
        where = f" at {resolution} px" if resolution is not None else ""
        have = ", ".join(sorted(ok.image.unique())) or "none"
        raise UserError(f"--image {image}: the run has no outputs for it{where}; images: {have}")


def plot_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    image: str | None = None,
    resolution: int | None = None,
) -> list[Path]:
    """All figures of a run into ``out`` (default RUN/plots); returns the files written."""
    run_dir = Path(run_dir)
    df, info = load_run(run_dir)
    out = Path(out) if out else run_dir / "plots"
    if not (run_dir / "items.csv").exists():
        raise UserError(f"{run_dir / 'items.csv'}: missing; rerun `hrbench run --out {run_dir}` to finish it")
    items = pd.read_csv(run_dir / "items.csv")
    check_selection(items, image, resolution)  # before any figure is written
    paths = plot_metrics(df, info, out)
    paths += plot_runtime(items, info, out)
    paths += plot_qualitative(run_dir, items, info, out, image, resolution)
    return paths
