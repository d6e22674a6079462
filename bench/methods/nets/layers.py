"""Building blocks shared by DFNet and RefinementNet (names match the published files).

- :class:`SameConv` — "same" convolution; its tensors live at ``conv.weight`` when
  ``k - s`` is even (symmetric padding inside the Conv2d) and at ``conv.1.weight`` when it
  is odd (a ``ZeroPad2d`` of ``(k-s)//2`` before and one more after, then an unpadded conv).
- :class:`EncoderBlock` — ``encode = [SameConv(stride 2), BatchNorm, ReLU]`` (conv only for
  the first block).
- :class:`DecoderBlock` — nearest ×2 upsampling of the input from below, concatenation
  ``[upsampled, skip]``, ``decode = [SameConv(k3), BatchNorm, LeakyReLU(0.2)]``.
- :func:`decode_region` — runs a decoder chain only over the part of each level that a
  region of the finest output depends on (used where only the hole's output matters).

All tensors are float NCHW; BatchNorm uses running statistics in ``eval()`` mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SameConv(nn.Module):
    """Convolution whose output is ``ceil(input / stride)`` on each side."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__()
        total = kernel - stride
        if total % 2 == 0:
            self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=total // 2)
        else:
            before = total // 2
            self.conv = nn.Sequential(
                nn.ZeroPad2d((before, before + 1, before, before + 1)),
                nn.Conv2d(cin, cout, kernel, stride),
            )

    @property
    def conv2d(self) -> nn.Conv2d:
        return self.conv if isinstance(self.conv, nn.Conv2d) else self.conv[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def valid(self, x: torch.Tensor) -> torch.Tensor:
        """The same kernel without any padding (input already carries its margin)."""
        c = self.conv2d
        return F.conv2d(x, c.weight, c.bias, c.stride)


class EncoderBlock(nn.Module):
    """Stride-2 same-conv, then (unless ``plain``) BatchNorm and ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, plain: bool = False):
        super().__init__()
        layers: list[nn.Module] = [SameConv(cin, cout, kernel, 2)]
        if not plain:
            layers += [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.encode = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)


class DecoderBlock(nn.Module):
    """``decode(cat[upsample2(below), skip])``; output channels = ``cout``."""

    def __init__(self, c_below: int, c_skip: int, cout: int):
        super().__init__()
        self.decode = nn.Sequential(
            SameConv(c_below + c_skip, cout, 3, 1),
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(0.2, inplace=True),
        )

    def forward(self, below: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(below, scale_factor=2, mode="nearest")
        return self.decode(torch.cat([up, skip], dim=1))

    def forward_valid(self, x: torch.Tensor) -> torch.Tensor:
        """``decode`` on an already concatenated input that includes a 1-pixel margin."""
        conv, norm, act = self.decode
        return act(norm(conv.valid(x)))


Box = tuple[int, int, int, int]  # (y0, y1, x0, x1), half-open, in one level's pixels


def hole_box(hole: torch.Tensor) -> Box | None:
    """Bounding box of ``hole > 0`` (float[B, 1, H, W]) over the batch; None if empty."""
    any_hole = (hole > 0).flatten(0, 1).any(dim=0)
    rows = torch.nonzero(any_hole.any(dim=1)).flatten()
    if rows.numel() == 0:
        return None
    cols = torch.nonzero(any_hole.any(dim=0)).flatten()
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def expand_box(box: Box, margin: int, h: int, w: int) -> Box:
    """``box`` grown by ``margin`` on every side, clipped to an ``h``×``w`` level."""
    y0, y1, x0, x1 = box
    return max(0, y0 - margin), min(h, y1 + margin), max(0, x0 - margin), min(w, x1 + margin)


def border_pad(x: torch.Tensor, box: Box, h: int, w: int) -> torch.Tensor:
    """Zero-pad ``x`` (covering ``expand_box(box, 1, h, w)``) on the sides where that
    expansion was clipped, so a 3×3 unpadded conv gives ``box`` with the full image's
    zero-padding semantics."""
    y0, y1, x0, x1 = box
    pad = (int(x0 == 0), int(x1 == w), int(y0 == 0), int(y1 == h))
    return F.pad(x, pad) if any(pad) else x


def region_chain(box: Box, sizes: list[tuple[int, int]]) -> list[Box]:
    """Regions each decoder level must produce so the finest level covers ``box``.

    ``sizes[l]`` is the (H, W) of decoder level ``l`` (0 = finest, each next one half).
    Level ``l``'s 3×3 conv needs its input one pixel around its region (clipped to the
    level; outside is zero padding), and the upsampled input from below at row ``y`` is
    the row ``y // 2`` of level ``l + 1``.
    """
    regions = [box]
    for level in range(len(sizes) - 1):
        ey0, ey1, ex0, ex1 = expand_box(regions[-1], 1, *sizes[level])
        regions.append((ey0 // 2, (ey1 + 1) // 2, ex0 // 2, (ex1 + 1) // 2))
    return regions


def decode_region(
    blocks: list[DecoderBlock], bottom: torch.Tensor, skips: list[torch.Tensor], box: Box
) -> torch.Tensor:
    """Run ``blocks`` (coarse to fine) but only where the finest region ``box`` needs it.

    ``bottom`` is the deepest encoder output; ``skips[i]`` the skip of ``blocks[i]``. The
    result is the finest block's output over ``box`` only: float[B, C, y1-y0, x1-x0]. Each
    output pixel is computed from the same inputs and weights as the full decoder's, so the
    values agree with ``blocks`` run on the whole image (up to the convolution backend's
    summation order, which does not depend on the region in practice).
    """
    n = len(blocks)
    sizes = [tuple(s.shape[-2:]) for s in reversed(skips)]  # finest first
    regions = region_chain(box, sizes)  # regions[l] for level l (0 = finest)
    below = bottom
    below_box: Box = (0, bottom.shape[-2], 0, bottom.shape[-1])
    for i, block in enumerate(blocks):
        level = n - 1 - i
        y0, y1, x0, x1 = regions[level]
        h, w = sizes[level]
        below_full = below_box == (0, below.shape[-2], 0, below.shape[-1])
        if (y0, y1, x0, x1) == (0, h, 0, w) and below_full:
            below = block(below, skips[i])
        else:
            ey0, ey1, ex0, ex1 = expand_box((y0, y1, x0, x1), 1, h, w)
            up = F.interpolate(below, scale_factor=2, mode="nearest")
            oy, ox = 2 * below_box[0], 2 * below_box[2]  # level coords of up[0, 0]
            up = up[..., ey0 - oy : ey1 - oy, ex0 - ox : ex1 - ox]
            x = torch.cat([up, skips[i][..., ey0:ey1, ex0:ex1]], dim=1)
            below = block.forward_valid(border_pad(x, (y0, y1, x0, x1), h, w))
        below_box = (y0, y1, x0, x1)
    return below
