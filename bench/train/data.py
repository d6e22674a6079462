"""Training and validation data for the refinement stage.

Training samples follow the paper's recipe:

1. From every photo, ``squares_per_image`` random *largest* squares (side = the shorter
   side, at a random offset along the longer one) are cut once, at the start.
2. Per sample, a square is reduced (nearest, the benchmark's own downsampling) to a random
   size N from ``sizes`` (never upsampled), and an irregular mask
   (:func:`bench.masks.irregular_mask`) is drawn over the whole N×N square.
3. The coarse base fills the hole at 512 px and is upscaled bilinearly to N×N — the same
   code the two-stage pipeline runs at inference (:func:`bench.methods.two_stage.upscaled_coarse`).
4. ``patches_per_square`` random ``patch``×``patch`` windows whose hole covers a fraction in
   ``patch_hole`` (10–90 % by default) are cut, and their 20-channel input is built by
   :func:`bench.methods.two_stage.shifted_stack` with the shift of the *whole* N×N image
   (100/512 × N), so a patch sees exactly what the same pixels see at inference.

Validation items are the benchmark protocol itself on held-out photos: centre square,
nearest reduction to N, centred square hole of side N/3.

Every random choice comes from one ``numpy.random.Generator`` whose state is saved with
the training checkpoint, so a resumed run continues the same sample stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..io import read_image, sha256_file
from ..masks import centre_square_mask, hole_fraction, irregular_mask
from ..methods.two_stage import matched_image, refine_shift, shifted_stack, upscaled_coarse
from ..resize import centre_square, nearest_indices, resize_nearest

log = logging.getLogger(__name__)

#: A coarse base: ``(image uint8[H, W, 3] RGB, hole bool[H, W]) -> uint8[H, W, 3]``, i.e. an
#: Inpainter instance (the two-stage pipeline resizes to 512 around it).
CoarseMethod = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class DataConfig:
    """How training patches are made (all sizes in pixels, fractions in [0, 1])."""

    patch: int = 256
    sizes: tuple[int, ...] = (1024, 1280, 1536, 1792, 2048)
    mask_coverage: tuple[float, float] = (0.1, 0.5)
    patch_hole: tuple[float, float] = (0.1, 0.9)
    squares_per_image: int = 3
    patches_per_square: int = 2

    def check(self) -> None:
        if self.patch % 32 or self.patch <= 0:
            raise UserError(f"--patch: {self.patch} is not a positive multiple of 32; use e.g. 256")
        for n in self.sizes:
            if n % 128 or n < self.patch:
                raise UserError(
                    f"--sizes: {n} must be a multiple of 128 (whole refinement shift) and at "
                    f"least --patch {self.patch}"
                )
        lo, hi = self.patch_hole
        if not 0 <= lo < hi <= 1:
            raise UserError(f"patch hole range {self.patch_hole} must satisfy 0 <= low < high <= 1")


# -- image selection ---------------------------------------------------------------------------
def select_images(
    files: Sequence[Path], exclude_names: set[str], exclude_hashes: set[str]
) -> tuple[list[Path], list[Path]]:
    """Split ``files`` into (kept, excluded) by file name or sha256 content."""
    kept, excluded = [], []
    for f in files:
        if f.name in exclude_names or (exclude_hashes and sha256_file(f) in exclude_hashes):
            excluded.append(f)
        else:
            kept.append(f)
    return kept, excluded


def read_exclude_list(path: Path) -> set[str]:
    """File names (one a line, ``#`` comments allowed) from an exclude-list file."""
    if not path.is_file():
        raise UserError(f"{path}: exclude list not found; pass a text file with one image name a line")
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(Path(line).name)
    return names


# -- training squares and patches -------------------------------------------------------------
def largest_squares(height: int, width: int, n: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """``n`` random largest squares ``(top, left, side)`` of an image of ``height``×``width``."""
    side = min(height, width)
    out = []
    for _ in range(n):
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        out.append((top, left, side))
    return out


def load_squares(
    files: Sequence[Path], per_image: int, min_side: int, rng: np.random.Generator
) -> list[tuple[str, np.ndarray]]:
    """Cut ``per_image`` random largest squares from every file (uint8 RGB, full resolution).

    Photos whose shorter side is below ``min_side`` are skipped (and logged): training never
    upsamples.
    """
    squares = []
    for f in files:
        img = read_image(f)
        h, w = img.shape[:2]
        if min(h, w) < min_side:
            log.warning("%s: shorter side %d < smallest training size %d; skipped",
                        f.name, min(h, w), min_side)
            continue
        for top, left, side in largest_squares(h, w, per_image, rng):
            squares.append((f.name, np.ascontiguousarray(img[top : top + side, left : left + side])))
    return squares


def hole_table(hole: np.ndarray) -> np.ndarray:
    """Summed-area table of ``hole`` (int32[H + 1, W + 1]) for :func:`pick_patch`."""
    import cv2

    return cv2.integral(hole.view(np.uint8), sdepth=cv2.CV_32S)


def pick_patch(
    table: np.ndarray, patch: int, hole_range: tuple[float, float], rng: np.random.Generator, tries: int = 64
) -> tuple[int, int] | None:
    """Top-left of a random ``patch``² window whose hole fraction lies in ``hole_range``.

    ``table`` is :func:`hole_table` of the hole mask, so each try is O(1). None if no try
    succeeded.
    """
    n_h, n_w = table.shape[0] - 1, table.shape[1] - 1
    area = patch * patch
    lo, hi = hole_range
    for _ in range(tries):
        top = int(rng.integers(0, n_h - patch + 1))
        left = int(rng.integers(0, n_w - patch + 1))
        b, r = top + patch, left + patch
        frac = (int(table[b, r]) - int(table[top, r]) - int(table[b, left]) + int(table[top, left])) / area
        if lo <= frac <= hi:
            return top, left
    return None


def window_stack(
    matched: np.ndarray, hole: np.ndarray, top: int, left: int, patch: int, shift: int, no_shift: bool = False
) -> torch.Tensor:
    """The 20-channel refinement input of one window, float32[20, patch, patch].

    Equal to ``shifted_stack`` of the whole image cropped to the window, but only builds a
    window widened by ``shift`` on each side: pixels of the widened window outside the image
    are given the values ``shifted_stack`` gives pixels shifted in from outside (image
    1/255, mask 1), so the crop is identical.
    """
    n_h, n_w = hole.shape
    big = patch + 2 * shift
    img = torch.full((1, 3, big, big), 1.0, dtype=torch.float32) / 255  # 1/255 as in float32
    msk = torch.ones((1, 1, big, big), dtype=torch.float32)
    y0, x0 = top - shift, left - shift
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + big, n_h), min(x0 + big, n_w)
    crop = torch.from_numpy(np.ascontiguousarray(matched[sy0:sy1, sx0:sx1])).permute(2, 0, 1).float().div(255)
    img[0, :, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = crop
    inside = torch.from_numpy(hole[sy0:sy1, sx0:sx1].astype(np.float32))
    msk[0, 0, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = inside
    stack = shifted_stack(img, msk, shift, no_shift=no_shift)
    return stack[0, :, shift : shift + patch, shift : shift + patch].contiguous()


@dataclass
class Batch:
    """stack float32[B, 20, P, P]; gt float32[B, 3, P, P] in [0, 1]; hole float32[B, 1, P, P]."""

    stack: torch.Tensor
    gt: torch.Tensor
    hole: torch.Tensor


class PatchSampler:
    """Draws training batches (see module docstring); ``rng`` state is checkpointable."""

    def __init__(
        self,
        squares: list[tuple[str, np.ndarray]],
        coarse: CoarseMethod,
        config: DataConfig,
        rng: np.random.Generator,
        no_shift: bool = False,
    ):
        if not squares:
            raise UserError("no training squares: every training image was excluded or too small")
        self.squares = squares
        self.coarse = coarse
        self.config = config
        self.rng = rng
        self.no_shift = no_shift

    def _square_sample(self):
        """One (N×N ground truth, hole, matched) triple from a random square."""
        cfg, rng = self.config, self.rng
        _, sq = self.squares[int(rng.integers(len(self.squares)))]
        sizes = [n for n in cfg.sizes if n <= sq.shape[0]]
        n = int(sizes[int(rng.integers(len(sizes)))])
        rows = nearest_indices(sq.shape[0], n)  # = resize_nearest, but two 1-D takes are faster
        # Mirror half the samples (cheap extra variety; photos are left/right symmetric).
        cols = rows[::-1] if rng.random() < 0.5 else rows
        gt = np.ascontiguousarray(sq[rows][:, cols])
        hole = irregular_mask(n, n, rng, cfg.mask_coverage)
        work = gt.copy()
        work[hole] = 0
        matched = matched_image(gt, hole, upscaled_coarse(self.coarse, work, hole))
        return gt, hole, matched

    def batch(self, size: int) -> Batch:
        cfg = self.config
        stacks, gts, holes = [], [], []
        while len(stacks) < size:
            gt, hole, matched = self._square_sample()
            shift = refine_shift(hole.shape[0])
            table = hole_table(hole)
            for _ in range(cfg.patches_per_square):
                pos = pick_patch(table, cfg.patch, cfg.patch_hole, self.rng)
                if pos is None or len(stacks) >= size:
                    break
                top, left = pos
                win = (slice(top, top + cfg.patch), slice(left, left + cfg.patch))
                stacks.append(window_stack(matched, hole, top, left, cfg.patch, shift, self.no_shift))
                gts.append(torch.from_numpy(np.ascontiguousarray(gt[win])).permute(2, 0, 1).float().div(255))
                holes.append(torch.from_numpy(hole[win].astype(np.float32))[None])
        return Batch(torch.stack(stacks), torch.stack(gts), torch.stack(holes))


# -- validation: the benchmark protocol on held-out photos -----------------------------------
@dataclass
class ValItem:
    """One held-out photo at one size: gt uint8[N, N, 3], hole bool[N, N], matched uint8."""

    name: str
    size: int
    gt: np.ndarray
    hole: np.ndarray
    matched: np.ndarray


def protocol_item(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark's input at ``size``: centre square, nearest reduction, centre hole N/3."""
    gt = resize_nearest(centre_square(image), (size, size))
    return gt, centre_square_mask(size, size)


def validation_items(files: Sequence[Path], sizes: Sequence[int], coarse: CoarseMethod) -> list[ValItem]:
    """Protocol items for every file and every size its shorter side allows."""
    items = []
    for f in files:
        img = read_image(f)
        for n in sizes:
            if min(img.shape[:2]) < n:
                continue
            gt, hole = protocol_item(img, n)
            work = gt.copy()
            work[hole] = 0
            matched = matched_image(gt, hole, upscaled_coarse(coarse, work, hole))
            items.append(ValItem(f.name, n, gt, hole, matched))
    return items


__all__ = [
    "DataConfig",
    "PatchSampler",
    "ValItem",
    "Batch",
    "hole_fraction",
    "largest_squares",
    "load_squares",
    "hole_table",
    "pick_patch",
    "protocol_item",
    "read_exclude_list",
    "select_images",
    "validation_items",
    "window_stack",
]
