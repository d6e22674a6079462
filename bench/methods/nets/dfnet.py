"""DFNet, the coarse network of the two-stage pipeline (published file ``model_places2.pth``).

An 8-level U-Net with fusion blocks at the six finest decoder levels; parameter names and
shapes are those of ``../shared/reference/dfnet_state_dict.tsv`` (215 entries,
32,880,504 parameters). ``forward(masked_image, known)``: ``masked_image`` float[B, 3, H, W]
BGR in [0, 1] already multiplied by ``known`` float[B, 1, H, W] (1 = known); H and W
multiples of 256. Returns the six fusion results, finest first; item 0 is float[B, 3, H, W]
BGR in [0, 1].

:meth:`DFNet.first_output` computes only that first item (the fusion results do not feed
the decoder, so the coarser five are not needed for it) and, in ``eval()`` mode, runs the
four finest decoder levels and the last fusion block only over the hole's bounding box:
the pipeline composites ``image·known + output·(1 − known)``, so outside the hole the
output's value is never used (there it returns the masked image).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (
    DecoderBlock,
    EncoderBlock,
    SameConv,
    border_pad,
    decode_region,
    expand_box,
    hole_box,
)

ENC_KERNELS = (7, 5, 5, 3, 3, 3, 3, 3)
ENC_CHANNELS = (64, 128, 256, 512, 512, 512, 512, 512)
N_FUSE = 6  # fusion blocks after the six finest decoder steps


class BlendBlock(nn.Module):
    """alpha = sigmoid(conv1(lrelu(bn(conv3(lrelu(bn(conv1(x)))))))), 6 → 3 channels."""

    def __init__(self, cin: int = 6, mid: int = 32, cout: int = 3):
        super().__init__()
        self.blend = nn.Sequential(
            SameConv(cin, mid, 1),
            nn.BatchNorm2d(mid),
            nn.LeakyReLU(0.2, inplace=True),
            SameConv(mid, cout, 3),
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(0.2, inplace=True),
            SameConv(cout, cout, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blend(x)


class FusionBlock(nn.Module):
    """Blend a decoder feature's 3-channel rendering with the resized masked image."""

    def __init__(self, c_feature: int):
        super().__init__()
        self.map2img = nn.Sequential(SameConv(c_feature, 3, 1), nn.Sigmoid())
        self.blend = BlendBlock()

    def forward(self, image: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        size = feature.shape[-2:]
        if image.shape[-2:] != size:
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        raw = self.map2img(feature)
        alpha = self.blend(torch.cat([image, raw], dim=1))
        return alpha * raw + (1 - alpha) * image

    def forward_region(self, image: torch.Tensor, feature: torch.Tensor, box, h: int, w: int):
        """The result over ``box`` only, at a level of the image's own size ``h``×``w``.

        ``image`` and ``feature`` cover ``expand_box(box, 1, h, w)`` (the margin the 3×3
        blend conv needs); per pixel the same operations as :meth:`forward`.
        """
        b = self.blend.blend
        raw = self.map2img(feature)
        z = b[2](b[1](b[0](torch.cat([image, raw], dim=1))))
        z = b[5](b[4](b[3].valid(border_pad(z, box, h, w))))
        alpha = b[7](b[6](z))
        e = expand_box(box, 1, h, w)
        inner = (..., slice(box[0] - e[0], box[1] - e[0]), slice(box[2] - e[2], box[3] - e[2]))
        return alpha * raw[inner] + (1 - alpha) * image[inner]


class DFNet(nn.Module):
    def __init__(self, in_channels: int = 4):
        super().__init__()
        cins = (in_channels, *ENC_CHANNELS[:-1])
        for i, (cin, cout, k) in enumerate(zip(cins, ENC_CHANNELS, ENC_KERNELS, strict=True)):
            self.add_module(f"en_{i}", EncoderBlock(cin, cout, k, plain=i == 0))
        # Decoder step i (coarse to fine) has skip = feature list [input, en_0..en_7][-2 - i]
        # and is stored as de_{7 - i}; its output has the skip's channel count.
        feats = (in_channels, *ENC_CHANNELS)
        decoders, c_below = [], ENC_CHANNELS[-1]
        for i in range(len(ENC_CHANNELS)):
            c_skip = feats[-2 - i]
            decoders.append(DecoderBlock(c_below, c_skip, c_skip))
            c_below = c_skip
        for j, block in enumerate(reversed(decoders)):  # registered de_0 first, as stored
            self.add_module(f"de_{j}", block)
        for j in range(N_FUSE):  # fuse_j follows de_j
            self.add_module(f"fuse_{j}", FusionBlock(feats[j]))
        self.roi = True  # first_output decodes only the hole's bounding box in eval mode

    def forward(self, masked_image: torch.Tensor, known: torch.Tensor) -> list[torch.Tensor]:
        x = torch.cat([masked_image, known], dim=1)
        feats = [x]
        for i in range(len(ENC_CHANNELS)):
            feats.append(getattr(self, f"en_{i}")(feats[-1]))
        out = feats[-1]
        results = []
        for i in range(len(ENC_CHANNELS)):
            j = 7 - i
            out = getattr(self, f"de_{j}")(out, feats[-2 - i])
            if j < N_FUSE:
                results.append(getattr(self, f"fuse_{j}")(masked_image, out))
        return results[::-1]

    def first_output(self, masked_image: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """``forward(...)[0]`` inside the hole (``known < 1``); see the module docstring."""
        x = torch.cat([masked_image, known], dim=1)
        feats = [x]
        for i in range(len(ENC_CHANNELS)):
            feats.append(getattr(self, f"en_{i}")(feats[-1]))
        blocks = [getattr(self, f"de_{7 - i}") for i in range(len(ENC_CHANNELS))]
        skips = feats[-2::-1]
        h, w = x.shape[-2:]
        box = hole_box(1 - known) if (self.roi and not self.training) else None
        if box is None or box == (0, h, 0, w):
            out = feats[-1]
            for block, skip in zip(blocks, skips, strict=True):
                out = block(out, skip)
            return self.fuse_0(masked_image, out)
        e = expand_box(box, 1, h, w)
        feature = decode_region(blocks, feats[-1], skips, e)
        del feats, skips
        part = self.fuse_0.forward_region(masked_image[..., e[0]:e[1], e[2]:e[3]], feature,
                                          box, h, w)
        out = masked_image.clone()
        out[..., box[0]:box[1], box[2]:box[3]] = part
        return out
