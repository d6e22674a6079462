"""Resizing with one documented pixel convention.

Nearest neighbour (the paper's "nearest-neighbour downsampling"): pixel *centres* are
aligned. Output pixel ``i`` (0-based) of ``n_out`` samples input pixel
``floor((i + 0.5) * n_in / n_out)``, computed exactly in integers. For an integer factor
``k = n_in / n_out`` this picks the pixel at offset ``k // 2`` in every ``k``-block (e.g. the
second of each pair when halving), never the first, so every sample lies within half an
input pixel of the output pixel's centre. An output centre that falls exactly on a pixel
boundary (a tie) takes the pixel after the boundary. This equals PIL's ``NEAREST`` and
OpenCV's ``INTER_NEAREST_EXACT`` except at such ties when ``n_in / n_out`` is not exact in
binary floating point: their float arithmetic then rounds some ties down (e.g. 303 of the
1536 rows at 2048 -> 1536). It differs from OpenCV's legacy ``INTER_NEAREST``
(``floor(i * n_in / n_out)``, biased to the top-left).

Area: OpenCV ``INTER_AREA`` (box average, for an anti-aliased alternative).
"""

from __future__ import annotations

import cv2
import numpy as np

RESIZE_MODES = ("nearest", "area")


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source indices for centre-aligned nearest sampling (see module docstring)."""
    i = np.arange(n_out, dtype=np.int64)
    return ((2 * i + 1) * n_in) // (2 * n_out)


def resize_nearest(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest resize of ``arr`` (H, W[, C]) to ``size`` = (height, width); any dtype."""
    h, w = size
    rows = nearest_indices(arr.shape[0], h)
    cols = nearest_indices(arr.shape[1], w)
    return arr[rows[:, None], cols[None, :]]


def resize(arr: np.ndarray, size: tuple[int, int], mode: str = "nearest") -> np.ndarray:
    """Resize an image to ``size`` = (height, width) with ``mode`` in ``RESIZE_MODES``."""
    if mode == "nearest":
        return resize_nearest(arr, size)
    if mode == "area":
        return cv2.resize(arr, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    raise ValueError(f"unknown resize mode {mode!r}; choose one of {RESIZE_MODES}")


def centre_square(arr: np.ndarray) -> np.ndarray:
    """The largest centred square crop (the extra pixel of an odd margin goes after)."""
    h, w = arr.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return arr[top : top + s, left : left + s]
