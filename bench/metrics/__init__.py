"""Image-quality metrics: the registry, the protocol's pixel metrics and the perceptual ones.

- ``registry``: THE description of every metric (direction, range, digits, label,
  conventions): ``spec(name)``, ``higher_is_better(name)``, ``label(name)``, ``fmt(name, v)``.
- ``pixel``: L1, PSNR, SSIM (= scikit-image's Gaussian SSIM), their hole-only forms.
- ``lpips_metric``: LPIPS from cached weights; ``fetch_backbone`` downloads them once.
- ``perceptual``: ColorVideoVDP (JOD) and FLIP, with the run's ``display`` model.
- ``compute``: the run's metric list, the ``hole`` region crop, ``compute_metrics`` for one
  output, ``metric_conventions`` for run.json.
"""

from .compute import (
    DEFAULT_METRICS,
    DEFAULT_REGION,
    HOLE_MARGIN,
    check_region,
    compute_metrics,
    hole_crop,
    metric_conventions,
    prepare_metrics,
    resolve_metrics,
    unavailable_reason,
)
from .display import DEFAULT_DISPLAY, DisplayModel, parse_display
from .lpips_metric import LPIPSMetric, fetch_backbone, lpips_available
from .perceptual import CvvdpMetric, FlipMetric
from .pixel import l1, psnr, ssim, ssim_map
from .registry import CORE_METRICS, METRICS, REGIONS, MetricSpec, fmt, higher_is_better, label, spec

# Direction of every registered metric, as a mapping (derived from the registry).
HIGHER_IS_BETTER: dict[str, bool] = {name: s.higher_is_better for name, s in METRICS.items()}

__all__ = [
    "CORE_METRICS",
    "DEFAULT_DISPLAY",
    "DEFAULT_METRICS",
    "DEFAULT_REGION",
    "HIGHER_IS_BETTER",
    "HOLE_MARGIN",
    "METRICS",
    "REGIONS",
    "CvvdpMetric",
    "DisplayModel",
    "FlipMetric",
    "LPIPSMetric",
    "MetricSpec",
    "check_region",
    "compute_metrics",
    "fetch_backbone",
    "fmt",
    "higher_is_better",
    "hole_crop",
    "l1",
    "label",
    "lpips_available",
    "metric_conventions",
    "parse_display",
    "prepare_metrics",
    "psnr",
    "resolve_metrics",
    "spec",
    "ssim",
    "ssim_map",
    "unavailable_reason",
]
