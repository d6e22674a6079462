"""bench.resize's nearest-neighbour convention and bench.masks' centre holes."""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
import pytest
from PIL import Image

from bench.masks import centre_square_mask, hole_bbox
from bench.resize import centre_square, nearest_indices, resize, resize_nearest

SIZE_PAIRS = [(2048, 1024), (3088, 2048), (2056, 1792), (2572, 1536), (1740, 1024), (7, 3),
              (5, 8), (10, 10), (100, 33), (1024, 341)]


@pytest.mark.parametrize("n_in, n_out", SIZE_PAIRS + [(2048, 1536), (2048, 1792)])
def test_index_formula(n_in, n_out):
    """Output i samples floor((i + 1/2) * n_in / n_out), in exact arithmetic."""
    got = nearest_indices(n_in, n_out)
    want = [int((i + Fraction(1, 2)) * n_in / n_out) for i in range(n_out)]  # floor, exact
    assert got.tolist() == want
    # Centre-aligned: each sample's centre is within half an input pixel of the output centre.
    centre_out = (np.arange(n_out) + 0.5) * n_in / n_out
    assert np.all(np.abs(got + 0.5 - centre_out) <= 0.5 + 1e-9)
    assert got.min() >= 0 and got.max() <= n_in - 1


def test_integer_factors_pick_the_middle():
    assert nearest_indices(8, 4).tolist() == [1, 3, 5, 7]  # second of each pair, never first
    assert nearest_indices(9, 3).tolist() == [1, 4, 7]  # the middle of each triple
    assert nearest_indices(16, 4).tolist() == [2, 6, 10, 14]
    assert nearest_indices(5, 5).tolist() == [0, 1, 2, 3, 4]  # identity


def test_ties_take_the_pixel_after_the_boundary():
    # 2048 -> 1536: output 1's centre (1.5 * 4/3 = 2.0) lies on the boundary of pixels 1 and 2.
    assert nearest_indices(2048, 1536)[1] == 2
    # 1024 -> 341: output 170's centre is exactly 512.0.
    assert nearest_indices(1024, 341)[170] == 512


@pytest.mark.parametrize(
    "n_in, n_out", [(2048, 1024), (4096, 2048), (3088, 2048), (2572, 1536), (7, 3), (5, 8),
                    (100, 33), (1000, 250), (1740, 1024)]
)
def test_equals_pil_and_opencv_exact(n_in, n_out):
    """Where PIL's and OpenCV's float arithmetic is exact or no tie occurs, all three agree."""
    rng = np.random.default_rng(n_in + n_out)
    img = rng.integers(0, 256, (n_in, n_in + 3, 3), dtype=np.uint8)
    size = (n_out, n_out + 1)
    ours = resize_nearest(img, size)
    pil = np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.NEAREST))
    exact = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_NEAREST_EXACT)
    assert ours.shape == (*size, 3)
    np.testing.assert_array_equal(ours, pil)
    np.testing.assert_array_equal(ours, exact)


def test_differs_from_pil_only_at_ties():
    """2048 -> 1536 has ties at every third output; PIL rounds some of them down."""
    n_in, n_out = 2048, 1536
    ours = nearest_indices(n_in, n_out)
    row = np.arange(n_in, dtype=np.int32)[None, :]
    pil = np.asarray(Image.fromarray(row, mode="I").resize((n_out, 1), Image.NEAREST))[0]
    differ = np.flatnonzero(ours != pil)
    assert differ.size > 0
    assert np.all((2 * differ + 1) * n_in % (2 * n_out) == 0)  # all are exact ties
    assert np.all(ours[differ] - pil[differ] == 1)  # we take the later pixel


def test_legacy_opencv_nearest_differs():
    """OpenCV's INTER_NEAREST samples floor(i * k): the top-left of each block."""
    img = np.arange(8, dtype=np.uint8).reshape(1, 8).repeat(3, 0)[..., None].repeat(3, 2)
    legacy = cv2.resize(img, (4, 3), interpolation=cv2.INTER_NEAREST)[0, :, 0]
    assert legacy.tolist() == [0, 2, 4, 6]
    assert resize_nearest(img, (3, 4))[0, :, 0].tolist() == [1, 3, 5, 7]


def test_resize_nearest_any_dtype_and_mask():
    mask = np.zeros((9, 9), bool)
    mask[3:6, 3:6] = True
    small = resize_nearest(mask, (3, 3))
    assert small.dtype == bool and small.tolist() == [[False] * 3, [False, True, False],
                                                      [False] * 3]


def test_resize_modes():
    img = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize(img, (20, 30)), resize_nearest(img, (20, 30)))
    area = resize(img, (20, 30), "area")
    assert area.shape == (20, 30, 3) and area.dtype == np.uint8
    block = img[:2, :2].astype(float).mean(axis=(0, 1))
    np.testing.assert_allclose(area[0, 0], block, atol=0.51)  # a 2x2 box average
    with pytest.raises(ValueError, match="unknown resize mode"):
        resize(img, (20, 30), "bicubic")


@pytest.mark.parametrize("h, w", [(30, 50), (50, 30), (31, 31), (40, 43)])
def test_centre_square(h, w):
    img = np.arange(h * w).reshape(h, w)
    sq = centre_square(img)
    s = min(h, w)
    assert sq.shape == (s, s)
    top, left = (h - s) // 2, (w - s) // 2
    assert sq[0, 0] == img[top, left]


@pytest.mark.parametrize("n, side", [(1024, 341), (1536, 512), (1792, 597), (2048, 683)])
def test_protocol_centre_masks(n, side):
    mask = centre_square_mask(n, n)
    assert mask.dtype == bool and mask.shape == (n, n)
    top, left, bottom, right = hole_bbox(mask)
    assert bottom - top == side and right - left == side
    assert mask.sum() == side * side  # one solid square
    assert mask[top:bottom, left:right].all()
    # Centred: margins equal, or the far margin one pixel larger when n - side is odd.
    assert top == left == (n - side) // 2
    assert (n - bottom) - top in (0, 1) and (n - right) - left in (0, 1)


def test_centre_mask_non_square_and_fraction():
    mask = centre_square_mask(300, 600)
    top, left, bottom, right = hole_bbox(mask)
    assert bottom - top == right - left == 100  # side from the shorter side
    assert top == 100 and left == 250
    top, left, bottom, right = hole_bbox(centre_square_mask(100, 100, fraction=0.5))
    assert (top, left, bottom, right) == (25, 25, 75, 75)
    for bad in (0, 1, -0.2, 1.5):
        with pytest.raises(ValueError):
            centre_square_mask(100, 100, fraction=bad)
