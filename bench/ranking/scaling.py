"""Thurstone Case V scaling of pairwise votes in JOD units.

Model: each item ``i`` has a quality ``q_i`` in just-objectionable differences (JOD), and
``P(i preferred to j) = Phi((q_i - q_j) / SIGMA)`` with ``SIGMA = 1 / Phi^-1(0.75)``, so a
difference of 1 JOD is a 75 % preference — the convention of pairwise-comparison scaling
(e.g. Perez-Ortiz & Mantiuk's pwcmp). Ties count as half a win each way, as in the BT fit.

The fit maximises ``sum_ij W_ij log Phi((q_i - q_j) / SIGMA) - (lam / 2) * sum_i q_i^2``.
The Gaussian prior (default precision ``PRIOR_PRECISION`` per item, as for BT) keeps
scores finite when an item never wins or never loses; it also centres the scores (the
likelihood is shift-invariant, so the optimum has ``sum q = 0``). ``lam = 0`` is the plain
maximum-likelihood fit, centred; it needs a strongly connected comparison graph.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr, ndtr, ndtri

from bench.errors import UserError

from .bt import PRIOR_PRECISION, bootstrap_fits, is_strongly_connected

SIGMA = float(1.0 / ndtri(0.75))  # ~1.4826: observer noise that makes 1 JOD = 75 %
_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


def _mills(z: np.ndarray) -> np.ndarray:
    """``phi(z) / Phi(z)`` without overflow for very negative ``z``."""
    return np.exp(-0.5 * z * z - _LOG_SQRT_2PI - log_ndtr(z))


def _objective(q: np.ndarray, wins: np.ndarray, lam: float) -> np.ndarray:
    z = (q[:, :, None] - q[:, None, :]) / SIGMA
    return (wins * log_ndtr(z)).sum(axis=(1, 2)) - 0.5 * lam * (q * q).sum(axis=1)


def fit_jod_batch(wins: np.ndarray, lam: float = PRIOR_PRECISION, tol: float = 1e-10,
                  max_iter: int = 200) -> np.ndarray:
    """JOD scores (``float64[R, K]``, centred) for a batch of win matrices ``float64[R, K, K]``.

    Newton's method on the concave penalised log-likelihood, with a step cap and
    per-replicate backtracking so every step increases the objective.
    """
    wins = np.asarray(wins, dtype=np.float64)
    r, k, _ = wins.shape
    q = np.zeros((r, k))
    obj = _objective(q, wins, lam)
    eye = np.eye(k, dtype=bool)
    for _ in range(max_iter):
        z = (q[:, :, None] - q[:, None, :]) / SIGMA
        m = _mills(z)
        g_cell = wins * m  # d/dz of W_ij log Phi(z_ij)
        grad = (g_cell.sum(axis=2) - g_cell.sum(axis=1)) / SIGMA - lam * q
        c = wins * m * (z + m)  # -d2/dz2 of W_ij log Phi(z_ij), >= 0
        h = (c + c.transpose(0, 2, 1)) / SIGMA**2
        neg_hess = -h
        neg_hess[:, eye] += h.sum(axis=2) + lam
        if lam == 0:
            neg_hess += 1.0 / k  # shift-invariant likelihood: pin the mean
        step = np.linalg.solve(neg_hess, grad[:, :, None])[:, :, 0]
        if lam == 0:
            step -= step.mean(axis=1, keepdims=True)
        big = np.abs(step).max(axis=1, keepdims=True)
        step *= np.minimum(1.0, 3.0 / np.maximum(big, 1e-300))
        t = np.ones((r, 1))
        for _ in range(40):
            cand = q + t * step
            new = _objective(cand, wins, lam)
            ok = new >= obj - 1e-12 * np.abs(obj)
            if ok.all():
                break
            t = np.where(ok[:, None], t, t / 2)
        q, obj = cand, new
        if np.abs(t * step).max() < tol:
            break
    return q - q.mean(axis=1, keepdims=True)


def fit_jod(wins: np.ndarray, lam: float = PRIOR_PRECISION) -> np.ndarray:
    """JOD scores (centred, ``float64[K]``) from one win matrix (half-win ties allowed)."""
    wins = np.asarray(wins, dtype=np.float64)
    if lam == 0 and not is_strongly_connected(wins):
        raise UserError(
            "votes: the maximum-likelihood JOD fit does not exist (some item never wins or "
            "never loses); use a positive prior"
        )
    return fit_jod_batch(wins[None], lam)[0]


def bootstrap_jod(n_items: int, data: np.ndarray, participant: np.ndarray,
                  weights: np.ndarray | None = None, reps: int = 1000, seed: int = 0,
                  lam: float = PRIOR_PRECISION, progress: bool = False) -> np.ndarray:
    """Participant bootstrap of JOD scores, drawn exactly like ``bt.bootstrap_bt``."""
    return bootstrap_fits(n_items, data, participant, weights, reps, seed,
                          lambda w: fit_jod_batch(w, lam), progress)


def p_beat_average_jod(q: np.ndarray) -> np.ndarray:
    """Probability of being preferred to an average item (JOD 0) under Case V."""
    return ndtr(np.asarray(q, dtype=np.float64) / SIGMA)
