"""A slim refinement network with RefinementNet's inputs and outputs.

Input: the hole mask (1 channel, 1 = hole) and the 19 image channels of the paper's
refinement stage — the "matched" image (known pixels, upscaled coarse fill in the hole) and
four shifted copies each followed by its shifted mask — all float in [0, 1]. Output: RGB in
[0, 1], ``mask · prediction + (1 − mask) · matched``, like RefinementNet.

Unlike RefinementNet (36.9 M parameters, predicts the image), this net predicts a
*correction* added to the upscaled coarse fill, and its last layer starts at zero, so an
untrained net returns the coarse base exactly. That matters on a CPU budget: a net that
must first re-learn the coarse fill is worse than its base for hundreds of steps (measured,
see DESIGN.md), while a correction can only start from the base.

Shape: a five-level U-Net (stride-2 encoders, a dilated middle at 1/32 scale for a wide
receptive field, nearest-upsampling decoders with skips) of a few hundred thousand
parameters. Height and width must be multiples of 32 (the two-stage pipeline pads to 256).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: Default channel widths: encoders at 1/2 … 1/32 scale, then the full-resolution decoder.
DEFAULT_WIDTHS = (24, 32, 48, 64, 96)
DEFAULT_HEAD = 12
MULTIPLE = 32  # 2 ** number of stride-2 encoders
HALF_LEVEL = 0.5 / 255  # half a uint8 grey level, in [0, 1] units


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation),
        nn.LeakyReLU(0.2, inplace=True),
    )


class SlimRefineNet(nn.Module):
    """Correction-predicting refinement U-Net (see module docstring).

    ``forward(image, mask)``: ``image`` float[B, 19, H, W] in [0, 1] (channels 0–2 are the
    matched image), ``mask`` float[B, 1, H, W] (1 = hole); returns float[B, 3, H, W] in
    [0, 1] with the known region equal to the matched image. ``forward_stack(stack)`` does
    the same from the 20-channel stack (mask first). ``H`` and ``W`` must be multiples of 32.
    """

    def __init__(
        self,
        widths: tuple[int, ...] = DEFAULT_WIDTHS,
        head: int = DEFAULT_HEAD,
        in_image_channels: int = 19,
    ):
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"SlimRefineNet needs 5 encoder widths, got {widths}")
        self.widths = tuple(int(w) for w in widths)
        self.head_width = int(head)
        cin = 1 + in_image_channels
        enc = []
        for w in self.widths:
            enc.append(_conv(cin, w, stride=2))
            cin = w
        self.encoders = nn.ModuleList(enc)
        deepest = self.widths[-1]
        self.middle = nn.Sequential(_conv(deepest, deepest, dilation=2), _conv(deepest, deepest, dilation=4))
        dec = []
        below = deepest
        for skip in reversed(self.widths[:-1]):  # 1/16 … 1/2 scale
            dec.append(_conv(below + skip, skip))
            below = skip
        self.decoders = nn.ModuleList(dec)
        # Full resolution: only the mask and the matched image are concatenated here (the
        # shifted copies already entered through the first encoder), which keeps the most
        # expensive layer small.
        self.full = _conv(below + 4, self.head_width)
        self.last = nn.Conv2d(self.head_width, 3, 1)
        nn.init.zeros_(self.last.weight)  # step 0 returns the coarse base exactly
        nn.init.zeros_(self.last.bias)

    def config(self) -> dict:
        """Constructor arguments, stored beside the weights so a loader can rebuild the net."""
        return {"widths": list(self.widths), "head": self.head_width}

    def correction(self, stack: torch.Tensor) -> torch.Tensor:
        """The raw correction (float[B, 3, H, W], unbounded) added to the matched image.

        ``stack``: the whole float[B, 20, H, W] refinement input, mask first.
        """
        h, w = stack.shape[-2:]
        if h % MULTIPLE or w % MULTIPLE:
            raise ValueError(f"SlimRefineNet needs sides divisible by {MULTIPLE}, got {h}x{w}")
        x = stack
        skips = []
        feat = x
        for enc in self.encoders:
            feat = enc(feat)
            skips.append(feat)
        feat = feat + self.middle(feat)
        for dec, skip in zip(self.decoders, reversed(skips[:-1]), strict=True):
            feat = F.interpolate(feat, scale_factor=2, mode="nearest")
            feat = dec(torch.cat([feat, skip], dim=1))
        feat = F.interpolate(feat, scale_factor=2, mode="nearest")
        feat = self.full(torch.cat([feat, x[:, :4]], dim=1))
        return self.last(feat)

    def forward_stack(self, stack: torch.Tensor) -> torch.Tensor:
        """Output from the whole 20-channel stack (what ``two_stage.refine`` prefers).

        In ``eval()`` mode the hole's prediction is raised by half a grey level before
        clamping: the pipeline converts to uint8 by ×255 and *truncation* (as the published
        code does), which would otherwise turn every slightly negative correction into one
        level darker. With the offset, truncation rounds to the nearest level; an untrained
        net still gives the base exactly (k/255 + 0.5/255 truncates to k). Training compares
        floats, so it uses no offset.
        """
        mask, matched = stack[:, :1], stack[:, 1:4]
        pred = matched + self.correction(stack)
        if not self.training:
            pred = pred + HALF_LEVEL
        pred = pred.clamp(0.0, 1.0)
        return mask * pred + (1.0 - mask) * matched

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.forward_stack(torch.cat([mask, image], dim=1))


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
