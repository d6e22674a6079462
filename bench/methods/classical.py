"""Classical diffusion baselines: OpenCV Telea / Navier–Stokes and biharmonic inpainting.

``telea`` and ``ns`` call ``cv2.inpaint`` with a neighbourhood radius of 3 px (OpenCV's
documented example value; the radius only sets how many known pixels each hole pixel is
averaged from, so larger radii blur more). Both are fast: about 1 s of CPU at 2048 px with
the protocol's 683x683 hole.

``biharmonic`` computes exactly what scikit-image's ``inpaint_biharmonic`` computes (see
:func:`biharmonic_fill`), but fast enough for 2048 px:

1. *Only a band around the hole matters.* scikit-image solves one equation per hole pixel:
   the 13-point discrete biharmonic stencil (the 5-point Laplacian applied twice) is zero
   there, with the known pixels moved to the right-hand side. A stencil reaches 2 px, so
   the only known pixels that enter the system lie within 2 px of the hole; everything
   farther away has no influence at all. Solving on the hole's bounding box grown by 2 px
   is therefore the *same* linear system, not an approximation. (The one whole-image
   quantity in scikit-image's result is its final clip to the known pixels' per-channel
   min/max; we take those limits from the whole image too.)
2. *A rectangular hole has a fast exact solver.* On a rectangle the system matrix is
   ``A = L_D @ L_D + B @ B.T``, where ``L_D`` is the 5-point Laplacian with zero Dirichlet
   boundary on the hole (diagonalised by the 2-D DST-I, so ``(L_D @ L_D)^-1`` costs two
   FFT-sized transforms) and ``B`` has one unit column per known pixel 4-adjacent to the
   hole (the term of ``L @ L`` that runs through a known pixel). The Woodbury identity
   leaves a dense SPD "capacitance" system of size ``2(h + w)`` (2732 at 2048 px), whose
   matrix is built in closed form from the DST bases with a few ``O(side^3)`` matrix
   products; mirror symmetry splits it into four independent blocks, each factored by
   Cholesky. Agreement with a direct sparse LU solve of the same system: 2e-8 at 1024 px on
   the [0, 1] scale (one 8-bit level is 0.0039); with scikit-image ~1e-12 on small images.
3. *Any other hole* (several regions, non-rectangular, or within 2 px of the image
   border) is solved as a sparse system over the hole's pixels (SuperLU, fill-reducing
   ordering on ``A + A.T``), factored once and solved for the three channels. Exact, but
   heavier: about 4 s / 0.6 GB for 116 k hole pixels (a 341^2 hole) and 20 s / 2.7 GB for
   466 k (a 683^2 hole).

Measured by ``python -m benchmarks.classical_speed`` on one corpus photo with the
protocol's centre hole (2 cores shared with other jobs, load ~7, so wall time is ~2x CPU
time): ours 0.9 s CPU (1.5 s wall) at 1024 and 2.8 s CPU (4.6 s wall) at 2048, ~0.5 GB;
scikit-image's ``inpaint_biharmonic`` on the whole image 5.2 s CPU (15.5 s wall) at 1024 and
38 s CPU (96 s wall, 2.9 GB) at 2048, because it factors the whole system with an ordering
of ``A.T @ A``. The 8-bit outputs at 1024 were identical. ``tests/test_methods_classical.py``
checks equality with scikit-image on small images of every hole kind.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import fft, linalg, ndimage, sparse
from scipy.sparse.linalg import splu

from .base import Inpainter, register

# The 13-point biharmonic stencil (L @ L for the 5-point Laplacian L): (dy, dx, coefficient).
_STENCIL: tuple[tuple[int, int, float], ...] = (
    (0, 0, 20.0),
    (-1, 0, -8.0), (1, 0, -8.0), (0, -1, -8.0), (0, 1, -8.0),
    (-1, -1, 2.0), (-1, 1, 2.0), (1, -1, 2.0), (1, 1, 2.0),
    (-2, 0, 1.0), (2, 0, 1.0), (0, -2, 1.0), (0, 2, 1.0),
)
_REACH = 2  # stencil radius in pixels


# -- OpenCV ---------------------------------------------------------------------------------
class _OpenCVInpainter(Inpainter):
    """Shared wrapper around ``cv2.inpaint``; subclasses pick the algorithm flag."""

    radius: int = 3
    cv_flag: int = cv2.INPAINT_TELEA
    libraries = ("cv2",)

    def _inpaint(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        # cv2.inpaint treats the channels independently, so RGB order is fine as is.
        return cv2.inpaint(image, mask.astype(np.uint8) * 255, self.radius, self.cv_flag)

    def metadata(self) -> dict:
        return {**super().metadata(), "radius": self.radius, "opencv": cv2.__version__}


@register("telea", default=True)
class Telea(_OpenCVInpainter):
    """OpenCV fast-marching inpainting (Telea 2004), radius 3 px."""

    description = "OpenCV fast-marching inpainting (Telea 2004), radius 3 px"
    cv_flag = cv2.INPAINT_TELEA


@register("ns", default=True)
class NavierStokes(_OpenCVInpainter):
    """OpenCV Navier–Stokes inpainting (Bertalmio et al. 2001), radius 3 px."""

    description = "OpenCV Navier-Stokes inpainting (Bertalmio et al. 2001), radius 3 px"
    cv_flag = cv2.INPAINT_NS


# -- biharmonic -----------------------------------------------------------------------------
def biharmonic_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Biharmonic inpainting, equal to ``skimage.restoration.inpaint_biharmonic``.

    ``image`` is float ``[H, W, C]`` (any range; scikit-image uses [0, 1]), ``mask`` bool
    ``[H, W]`` with True = hole. Returns a float64 copy with the hole filled and clipped, per
    channel, to the min/max of the known pixels (as scikit-image does). See the module
    docstring for why solving only around the hole is exact.
    """
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {image.shape}")
    out = np.array(image, dtype=np.float64, copy=True)
    if not mask.any():
        return out
    known = out[~mask]
    lo, hi = known.min(axis=0), known.max(axis=0)
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    top, left = max(ys.min() - _REACH, 0), max(xs.min() - _REACH, 0)
    bottom, right = min(ys.max() + 1 + _REACH, h), min(xs.max() + 1 + _REACH, w)
    crop = (slice(top, bottom), slice(left, right))
    sub_img, sub_mask = out[crop], mask[crop]
    rect = _rectangle_inside(sub_mask)
    if rect is not None:
        t, lft, b, r = rect
        rhs = _rhs_rectangle(sub_img, sub_mask, rect)
        sub_img[t:b, lft:r] = _solve_rectangle(rhs)
    else:
        sub_img[sub_mask] = _solve_sparse(sub_img, sub_mask)
    out[mask] = np.clip(out[mask], lo, hi)
    return out


def _rectangle_inside(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) when the hole is one axis-aligned rectangle whose full
    stencil neighbourhood (2 px) lies inside ``mask``'s array; else None."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    t, b, lft, r = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if mask[t:b, lft:r].all():
        h, w = mask.shape
        if t >= _REACH and lft >= _REACH and b <= h - _REACH and r <= w - _REACH:
            return int(t), int(lft), int(b), int(r)
    return None


def _rhs_rectangle(image: np.ndarray, mask: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    """Right-hand side ``-sum(c * known)`` of the stencil at every pixel of the rectangle."""
    t, lft, b, r = rect
    known = np.where(mask[..., None], 0.0, image)
    band = known[t - _REACH : b + _REACH, lft - _REACH : r + _REACH]
    kern = np.zeros((2 * _REACH + 1, 2 * _REACH + 1))
    for dy, dx, c in _STENCIL:
        kern[dy + _REACH, dx + _REACH] = c
    rhs = np.stack(
        [ndimage.correlate(band[..., ch], kern, mode="constant") for ch in range(band.shape[2])], -1
    )
    return -rhs[_REACH:-_REACH, _REACH:-_REACH]


def _dst_basis(n: int) -> np.ndarray:
    """Orthonormal, symmetric DST-I matrix ``sqrt(2/(n+1)) sin(pi (i+1)(j+1) / (n+1))``."""
    i = np.arange(1, n + 1)
    return np.sqrt(2.0 / (n + 1)) * np.sin(np.pi * np.outer(i, i) / (n + 1))


def _capacitance(sy: np.ndarray, sx: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``I + B^T (L_D^2)^-1 B`` for a p x q rectangle, in the edge order of
    :func:`_edge_pixels`, built from the separable DST bases (``g`` = eigenvalues of
    ``(L_D^2)^-1``, shape p x q). Only the upper blocks are computed; the matrix is symmetric."""
    p, q = g.shape
    edges = [("h", 0), ("h", p - 1), ("v", 0), ("v", q - 1)]

    def block(e1: tuple[str, int], e2: tuple[str, int]) -> np.ndarray:
        (k1, f1), (k2, f2) = e1, e2
        if k1 == "h" and k2 == "h":  # [x, x'] = sum_k sx[x,k] sx[x',k] sum_j sy[f1,j] sy[f2,j] g[j,k]
            return (sx * ((sy[f1] * sy[f2]) @ g)) @ sx.T
        if k1 == "v" and k2 == "v":
            return (sy * (g @ (sx[f1] * sx[f2]))) @ sy.T
        # h (row f1, along x) against v (column f2, along y)
        return (((sx * sx[f2]) @ g.T) * sy[f1]) @ sy.T

    grid = [[None] * 4 for _ in range(4)]
    for i in range(4):
        for j in range(i, 4):
            grid[i][j] = block(edges[i], edges[j])
            grid[j][i] = grid[i][j].T
    cap = np.block(grid)
    cap[np.diag_indices_from(cap)] += 1.0
    return cap


def _edge_pixels(p: int, q: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) of the hole pixel for each known 4-neighbour of a p x q rectangle, in the order
    top row, bottom row (x ascending), left column, right column (y ascending); corners appear
    twice since they have two known neighbours."""
    x, y = np.arange(q), np.arange(p)
    ey = np.concatenate([np.zeros(q, int), np.full(q, p - 1), y, y])
    ex = np.concatenate([x, x, np.zeros(p, int), np.full(p, q - 1)])
    return ey, ex


def _symmetry_bases(p: int, q: int) -> list[sparse.csr_matrix]:
    """Orthonormal bases (as sparse rows) of the four parity classes of the edge variables.

    The rectangle's problem is unchanged by mirroring left-right and top-bottom, so the
    capacitance matrix commutes with both mirrors and is block-diagonal in a basis of
    even/odd combinations of mirrored edge variables: four blocks of about (p + q) / 2 instead
    of one of 2 (p + q), which makes the Cholesky factorisation ~16x cheaper."""
    x, y = np.arange(q), np.arange(p)
    # where each edge variable goes under the left-right (fx) and top-bottom (fy) mirror
    fx = np.concatenate([q - 1 - x, q + (q - 1 - x), 2 * q + p + y, 2 * q + y])
    fy = np.concatenate([q + x, x, 2 * q + (p - 1 - y), 2 * q + p + (p - 1 - y)])
    m = fx.size
    orbit = np.stack([np.arange(m), fx, fy, fx[fy]], axis=1)
    reps = np.flatnonzero(orbit.min(axis=1) == np.arange(m))
    bases = []
    for sx_, sy_ in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        vec = np.zeros((reps.size, m))
        coef = np.broadcast_to(np.array([1.0, sx_, sy_, sx_ * sy_]), (reps.size, 4))
        np.add.at(vec, (np.arange(reps.size)[:, None], orbit[reps]), coef)
        norm = np.linalg.norm(vec, axis=1)
        keep = norm > 0.5  # combinations that cancel (a variable its own odd mirror) vanish
        bases.append(sparse.csr_matrix(vec[keep] / norm[keep, None]))
    return bases


def _solve_rectangle(rhs: np.ndarray) -> np.ndarray:
    """Solve ``A x = rhs`` on a p x q rectangle, ``A = L_D^2 + B B^T`` (module docstring),
    by the Woodbury identity; ``rhs`` and the result are ``[p, q, C]``."""
    p, q = rhs.shape[:2]
    sy, sx = _dst_basis(p), _dst_basis(q)
    mu = 4.0 * np.sin(np.pi * np.arange(1, p + 1) / (2 * (p + 1))) ** 2
    nu = 4.0 * np.sin(np.pi * np.arange(1, q + 1) / (2 * (q + 1))) ** 2
    g = 1.0 / (mu[:, None] + nu[None, :]) ** 2  # eigenvalues of (L_D^2)^-1

    def m_inv(v: np.ndarray) -> np.ndarray:
        coef = fft.dstn(v, type=1, norm="ortho", axes=(0, 1))
        return fft.dstn(coef * g[..., None], type=1, norm="ortho", axes=(0, 1))

    cap = _capacitance(sy, sx, g)
    ey, ex = _edge_pixels(p, q)
    z = m_inv(rhs)
    t = z[ey, ex]
    s = np.zeros_like(t)
    for basis in _symmetry_bases(p, q):
        if basis.shape[0]:
            block = basis @ (basis @ cap).T
            s += basis.T @ linalg.cho_solve(linalg.cho_factor(block), basis @ t)
    scatter = np.zeros_like(rhs)
    np.add.at(scatter, (ey, ex), s)
    return z - m_inv(scatter)


def _stencil_at(shape: tuple[int, int], y: int, x: int) -> list[tuple[int, int, float]]:
    """Stencil of a pixel within 2 px of the array border, as scikit-image defines it: the
    Laplacian applied twice (``scipy.ndimage.laplace``, reflecting edges) to a unit impulse
    in the truncated 5x5 window."""
    y0, x0 = max(y - _REACH, 0), max(x - _REACH, 0)
    y1, x1 = min(y + _REACH + 1, shape[0]), min(x + _REACH + 1, shape[1])
    delta = np.zeros((y1 - y0, x1 - x0))
    delta[y - y0, x - x0] = 1.0
    coef = ndimage.laplace(ndimage.laplace(delta))
    iy, ix = np.nonzero(coef)
    return [(int(a + y0 - y), int(b + x0 - x), float(coef[a, b])) for a, b in zip(iy, ix, strict=True)]


def _solve_sparse(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Solve the biharmonic system over ``mask``'s pixels; returns ``[n_hole, C]``."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    n = ys.size
    index = np.full((h, w), -1, dtype=np.int64)
    index[ys, xs] = np.arange(n)
    rows, cols, vals = [], [], []
    rhs = np.zeros((n, image.shape[2]))
    inner = (ys >= _REACH) & (ys < h - _REACH) & (xs >= _REACH) & (xs < w - _REACH)
    iy, ix, irow = ys[inner], xs[inner], np.flatnonzero(inner)
    for dy, dx, c in _STENCIL:  # vectorised over all pixels with the full stencil
        qi = index[iy + dy, ix + dx]
        unknown = qi >= 0
        rows.append(irow[unknown])
        cols.append(qi[unknown])
        vals.append(np.full(int(unknown.sum()), c))
        k = ~unknown
        rhs[irow[k]] -= c * image[iy[k] + dy, ix[k] + dx]
    for row in np.flatnonzero(~inner):  # few pixels next to the image border
        y, x = int(ys[row]), int(xs[row])
        for dy, dx, c in _stencil_at((h, w), y, x):
            qi = index[y + dy, x + dx]
            if qi >= 0:
                rows.append(np.array([row]))
                cols.append(np.array([qi]))
                vals.append(np.array([c]))
            else:
                rhs[row] -= c * image[y + dy, x + dx]
    a = sparse.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    # Interior rows are symmetric, so order on A + A^T and prefer diagonal pivots; a small
    # threshold still lets SuperLU pivot on the (non-symmetric) rows at the image border.
    lu = splu(a, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.01,
              options={"SymmetricMode": True})
    return lu.solve(rhs)


@register("biharmonic", default=True)
class Biharmonic(Inpainter):
    """Biharmonic inpainting (Damelin & Hoang 2018), equal to scikit-image's, solved fast."""

    description = "Biharmonic inpainting, equal to scikit-image's inpaint_biharmonic (fast solver)"
    libraries = ("numpy", "scipy")

    def _inpaint(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        filled = biharmonic_fill(image.astype(np.float64) / 255.0, mask)
        return np.clip(np.rint(filled * 255.0), 0, 255).astype(np.uint8)

    def metadata(self) -> dict:
        return {
            **super().metadata(),
            "solver": "exact: DST + capacitance (rectangular hole) or sparse LU (other holes)",
            "equals": "skimage.restoration.inpaint_biharmonic (tested)",
        }
