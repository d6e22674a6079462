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


# -- irregular masks for training ------------------------------------------------------------
# In the style of the partial-convolution mask set (Liu et al. 2018): thick random-walk
# strokes, round/elliptic blobs and a few rectangles, added until a coverage drawn uniformly
# from a range is reached. Sizes scale with the image so a mask looks alike at any resolution.

_SHAPE_KINDS = ("stroke", "blob", "box")
_SHAPE_WEIGHTS = (0.55, 0.3, 0.15)


def _draw_stroke(canvas: np.ndarray, rng: np.random.Generator, scale: float) -> None:
    """A random walk of 2–8 segments with one random thickness, drawn with round joins."""
    import cv2

    h, w = canvas.shape
    side = min(h, w)
    thickness = max(1, int(rng.uniform(0.01, 0.06) * side * scale))
    y, x = float(rng.uniform(0, h)), float(rng.uniform(0, w))
    angle = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(2, 9))):
        angle += rng.normal(0, 0.9)  # gently curving walk, as hand-drawn strokes are
        length = rng.uniform(0.05, 0.25) * side * scale
        ny = float(np.clip(y + length * np.sin(angle), 0, h - 1))
        nx = float(np.clip(x + length * np.cos(angle), 0, w - 1))
        cv2.line(canvas, (int(x), int(y)), (int(nx), int(ny)), 1, thickness, cv2.LINE_8)
        cv2.circle(canvas, (int(nx), int(ny)), thickness // 2, 1, -1)
        y, x = ny, nx


def _draw_blob(canvas: np.ndarray, rng: np.random.Generator, scale: float) -> None:
    """A filled, randomly rotated ellipse."""
    import cv2

    h, w = canvas.shape
    side = min(h, w)
    axes = (
        max(1, int(rng.uniform(0.03, 0.18) * side * scale)),
        max(1, int(rng.uniform(0.03, 0.18) * side * scale)),
    )
    centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
    cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)


def _draw_box(canvas: np.ndarray, rng: np.random.Generator, scale: float) -> None:
    """An axis-aligned filled rectangle (the benchmark's own holes are squares)."""
    h, w = canvas.shape
    side = min(h, w)
    bh = max(1, int(rng.uniform(0.08, 0.4) * side * scale))
    bw = max(1, int(rng.uniform(0.08, 0.4) * side * scale))
    top = int(rng.integers(0, max(1, h - bh + 1)))
    left = int(rng.integers(0, max(1, w - bw + 1)))
    canvas[top : top + bh, left : left + bw] = 1


_DRAW = {"stroke": _draw_stroke, "blob": _draw_blob, "box": _draw_box}


def irregular_mask(
    height: int,
    width: int,
    seed: int | np.random.Generator,
    coverage: tuple[float, float] = (0.1, 0.5),
    max_shapes: int = 400,
) -> np.ndarray:
    """A random irregular hole mask, ``bool[height, width]`` (True = hole).

    A target coverage (hole fraction of all pixels) is drawn uniformly from ``coverage`` =
    (low, high), 0 < low <= high < 1; shapes (strokes, blobs, boxes) are added until the hole
    reaches the target. A shape that would push the hole past ``high`` is rejected and later
    shapes are drawn smaller, so the result lies in [low, high] except when ``max_shapes``
    proposals run out first (then it is below the target; never above ``high``).
    The same ``seed`` (int) gives the same mask; a ``Generator`` is advanced in place.
    """
    lo, hi = coverage
    if not 0 < lo <= hi < 1:
        raise ValueError(f"coverage must satisfy 0 < low <= high < 1, got {coverage}")
    if height < 1 or width < 1:
        raise ValueError(f"mask size must be positive, got {height}x{width}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    target = rng.uniform(lo, hi)
    total = height * width
    canvas = np.zeros((height, width), dtype=np.uint8)
    filled = 0
    scale = 1.0
    for _ in range(max_shapes):
        kind = _SHAPE_KINDS[int(rng.choice(len(_SHAPE_KINDS), p=_SHAPE_WEIGHTS))]
        trial = canvas.copy()
        _DRAW[kind](trial, rng, scale)
        n = int(np.count_nonzero(trial))
        if n > hi * total:
            scale *= 0.7  # too big a step: try smaller shapes
            continue
        canvas, filled = trial, n
        if filled >= target * total:
            break
    return canvas.astype(bool)


def hole_fraction(mask: np.ndarray) -> float:
    """Fraction of pixels that are hole, in [0, 1]."""
    return float(np.count_nonzero(mask)) / float(mask.size)
