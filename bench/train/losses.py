"""Training losses for the refinement stage (after Liu et al. 2018, as the paper uses).

All tensors are float[B, C, H, W] in [0, 1]; ``hole`` is float[B, 1, H, W] with 1 = hole.

loss = w_hole · L1 over the hole  +  w_tv · total variation around the hole
       + w_perceptual · VGG16 feature L1  +  w_style · VGG16 Gram-matrix L1

The network pastes the known region back itself, so an L1 term over the known region is
identically zero for its output and is not computed. The VGG16 terms need torchvision's
``vgg16`` ImageNet weights as a local file (nothing is downloaded); without one they are
skipped and the caller says so once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)

# torchvision's file name for the ImageNet vgg16 weights in the hub cache.
VGG16_FILE_PREFIX = "vgg16-"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# Ends (exclusive) of the three VGG16 feature slices: pool1, pool2, pool3 (as Liu et al.).
_VGG_SLICES = (5, 10, 17)


@dataclass(frozen=True)
class LossWeights:
    """Liu et al.'s weights (hole 6, TV 0.1, perceptual 0.05, style 120)."""

    hole: float = 6.0
    tv: float = 0.1
    perceptual: float = 0.05
    style: float = 120.0


def hole_l1(out: torch.Tensor, gt: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Mean over all elements of ``hole · |out − gt|`` (Liu et al.'s normalisation)."""
    return (hole * (out - gt).abs()).mean()


def total_variation(out: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Mean absolute neighbour difference over the 1-px dilation of the hole.

    A difference counts when either of its two pixels lies in the dilated hole, which
    penalises seams at the hole boundary as well as noise inside it.
    """
    region = F.max_pool2d(hole, 3, stride=1, padding=1)
    dx = (out[..., :, 1:] - out[..., :, :-1]).abs()
    dy = (out[..., 1:, :] - out[..., :-1, :]).abs()
    rx = torch.maximum(region[..., :, 1:], region[..., :, :-1])
    ry = torch.maximum(region[..., 1:, :], region[..., :-1, :])
    return (dx * rx).mean() + (dy * ry).mean()


def find_vgg16_weights(explicit: str | os.PathLike | None = None) -> Path | None:
    """The VGG16 weights file to use: ``explicit`` if given, else one in torch's hub cache.

    ``explicit`` that does not exist is the user's mistake and raises ``FileNotFoundError``
    (the CLI turns it into a one-line error); no file in the cache returns None.
    """
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(str(path))
        return path
    try:
        hub = Path(torch.hub.get_dir()) / "checkpoints"
    except Exception:  # noqa: BLE001 - an unusable hub dir is simply "no cached weights"
        return None
    found = sorted(hub.glob(f"{VGG16_FILE_PREFIX}*.pth")) if hub.is_dir() else []
    return found[0] if found else None


class VGG16Features(nn.Module):
    """Frozen VGG16 feature extractor returning pool1, pool2 and pool3 activations."""

    def __init__(self, weights_path: str | os.PathLike):
        super().__init__()
        from torchvision.models import vgg16

        net = vgg16(weights=None)
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        net.load_state_dict(state)
        feats = net.features
        starts = (0, *_VGG_SLICES[:-1])
        self.slices = nn.ModuleList(
            nn.Sequential(*[feats[i] for i in range(a, b)]) for a, b in zip(starts, _VGG_SLICES, strict=True)
        )
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std
        outs = []
        for s in self.slices:
            x = s(x)
            outs.append(x)
        return outs


def gram(feat: torch.Tensor) -> torch.Tensor:
    """Gram matrix normalised by C·H·W: float[B, C, C]."""
    b, c, h, w = feat.shape
    f = feat.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


class RefinementLoss(nn.Module):
    """The weighted sum above; ``forward`` returns (total, dict of detached terms)."""

    def __init__(self, weights: LossWeights = LossWeights(), vgg: VGG16Features | None = None):
        super().__init__()
        self.weights = weights
        self.vgg = vgg

    @property
    def uses_vgg(self) -> bool:
        return self.vgg is not None

    def forward(
        self, out: torch.Tensor, gt: torch.Tensor, hole: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        w = self.weights
        terms = {"hole_l1": hole_l1(out, gt, hole), "tv": total_variation(out, hole)}
        total = w.hole * terms["hole_l1"] + w.tv * terms["tv"]
        if self.vgg is not None:
            f_out, f_gt = self.vgg(out), self.vgg(gt)
            perc = sum(F.l1_loss(a, b) for a, b in zip(f_out, f_gt, strict=True))
            style = sum(F.l1_loss(gram(a), gram(b)) for a, b in zip(f_out, f_gt, strict=True))
            terms["perceptual"], terms["style"] = perc, style
            total = total + w.perceptual * perc + w.style * style
        terms["total"] = total
        return total, {k: float(v.detach()) for k, v in terms.items()}
