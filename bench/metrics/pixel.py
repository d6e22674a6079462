"""Pixel metrics of the benchmark protocol (DESIGN.md, "Metrics"): L1, PSNR, SSIM.

Every function takes ``uint8[H, W, 3]`` RGB arrays with values 0–255 and returns a Python
``float``; masks are ``bool[H, W]`` with ``True`` = hole. Wrong shapes or dtypes raise
``ValueError`` (the runner validates user files earlier, so reaching one is a programming
error, not a user mistake).

- ``l1``: mean ``|out - gt|`` over all pixels and channels, 0–255 scale (exact integer sums).
- ``psnr``: ``10 log10(255² / MSE)``; ``inf`` when the images (or hole regions) are identical.
- ``ssim``: Gaussian-window SSIM equal to scikit-image's
  ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=255, channel_axis=-1)``, computed >10× faster at 2048 px (see ``ssim``).

The input checks here are shared by every metric of the package.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np

# -- SSIM constants (Wang et al. 2004, as scikit-image implements them) ------------------------
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # scikit-image's choice for gaussian_weights=True: an 11-tap window
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # = 5, rounded as scipy.ndimage does
SSIM_WIN = 2 * SSIM_RADIUS + 1  # = 11
SSIM_K1 = 0.01
SSIM_K2 = 0.03
DATA_RANGE = 255.0
_C1 = (SSIM_K1 * DATA_RANGE) ** 2
_C2 = (SSIM_K2 * DATA_RANGE) ** 2
# Output rows per strip: the strip's ~8 float32 work maps then fit in L3 cache at 2048 px wide.
_STRIP_ROWS = 64


# -- validation ---------------------------------------------------------------------------------
def check_image(arr: Any, name: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(arr).__name__}")
    if arr.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8 (values 0-255), got {arr.dtype}")
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{name}: expected shape (H, W, 3) RGB, got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: empty image {arr.shape}")
    return np.ascontiguousarray(arr)  # e.g. a channel-reversed view: OpenCV needs plain rows


def check_pair(out: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    out = check_image(out, "out")
    gt = check_image(gt, "gt")
    if out.shape != gt.shape:
        raise ValueError(f"out and gt differ in shape: {out.shape} vs {gt.shape}")
    return out, gt


def check_mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        kind = mask.dtype if isinstance(mask, np.ndarray) else type(mask).__name__
        raise ValueError(f"mask: expected a bool array (True = hole), got {kind}")
    if mask.shape != tuple(shape[:2]):
        raise ValueError(f"mask: shape {mask.shape} does not match the image's {shape[:2]}")
    if not mask.any():
        raise ValueError("mask: has no hole pixels, so hole-only metrics are undefined")
    return mask


def _abs_diff(out: np.ndarray, gt: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """|out - gt| as uint8 (exact), flattened to the hole pixels when a mask is given."""
    diff = cv2.absdiff(out, gt)
    if mask is not None:
        diff = diff[check_mask(mask, out.shape)]
    return diff


# -- L1 / PSNR ----------------------------------------------------------------------------------
def l1(out: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute difference on the 0–255 scale over all pixels and channels.

    With ``mask`` (bool HxW, True = hole) only hole pixels count (all three channels each).
    Computed from an exact integer sum.
    """
    diff = _abs_diff(*check_pair(out, gt), mask)
    return int(diff.sum(dtype=np.uint64)) / diff.size


def psnr(out: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB with data range 255: ``10 log10(255² / MSE)``.

    MSE is taken over all pixels and channels (or over the hole pixels with ``mask``), from
    an exact integer sum. Returns ``math.inf`` when the compared pixels are identical.
    """
    diff = _abs_diff(*check_pair(out, gt), mask).astype(np.uint16)
    sq_sum = int(np.square(diff).sum(dtype=np.uint64))  # 255² fits uint16; the sum does not
    if sq_sum == 0:
        return math.inf
    mse = sq_sum / diff.size
    return 10.0 * math.log10(DATA_RANGE**2 / mse)


# -- SSIM ---------------------------------------------------------------------------------------
def _gaussian_kernel() -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian: exp(-x²/2σ²) on x = -r..r, normalised to sum 1."""
    x = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return k / k.sum()


_KERNEL = _gaussian_kernel()


def _filter_valid_rows(arr: np.ndarray) -> np.ndarray:
    """Gaussian-filter float32 ``arr`` and drop the ``SSIM_RADIUS`` rows at top and bottom.

    Rows/columns within the radius of the edge depend on the border mode; callers only use
    the interior, which equals scipy's result whatever the mode. Dropping rows keeps the
    result contiguous; the edge columns are dropped when summing.
    """
    res = cv2.sepFilter2D(arr, cv2.CV_32F, _KERNEL, _KERNEL, borderType=cv2.BORDER_REFLECT)
    return res[SSIM_RADIUS:-SSIM_RADIUS]


def _ssim_strip(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SSIM map (float32) of the interior rows of a uint8 strip: shape (h - 10, w, 3).

    Columns within the radius of the left/right edges are not valid and must be discarded.

    Formulation (exact algebra, chosen for float32 precision): with p = x + y, m = x - y and
    G the Gaussian filter, Var(p) = G*p² - (G*p)² and Var(m) = G*m² - (G*m)² give
    2 cov(x, y) = (Var p - Var m) / 2 and var x + var y = (Var p + Var m) / 2, and the means
    give 2 mx my = ((G*p)² - (G*m)²) / 2 and mx² + my² = ((G*p)² + (G*m)²) / 2. So

        SSIM = ((G*p)² - (G*m)² + 2 C1) (Var p - Var m + 2 C2)
             / ((G*p)² + (G*m)² + 2 C1) (Var p + Var m + 2 C2).

    The difference between the images is carried by m, which is small and exact, instead of
    by a cancellation of large float32 moments; and p is taken about one integer per channel
    (the strip's rounded mean of ``x``, twice, exact in float32), which the variances do not
    see. Measured mean-SSIM error against scikit-image's float64: ~1e-9 on photos, < 1e-7
    on flat images. Where ``x == y`` in a window, m = 0 and the value is exactly 1.
    """
    h, w = x.shape[:2]
    # Per-channel constants as one (w*3,) row: numpy broadcasting over a trailing axis of
    # length 3 is ~10x slower than over a long row.
    centre = np.tile(np.round(np.array(cv2.mean(x)[:3], dtype=np.float32)), w)
    fx = x.reshape(h, w * 3).astype(np.float32)
    fx -= centre
    fy = y.reshape(h, w * 3).astype(np.float32)
    fy -= centre
    p = fx + fy
    m = np.subtract(fx, fy, out=fx)
    del fy

    def smooth(a: np.ndarray) -> np.ndarray:
        return _filter_valid_rows(a.reshape(h, w, 3)).reshape(h - 2 * SSIM_RADIUS, w * 3)

    mean_p = smooth(p)
    mean_m = smooth(m)
    p *= p
    m *= m
    var_p = smooth(p)
    var_m = smooth(m)
    del p, m
    sq_m = mean_m * mean_m
    var_m -= sq_m
    np.multiply(mean_p, mean_p, out=mean_m)
    var_p -= mean_m
    num_cs = cv2.addWeighted(var_p, 1.0, var_m, -1.0, 2 * _C2)
    den_cs = cv2.addWeighted(var_p, 1.0, var_m, 1.0, 2 * _C2)
    mean_p += 2 * centre  # back to the uncentred G*(x + y) for the luminance term
    mean_p *= mean_p
    num_l = cv2.addWeighted(mean_p, 1.0, sq_m, -1.0, 2 * _C1)
    den_l = cv2.addWeighted(mean_p, 1.0, sq_m, 1.0, 2 * _C1)
    num_l *= num_cs
    den_l *= den_cs
    num_l /= den_l
    return num_l.reshape(h - 2 * SSIM_RADIUS, w, 3)


def _ssim_interior(x: np.ndarray, y: np.ndarray, out_map: np.ndarray | None = None) -> float:
    """Sum of the SSIM map over the interior (radius cropped on every side), in strips.

    When ``out_map`` (float32, shape (h - 10, w - 10, 3)) is given the map is written there.
    Strips run on ``cv2.getNumThreads()`` threads (OpenCV and numpy release the GIL; a strip
    is too small for OpenCV to parallelise by itself), so ``cv2.setNumThreads(1)`` makes it
    single-threaded.
    """
    h, w = x.shape[:2]
    r = SSIM_RADIUS

    def strip_sum(top: int) -> float:
        bottom = min(top + _STRIP_ROWS, h - r)
        strip = _ssim_strip(x[top - r : bottom + r], y[top - r : bottom + r])[:, r : w - r]
        if out_map is not None:
            out_map[top - r : bottom - r] = strip
        return sum(cv2.sumElems(strip)[:3])  # OpenCV accumulates in float64

    tops = range(r, h - r, _STRIP_ROWS)
    workers = min(cv2.getNumThreads(), len(tops))
    if workers <= 1:
        return sum(map(strip_sum, tops))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(strip_sum, tops))  # map keeps order: a deterministic sum


def _check_ssim_size(shape: tuple[int, ...]) -> None:
    if min(shape[:2]) < SSIM_WIN:
        raise ValueError(f"SSIM needs images of at least {SSIM_WIN}x{SSIM_WIN} px, got {shape}")


def ssim(out: np.ndarray, gt: np.ndarray) -> float:
    """Mean SSIM of two uint8 RGB images, equal to scikit-image's Gaussian SSIM.

    Same numbers as ``skimage.metrics.structural_similarity(out, gt, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1)``: 11x11 Gaussian
    window (σ 1.5, truncated at 3.5 σ), K1 0.01, K2 0.03, population covariance, per channel
    then averaged, the map cropped by 5 px on each side before averaging. Measured agreement
    is better than 1e-7 (see tests and ``python -m benchmarks.ssim_speed``).

    Speed: separable OpenCV float32 filters on row strips that stay in cache (run on
    ``cv2.getNumThreads()`` threads), four filtered maps instead of five (of x + y and
    x - y, see ``_ssim_strip``), and windows in which the images are
    identical (SSIM exactly 1, as in scikit-image) are skipped: only the bounding box of the
    differing pixels, grown by the window radius, is computed. Needs both sides >= 11 px.
    """
    out, gt = check_pair(out, gt)
    _check_ssim_size(out.shape)
    h, w = out.shape[:2]
    r = SSIM_RADIUS
    n_valid = (h - 2 * r) * (w - 2 * r) * 3
    differs = cv2.absdiff(out, gt).reshape(h, w * 3)  # 2-D: fast reductions along rows
    rows = np.flatnonzero(differs.max(axis=1))
    if rows.size == 0:
        return 1.0
    cols = np.flatnonzero(differs.max(axis=0).reshape(w, 3).max(axis=1))
    # Interior output pixels whose window touches a differing pixel: [lo, hi) per axis.
    r_lo, r_hi = max(r, int(rows[0]) - r), min(h - r, int(rows[-1]) + 1 + r)
    c_lo, c_hi = max(r, int(cols[0]) - r), min(w - r, int(cols[-1]) + 1 + r)
    box = (slice(r_lo - r, r_hi + r), slice(c_lo - r, c_hi + r))
    computed = _ssim_interior(out[box], gt[box])
    n_box = (r_hi - r_lo) * (c_hi - c_lo) * 3
    return (computed + (n_valid - n_box)) / n_valid


def ssim_map(out: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Full-size SSIM map, float32 (H, W, 3), like scikit-image's ``full=True`` map.

    The border (within 5 px of an edge) uses scipy's 'reflect' padding as scikit-image does;
    ``ssim`` averages only the interior. Per-pixel values agree with scikit-image to ~1e-4
    (float32 arithmetic); use it for visualising where a fill is structurally wrong.
    """
    out, gt = check_pair(out, gt)
    _check_ssim_size(out.shape)
    r = SSIM_RADIUS
    # Padding with BORDER_REFLECT (dcba|abcd) is scipy's mode='reflect' for each axis.
    xp = cv2.copyMakeBorder(out, r, r, r, r, cv2.BORDER_REFLECT)
    yp = cv2.copyMakeBorder(gt, r, r, r, r, cv2.BORDER_REFLECT)
    result = np.empty(out.shape, dtype=np.float32)
    _ssim_interior(xp, yp, out_map=result)
    return result
