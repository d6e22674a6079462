"""RefinementNet, the full-resolution stage (published file ``refinement.pth``).

An 8-level U-Net without fusion blocks; names and shapes are those of
``../shared/reference/refinement_state_dict.tsv`` (109 entries, 36,858,507 parameters).
Input: ``image19`` float[B, 19, H, W] in [0, 1] (channels 1–19 of
:func:`bench.methods.two_stage.shifted_stack`) and ``mask`` float[B, 1, H, W] (1 = hole);
H and W multiples of 256. Output float[B, 3, H, W] RGB in [0, 1], equal to
``mask·pred + (1 − mask)·image19[:, :3]``.

In ``eval()`` mode the four finest decoder levels and the last conv run only over the
bounding box of the hole (plus the margin their convolutions need): outside the hole
the output is the input anyway, so this changes nothing but the cost.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import DecoderBlock, EncoderBlock, SameConv, decode_region, hole_box

ENC_KERNELS = (7, 5, 5, 3, 3, 3, 3, 3)
ENC_CHANNELS = (96, 192, 384, 512, 512, 512, 512, 512)
IN_CHANNELS = 20


class RefinementNet(nn.Module):
    def __init__(self):
        super().__init__()
        cins = (IN_CHANNELS, *ENC_CHANNELS[:-1])
        for i, (cin, cout, k) in enumerate(zip(cins, ENC_CHANNELS, ENC_KERNELS, strict=True)):
            self.add_module(f"en{i + 1}", EncoderBlock(cin, cout, k, plain=i == 0))
        skips = (IN_CHANNELS, *ENC_CHANNELS[:-1])[::-1]  # de1's skip is en7's output …
        c_below = ENC_CHANNELS[-1]
        for i, c_skip in enumerate(skips):
            self.add_module(f"de{i + 1}", DecoderBlock(c_below, c_skip, c_skip))
            c_below = c_skip
        self.last_conv = nn.Sequential(SameConv(IN_CHANNELS, 3, 1), nn.Sigmoid())
        self.roi = True  # decode only the hole's bounding box in eval mode

    def forward(self, image19: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.forward_stack(torch.cat([mask, image19], dim=1))

    def forward_stack(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` float[B, 20, H, W] = [mask, image19]; same output as :meth:`forward`."""
        mask = x[:, :1]
        feats = [x]
        for i in range(len(ENC_CHANNELS)):
            feats.append(getattr(self, f"en{i + 1}")(feats[-1]))
        bottom, skips = feats[-1], feats[-2::-1]
        blocks = [getattr(self, f"de{i + 1}") for i in range(len(ENC_CHANNELS))]
        box = hole_box(mask) if (self.roi and not self.training) else None
        h, w = x.shape[-2:]
        if box is None or box == (0, h, 0, w):
            out = bottom
            for block, skip in zip(blocks, skips, strict=True):
                out = block(out, skip)
            pred = self.last_conv(out)
            return mask * pred + (1 - mask) * x[:, 1:4]
        del feats
        y0, y1, x0, x1 = box
        pred = self.last_conv(decode_region(blocks, bottom, skips, box))
        result = x[:, 1:4].clone()
        m = mask[..., y0:y1, x0:x1]
        result[..., y0:y1, x0:x1] = m * pred + (1 - m) * x[:, 1:4, y0:y1, x0:x1]
        return result

