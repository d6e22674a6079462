"""ColorVideoVDP (``cvvdp``, JOD, higher is better) and NVIDIA FLIP (``flip``, lower is better).

Both are calls of the published packages, with the run's display model (``display.py``):
no re-implementation, so values equal the packages' own (tested). Neither touches the
network: cvvdp's calibration and display models ship inside its wheel, and only its
``cvvdp_ml_*`` variants (not used here) download anything. cvvdp runs on the run's device
(CUDA when present); the pip build of FLIP is CPU only.
"""

from __future__ import annotations

import logging
from importlib import metadata

import numpy as np

from bench.errors import UserError

from .display import DisplayModel, _pycvvdp
from .pixel import check_pair


def package_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


class CvvdpMetric:
    """``__call__(out, gt)`` -> ColorVideoVDP quality in JOD of ``out`` against ``gt``."""

    def __init__(self, display: DisplayModel, device: str = "cpu") -> None:
        import torch

        pycvvdp = _pycvvdp("cvvdp")
        photometry, geometry = display.cvvdp_models()
        # pycvvdp logs its set-up at INFO on the root logger; a library call stays quiet.
        logging.getLogger("pycvvdp").setLevel(logging.WARNING)
        self.display = display
        self.model = pycvvdp.cvvdp(
            display_photometry=photometry,
            display_geometry=geometry,
            quiet=True,
            device=torch.device(device),
        )

    def __call__(self, out: np.ndarray, gt: np.ndarray) -> float:
        import torch

        out, gt = check_pair(out, gt)
        with torch.inference_mode():
            jod, _ = self.model.predict(out, gt, dim_order="HWC")
        return float(jod)


class FlipMetric:
    """``__call__(out, gt)`` -> mean LDR-FLIP error of ``out`` against ``gt`` (0 = identical)."""

    def __init__(self, display: DisplayModel) -> None:
        try:
            import flip_evaluator
        except ImportError:
            raise UserError("flip: flip-evaluator is not installed; pip install flip-evaluator") from None
        self._evaluate = flip_evaluator.evaluate
        self.display = display

    def __call__(self, out: np.ndarray, gt: np.ndarray) -> float:
        out, gt = check_pair(out, gt)
        ref = gt.astype(np.float32) / 255.0
        test = out.astype(np.float32) / 255.0
        _, mean, _ = self._evaluate(
            ref, test, "LDR", applyMagma=False, parameters={"ppd": float(self.display.ppd)}
        )
        return float(mean)
