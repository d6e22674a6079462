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
from .io import literal_text, read_image, read_mask, save_figure  # noqa: E402
from .masks import hole_bbox  # noqa: E402
from .metrics import fmt, hole_crop, label  # noqa: E402
from .report import load_run, method_order, summarize  # noqa: E402

log = logging.getLogger(__name__)
MARKERS = "osD^v<>pPX*h"
# Metrics shown (when the run has them): in the metric-vs-resolution figure and in the captions
# of the qualitative panels.
QUALITATIVE_METRICS = ("l1", "psnr", "ssim", "lpips", "cvvdp", "flip")
QUALITATIVE_CROP = 512  # px, the largest side of a 1:1 panel


@literal_text()
def plot_metrics(df: pd.DataFrame, info: dict, out: Path, metrics=("l1", "psnr", "ssim")) -> list[Path]:
    s = summarize(df[df.metric.isin(metrics)])
    methods = method_order(s, info)
    ncol = min(3, len(metrics))
    nrow = -(-len(metrics) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 3.0 * nrow), squeeze=False)
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat[: len(metrics)], metrics, strict=True):
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
        ax.set_title(f"{label(metric, arrow=True)} (mean, 95 % CI over images)", fontsize=9)
        ax.set_xlabel("resolution (px)")
        ax.set_xticks(sorted(s.resolution.unique()))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return save_figure(fig, out / "metrics_vs_resolution")


@literal_text()
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


def _panel_caption(values: dict[str, float]) -> str:
    """Two lines of "LABEL value" in registry order and format, e.g. "L1 2.41  PSNR 28.03"."""
    parts = [f"{label(m)} {fmt(m, v)}" for m, v in values.items() if m in QUALITATIVE_METRICS]
    half = (len(parts) + 1) // 2
    return "  ".join(parts[:half]) + "\n" + "  ".join(parts[half:])


@literal_text()
def plot_qualitative(
    run_dir: Path,
    items: pd.DataFrame,
    df: pd.DataFrame,
    info: dict,
    out: Path,
    image: str | None = None,
    resolution: int | None = None,
    crop: int = QUALITATIVE_CROP,
) -> list[Path]:
    """Ground truth, input and every method as true 1:1 crops, each with its metric values.

    The crop is the perceptual metrics' ``hole`` region (``bench.metrics.hole_crop``); when it
    is larger than ``crop`` px a side, a ``crop``-px window on the hole's top-left corner
    (a quarter of it known pixels, so the seam shows). Pixels are placed unresampled
    (``figimage``; the PNG is written at the figure's own dpi, not cropped), so one image
    pixel is one pixel of the PNG. Panel captions give the item's values from metrics.csv.
    """
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
    values = df[(df.image == image) & (df.resolution == resolution)]
    methods = method_order(ok, info)
    panels = [("ground truth", gt, ""), ("input (hole white)", masked, "")]
    for m in methods:
        vals = values[values.method == m].set_index("metric")["value"].to_dict()
        vals = {k: vals[k] for k in QUALITATIVE_METRICS if k in vals}
        panels.append((m, read_image(run_dir / ok[ok.method == m].output.iloc[0]), _panel_caption(vals)))

    rows, cols = hole_crop(mask)
    h, w = min(rows.stop - rows.start, crop), min(cols.stop - cols.start, crop)
    if (h, w) == (rows.stop - rows.start, cols.stop - cols.start):
        top, left = rows.start, cols.start  # the whole scored crop fits
    else:
        # Too large: the hole's top-left corner, with known pixels in the panel's top and left
        # quarter, so the seam shows beside the fill (a centred window would be all fill).
        t, lft = hole_bbox(mask)[:2]
        top = max(0, min(t - h // 4, gt.shape[0] - h))
        left = max(0, min(lft - w // 4, gt.shape[1] - w))
    box = np.s_[top : top + h, left : left + w]

    gap, text_h, dpi = 8, 46, 100  # px; captions at 7 pt fit three lines in text_h
    ncol = min(4, len(panels))
    nrow = -(-len(panels) // ncol)
    head = 24
    fig_w, fig_h = ncol * w + (ncol + 1) * gap, head + nrow * (h + text_h + gap)
    fig = plt.figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi)
    for k, (title, img, caption) in enumerate(panels):
        r, c = divmod(k, ncol)
        x = gap + c * (w + gap)
        y_top = head + r * (h + text_h + gap) + text_h  # top edge of the image, from the top
        fig.figimage(img[box], xo=x, yo=fig_h - y_top - h, origin="upper")
        fig.text(x / fig_w, 1 - (y_top - 2) / fig_h, f"{title}\n{caption}".rstrip(), fontsize=7,
                 va="bottom", ha="left", family="monospace")
    fig.text(gap / fig_w, 1 - 4 / fig_h,
             f"{image} at {resolution} px: 1:1 crop rows {top}-{top + h}, columns {left}-{left + w} "
             f"(hole {hole_bbox(mask)[2] - hole_bbox(mask)[0]} px)", fontsize=8, va="top", ha="left")
    return save_figure(fig, out / f"qualitative_{resolution}", dpi=dpi, tight=False)


def check_selection(items: pd.DataFrame, image: str | None, resolution: int | None) -> int | None:
    """Refuse a ``--resolution``/``--image`` for which the run has no saved output.

    Returns the resolution of the qualitative figure: the one given, else for a given image
    the largest size it has outputs at (a small photo is absent from the largest sizes).
    """
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
    if image is not None and resolution is None:
        return int(ok[ok.image == image].resolution.max())
    return resolution


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
    resolution = check_selection(items, image, resolution)  # before any figure is written
    shown = [m for m in QUALITATIVE_METRICS if m in set(df.metric)]
    paths = plot_metrics(df, info, out, shown)
    paths += plot_runtime(items, info, out)
    paths += plot_qualitative(run_dir, items, df, info, out, image, resolution)
    return paths
