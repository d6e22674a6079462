"""Scoring one output: which metrics a run computes, on which pixels, with which settings.

- ``resolve_metrics``: the run's metric list (the default set, or the user's selection) and,
  for default metrics that cannot run here, why they were left out.
- ``hole_crop``: the crop the ``hole`` region scores: the hole's bounding box grown by
  ``HOLE_MARGIN`` of its longer side (at least ``HOLE_MIN_MARGIN`` px) on every side,
  clipped to the image. With the protocol's centre hole (side N/3) that is a centred
  N/2 x N/2 crop: 512 px at 1024, 1024 px at 2048 (the seam and a band of context).
- ``compute_metrics``: the values for one output; heavy metric objects (networks, cvvdp's
  model) are built on first use and kept for the life of the process, i.e. once per worker.
- ``metric_conventions``: everything the numbers depend on, for run.json and fingerprints.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from typing import Any

import numpy as np

from bench.errors import UserError
from bench.masks import hole_bbox
from bench.resize import resize_nearest

from . import pixel
from .display import parse_display
from .lpips_metric import LPIPSMetric, backbone_file, lpips_available
from .perceptual import CvvdpMetric, FlipMetric, package_version
from .registry import CORE_METRICS, METRICS, REGIONS, spec

HOLE_MARGIN = 0.25
HOLE_MIN_MARGIN = 32
# The default run: Table 1 metrics, their hole-only forms, LPIPS where its weights are cached,
# and cvvdp on the hole crop. Measured (benchmarks/metric_cost.py, CPU time, 2 cores): cvvdp
# and flip together made the default run 1.52x as costly as the protocol metrics alone, over
# the 1.5x budget; cvvdp alone stays well under it. flip is one `--metrics` away.
DEFAULT_METRICS = (*CORE_METRICS, "lpips", "cvvdp")
DEFAULT_REGION = "hole"
_IMPORT_NAMES = {"cvvdp": "pycvvdp", "flip-evaluator": "flip_evaluator"}


def unavailable_reason(name: str) -> str | None:
    """``None`` when metric ``name`` can be computed here, else one line saying why not."""
    s = spec(name)
    if name == "lpips":
        return lpips_available()
    if s.package is not None and importlib.util.find_spec(_IMPORT_NAMES.get(s.package, s.package)) is None:
        return f"{s.label} unavailable: the {s.package} package is not installed; pip install {s.package}"
    return None


def resolve_metrics(
    requested: list[str] | tuple[str, ...] | None, lpips: bool = True
) -> tuple[tuple[str, ...], dict[str, str]]:
    """(metric names to compute, {left-out default metric: reason}).

    ``requested`` empty or ``None``: the default set, minus metrics that cannot run here
    (each with its reason). A requested metric that is unknown or cannot run here raises
    ``UserError``. ``lpips=False`` (``--no-lpips``) drops LPIPS from the default set.
    """
    if requested:
        names = tuple(dict.fromkeys(requested))
        for name in names:
            spec(name)  # unknown -> UserError naming the known ones
        for name in names:
            reason = unavailable_reason(name)
            if reason:
                raise UserError(f"--metrics {name}: {reason}")
        return names, {}
    left_out = {}
    if not lpips:
        left_out["lpips"] = "LPIPS disabled by configuration"
    for name in DEFAULT_METRICS:
        if name not in left_out:
            reason = unavailable_reason(name)
            if reason:
                left_out[name] = reason
    return tuple(n for n in DEFAULT_METRICS if n not in left_out), left_out


def check_region(region: str) -> str:
    if region not in REGIONS:
        raise UserError(f"--metric-region {region!r}: choose one of {', '.join(REGIONS)}")
    return region


def hole_crop(mask: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns of the ``hole`` region of ``mask`` (see the module docstring)."""
    top, left, bottom, right = hole_bbox(mask)
    pad = max(HOLE_MIN_MARGIN, math.ceil(HOLE_MARGIN * max(bottom - top, right - left)))
    h, w = mask.shape
    return slice(max(top - pad, 0), min(bottom + pad, h)), slice(max(left - pad, 0), min(right + pad, w))


@functools.cache
def _instrument(name: str, display: str | None, device: str) -> Any:
    """The callable object of a model-based metric, built once per process."""
    if name == "lpips":
        return LPIPSMetric(device=device)
    if name == "cvvdp":
        return CvvdpMetric(parse_display(display), device)
    if name == "flip":
        return FlipMetric(parse_display(display))
    raise ValueError(f"{name!r} is not a model-based metric")


def prepare_metrics(names, display: str | None = None, device: str = "cpu") -> None:
    """Build the model-based metrics among ``names`` now, as :func:`compute_metrics` would
    on first use (importing cvvdp and torch and loading a model take seconds, once per
    process): a worker pays this before its first item instead of inside it."""
    for name in names:
        if name not in _PIXEL:
            spec(name)
            _instrument(name, display, device)


_PIXEL = {
    "l1": lambda out, gt, mask: pixel.l1(out, gt),
    "psnr": lambda out, gt, mask: pixel.psnr(out, gt),
    "ssim": lambda out, gt, mask: pixel.ssim(out, gt),
    "hole_l1": lambda out, gt, mask: pixel.l1(out, gt, mask),
    "hole_psnr": lambda out, gt, mask: pixel.psnr(out, gt, mask),
}


def _downsample(out, gt, mask, metric_size):
    ok_type = isinstance(metric_size, (int, np.integer)) and not isinstance(metric_size, bool)
    if not ok_type or not pixel.SSIM_WIN <= metric_size <= min(out.shape[:2]):
        raise ValueError(
            f"metric_size: must be an integer from {pixel.SSIM_WIN} to the smaller image side "
            f"{min(out.shape[:2])}, got {metric_size!r}"
        )
    size = (int(metric_size), int(metric_size))
    return tuple(resize_nearest(a, size) for a in (out, gt, mask))


def compute_metrics(
    out: np.ndarray,
    gt: np.ndarray,
    mask: np.ndarray,
    names: tuple[str, ...] | list[str] | None = None,
    *,
    region: str = "full",
    metric_size: int | None = None,
    display: str | None = None,
    device: str = "cpu",
) -> dict[str, float]:
    """Values of ``names`` (default: ``CORE_METRICS``) for one output, as floats.

    ``metric_size=M`` first downsamples ``out``, ``gt`` and ``mask`` to MxM with
    ``bench.resize.resize_nearest`` (centre-aligned nearest neighbour), so scores at
    different resolutions are comparable; M must be between 11 and the smaller image side
    (never an upsample). A hole that vanishes in the downsample raises ``ValueError``.
    Metrics whose registry region is ``selectable`` are computed on the whole image
    (``region="full"``) or on ``hole_crop(mask)`` (``region="hole"``); ``display`` is the
    display model (``bench.metrics.display``) of cvvdp and flip; ``device`` where cvvdp and
    LPIPS run.
    """
    out, gt = pixel.check_pair(out, gt)
    pixel.check_mask(mask, out.shape)
    check_region(region)
    if metric_size is not None:
        out, gt, mask = _downsample(out, gt, mask, metric_size)
        pixel.check_mask(mask, out.shape)
    crop = hole_crop(mask) if region == "hole" else (slice(None), slice(None))
    values = {}
    for name in names or CORE_METRICS:
        if name in _PIXEL:
            values[name] = _PIXEL[name](out, gt, mask)
        else:
            spec(name)
            values[name] = _instrument(name, display, device)(out[crop], gt[crop])
    return values


def metric_conventions(
    names: tuple[str, ...] | list[str],
    region: str = "full",
    display: str | None = None,
    metric_size: int | None = None,
) -> dict[str, Any]:
    """JSON-serialisable description of how ``names`` are computed in a run.

    Everything a value depends on is here (conventions, region and margin, display model,
    package versions), so equal conventions mean comparable numbers.
    """
    check_region(region)
    conv: dict[str, Any] = {
        "input": "uint8 RGB, values 0-255; output and ground truth of the same HxWx3 shape",
        "mask": "bool HxW, True = hole (white >= 128 in mask files)",
        "metric_size": "None: scored at native size. M: output, ground truth and mask are "
        "nearest-neighbour downsampled (bench.resize.resize_nearest, centre-aligned) to MxM "
        "before scoring",
        "metric_size_value": metric_size,
    }
    selectable = [n for n in names if spec(n).region == "selectable"]
    if selectable:
        conv["region"] = {
            "value": region,
            "applies_to": selectable,
            "full": "the whole image",
            "hole": f"crop = hole bounding box grown by max({HOLE_MIN_MARGIN} px, "
            f"{HOLE_MARGIN} x its longer side) on every side, clipped to the image",
        }
    for name in names:
        entry = spec(name).conventions
        if name in ("cvvdp", "flip"):
            model = parse_display(display)
            entry = {**entry, "display": model.as_dict()}
            entry["version"] = package_version(METRICS[name].package)
        if name == "lpips":
            entry = {**entry, "backbone_file": backbone_file("alex")[0].name}
        conv[name] = entry
    return conv
