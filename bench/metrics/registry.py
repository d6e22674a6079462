"""THE metric registry: every metric's name, direction, range, digits, label and conventions.

Tables (``bench.report``), figures (``bench.plots``) and the ranking analysis
(``bench.ranking``) read a metric's direction, label and number format from here and nowhere
else. A metric's name is also its column value in ``metrics.csv``.

``region`` says which pixels a metric sees:

- ``"full"``: the whole image, always (the paper's Table 1 metrics, so tables stay comparable
  with the published ones);
- ``"hole"``: only the hole pixels, always (``hole_l1``, ``hole_psnr``);
- ``"selectable"``: the run's ``metric_region``: the whole image, or a crop centred on the
  hole (``bench.metrics.compute.hole_crop``). Perceptual metrics pool over the pixels they
  see, so on protocol outputs (known region pasted back) a full-image score mostly measures
  how large the untouched area is; the crop is also what the crowd study shows at 1:1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench.errors import UserError

from . import pixel


@dataclass(frozen=True)
class MetricSpec:
    name: str
    label: str
    higher_is_better: bool
    range: tuple[float, float]  # possible values, (low, high); math.inf where unbounded
    digits: int  # decimals in tables
    unit: str
    region: str  # "full", "hole" or "selectable" (see the module docstring)
    package: str | None  # the PyPI distribution computing it; None = this package (no extra)
    conventions: Any  # JSON-serialisable; settings-dependent parts are added per run
    summary: str = ""  # one line for table notes, e.g. "ColorVideoVDP quality in JOD (10 = identical)"

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    def fmt(self, value: float) -> str:
        """``value`` with this metric's decimals; "–" for a missing or non-finite value."""
        if value is None or not math.isfinite(value):
            return "–"
        return f"{value:.{self.digits}f}"

    def orient(self, value: float) -> float:
        """``value`` with the sign flipped for lower-is-better metrics: bigger is always better."""
        return value if self.higher_is_better else -value


_SSIM_CONVENTIONS = {
    "window": "gaussian",
    "sigma": pixel.SSIM_SIGMA,
    "truncate": pixel.SSIM_TRUNCATE,
    "window_size": pixel.SSIM_WIN,
    "K1": pixel.SSIM_K1,
    "K2": pixel.SSIM_K2,
    "data_range": pixel.DATA_RANGE,
    "covariance": "population (use_sample_covariance=False)",
    "channels": "SSIM per RGB channel, then the mean of the three",
    "border": f"SSIM map cropped by {pixel.SSIM_RADIUS} px on every side before averaging "
    "(scikit-image's crop), so the border mode never enters the mean",
    "equals": "skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, "
    "use_sample_covariance=False, data_range=255, channel_axis=-1)",
    "implementation": "OpenCV separable float32 filtering of the sum and difference "
    "images; windows where output and ground truth are identical score exactly 1; "
    "|difference| to scikit-image below 1e-7 in the tests",
}

_SPECS = (
    MetricSpec(
        name="l1",
        label="L1",
        higher_is_better=False,
        range=(0.0, 255.0),
        digits=3,
        unit="0-255",
        region="full",
        package=None,
        conventions="mean |out - gt| over all pixels and the 3 channels, 0-255 scale",
    ),
    MetricSpec(
        name="psnr",
        label="PSNR",
        higher_is_better=True,
        range=(0.0, math.inf),
        digits=3,
        unit="dB",
        region="full",
        package=None,
        conventions="10*log10(255^2 / MSE), MSE over all pixels and the 3 channels; inf if identical",
    ),
    MetricSpec(
        name="ssim",
        label="SSIM",
        higher_is_better=True,
        range=(-1.0, 1.0),
        digits=3,
        unit="",
        region="full",
        package=None,
        conventions=_SSIM_CONVENTIONS,
    ),
    MetricSpec(
        name="hole_l1",
        label="hole L1",
        higher_is_better=False,
        range=(0.0, 255.0),
        digits=2,
        unit="0-255",
        region="hole",
        package=None,
        conventions="as l1, over hole pixels only (all 3 channels)",
    ),
    MetricSpec(
        name="hole_psnr",
        label="hole PSNR",
        higher_is_better=True,
        range=(0.0, math.inf),
        digits=2,
        unit="dB",
        region="hole",
        package=None,
        conventions="as psnr, MSE over hole pixels only (all 3 channels); inf if identical there",
    ),
    MetricSpec(
        name="lpips",
        label="LPIPS",
        higher_is_better=False,
        range=(0.0, math.inf),
        digits=4,
        unit="",
        region="selectable",
        package="lpips",
        conventions={
            "package": "lpips 0.1 (Zhang et al. 2018)",
            "net": "alex",
            "input": "RGB scaled to [-1, 1], no resizing",
            "availability": "only when torchvision's ImageNet backbone weights are cached under "
            "torch.hub.get_dir()/checkpoints (`hrbench weights fetch lpips`)",
        },
        summary="LPIPS (AlexNet, v0.1)",
    ),
    MetricSpec(
        name="cvvdp",
        label="CVVDP",
        higher_is_better=True,
        range=(-math.inf, 10.0),
        digits=3,
        unit="JOD",
        region="selectable",
        package="cvvdp",
        conventions={
            "package": "ColorVideoVDP (Mantiuk et al. 2024), PyPI cvvdp, its shipped calibration",
            "unit": "JOD: 10 = identical to the reference; 1 JOD less = 75 % of observers "
            "prefer the reference",
            "input": "uint8 sRGB, display-encoded; the display model turns it into luminance",
            "call": "pycvvdp.cvvdp(display_photometry, display_geometry).predict(out, gt, "
            "dim_order='HWC') on a still image",
        },
        summary="CVVDP: ColorVideoVDP quality in JOD (10 = identical)",
    ),
    MetricSpec(
        name="flip",
        label="FLIP",
        higher_is_better=False,
        range=(0.0, 1.0),
        digits=4,
        unit="",
        region="selectable",
        package="flip-evaluator",
        conventions={
            "package": "NVIDIA FLIP (Andersson et al. 2020), PyPI flip-evaluator",
            "mode": "LDR, inputs sRGB in [0, 1] (uint8 / 255)",
            "value": "mean of the FLIP error map",
            "ppd": "pixels per degree of the run's display model (the same viewing condition as cvvdp)",
        },
        summary="FLIP: mean LDR-FLIP error",
    ),
)

METRICS: dict[str, MetricSpec] = {s.name: s for s in _SPECS}
# Always computed (cheap, exact): the paper's Table 1 metrics and their hole-only forms.
CORE_METRICS = ("l1", "psnr", "ssim", "hole_l1", "hole_psnr")
REGIONS = ("full", "hole")


def spec(name: str) -> MetricSpec:
    """The registry entry of ``name``; ``UserError`` naming the known metrics otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise UserError(f"unknown metric {name!r}; known metrics: {', '.join(METRICS)}") from None


def higher_is_better(name: str) -> bool:
    return spec(name).higher_is_better


def label(name: str, arrow: bool = False) -> str:
    """Display label, e.g. "PSNR", or "PSNR ↑" with ``arrow``."""
    s = spec(name)
    return f"{s.label} {s.arrow}" if arrow else s.label


def fmt(name: str, value: float) -> str:
    """``value`` formatted with the metric's decimals ("–" when missing or not finite)."""
    return spec(name).fmt(value)
