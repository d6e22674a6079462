"""Hole masks. In memory a mask is ``bool[H, W]`` with ``True`` = hole."""

from __future__ import annotations

import numpy as np


def centre_square_mask(height: int, width: int, fraction: float = 1 / 3) -> np.ndarray:
    """A centred square hole with side ``round(fraction * min(height, width))``.

    The default gives the protocol's hole: 341 px at 1024 (as in the authors' test inputs),
    512 at 1536, 597 at 1792, 683 at 2048. The offset is ``(side_of_image - hole) // 2``.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"hole fraction must be in (0, 1), got {fraction}")
    side = int(round(fraction * min(height, width)))
    side = max(side, 1)
    top, left = (height - side) // 2, (width - side) // 2
    mask = np.zeros((height, width), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def hole_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the hole, bottom/right exclusive."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1
