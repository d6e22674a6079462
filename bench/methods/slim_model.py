"""The shipped two-stage model: Telea at 512, upscaled, refined by the slim network.

``two-stage-slim`` runs out of the box (the weights ship inside the package, see
``weights_shipped/MODEL_CARD.md``; a ``slim_refine.pth`` in ``--weights-dir`` takes precedence,
for weights you trained yourself): the coarse base named in the checkpoint (Telea, run at
512 px and upscaled bilinearly, exactly as in ``two_stage``) and the slim refinement net
(:mod:`bench.methods.nets.slim`) trained by ``hrbench train refine``.

``two-stage-slim/no-shift`` is an inference-time ablation: the *same* weights, given plain
copies of the matched image in the four shifted slots. It shows how much the trained net
uses the shifted context; it is not a net trained without shifts.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import UserError
from ..io import sha256_file
from .base import Inpainter, MethodContext, create, register
from .two_stage import PAD_MULTIPLE, matched_image, refine, upscaled_coarse

WEIGHTS_NAME = "slim_refine.pth"
SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights_shipped" / WEIGHTS_NAME


def load_slim(path: str | Path = SHIPPED_WEIGHTS, device: str = "cpu"):
    """(SlimRefineNet in eval mode on ``device``, the checkpoint's ``meta`` dict).

    The file is ``{"state_dict", "config", "meta"}`` as written by
    :func:`bench.train.refine.save_model`; any other content is a ``UserError``.
    """
    import torch

    from .nets.loading import check_state_dict
    from .nets.slim import SlimRefineNet

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: slim refinement weights not found; reinstall hrbench or train "
                        "them with 'hrbench train refine'")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise UserError(f"{path}: not a readable torch checkpoint ({type(exc).__name__})") from None
    if not isinstance(obj, dict) or not {"state_dict", "config"} <= obj.keys():
        raise UserError(f"{path}: not a slim refinement checkpoint (needs 'state_dict' and 'config')")
    cfg = obj["config"]
    net = SlimRefineNet(tuple(cfg["widths"]), int(cfg["head"]))
    check_state_dict(net, obj["state_dict"], path)
    net.load_state_dict(obj["state_dict"])
    return net.to(device).eval(), dict(obj.get("meta") or {})


class _SlimTwoStage(Inpainter):
    color_order = "RGB"
    pad_multiple = PAD_MULTIPLE
    native_size = None
    uses_gpu = True  # the refinement runs on context.device (CPU by default)
    no_shift: ClassVar[bool] = False
    weights_path: ClassVar[Path] = SHIPPED_WEIGHTS
    # The coarse base (named in the checkpoint, Telea so far) and the refinement code.
    code_modules = ("bench.methods.two_stage", "bench.methods.nets", "bench.methods.classical")
    libraries = ("torch", "cv2")

    @classmethod
    def find_weights(cls, context: MethodContext) -> Path:
        """``<weights_dir>/slim_refine.pth`` when the user gave one there, else the shipped file."""
        if context.weights_dir is not None:
            own = Path(context.weights_dir) / WEIGHTS_NAME
            if own.is_file():
                return own
        return cls.weights_path

    @classmethod
    def weights_files(cls, context: MethodContext, arg: str | None = None) -> list[Path]:
        path = cls.find_weights(context)
        return [path] if path.is_file() else []

    @classmethod
    def unavailable_reason(cls, context: MethodContext, arg: str | None = None) -> str | None:
        path = cls.find_weights(context)
        if not path.is_file():
            return f"{path} is missing; reinstall hrbench from a source checkout"
        return None

    def __init__(self, context: MethodContext | None = None, arg: str | None = None):
        super().__init__(context, arg)
        self.path = self.find_weights(self.context)
        self.net, self.meta = load_slim(self.path, self.context.device)
        self.parameters = sum(p.numel() for p in self.net.parameters())
        self.coarse_name = str(self.meta.get("coarse", "telea"))
        self.coarse = create(self.coarse_name, self.context)

    def _inpaint(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        up = upscaled_coarse(self.coarse, image, mask)
        matched = matched_image(image, mask, up)
        return refine(self.net, matched, mask, device=self.context.device, no_shift=self.no_shift)

    def metadata(self) -> dict:
        return {
            **super().metadata(),
            "weights": str(self.path.name if self.path == SHIPPED_WEIGHTS else self.path),
            "weights_shipped": self.path == SHIPPED_WEIGHTS,
            "weights_sha256": sha256_file(self.path),
            "coarse": f"{self.coarse_name}@512 (bilinear upscale)",
            "refinement": "SlimRefineNet",
            "parameters": self.parameters,
            "shifted_copies": not self.no_shift,
            "training_step": self.meta.get("step"),
        }

    def close(self) -> None:
        self.net = None


@register("two-stage-slim", default=True)
class SlimTwoStage(_SlimTwoStage):
    """Two-stage with shipped weights: Telea at 512 + slim refinement trained here."""

    description = "two-stage: Telea@512 coarse + shipped slim refinement net (trained in-project)"


@register("two-stage-slim/no-shift")
class SlimTwoStageNoShift(_SlimTwoStage):
    """Ablation: the shipped slim net given unshifted copies instead of the four shifts."""

    description = "ablation of two-stage-slim: same weights, plain copies instead of shifted ones"
    no_shift = True
