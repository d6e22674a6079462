"""Bradley–Terry fit of pairwise votes and the participant bootstrap.

Conventions (fixed for this package)
-----------------------------------
* **Items** are indexed ``0..n_items-1``. Pairwise data follow choix: ``data`` is an
  ``int64[n, 2]`` array of ``(winner, loser)`` rows, optionally with ``weights``
  (``float64[n]``, default 1).
* **Ties** ("can't decide", choice ``tie``/``none``/``equal``/``same``/``neither``/``both``)
  use the explicit *half-win rule*: a tie between ``i`` and ``j`` is two rows,
  ``(i, j)`` and ``(j, i)``, each with weight 0.5. The BT likelihood of a tie is then
  ``sqrt(p_ij * p_ji)`` — the Davidson model with its tie parameter fixed at 1. Ties are
  never dropped; the report counts them.
* **Scores** are log-strengths ``theta`` centred to mean 0 (``float64[n_items]``);
  ``P(i beats j) = 1 / (1 + exp(theta_j - theta_i))``. ``p_beat_average(theta)`` is the
  probability of beating a hypothetical average item (``theta = 0``), i.e. ``sigmoid(theta)``.
* **Regularisation.** The point fit is choix's I-LSR on the aggregated win matrix
  (``choix.ilsr_pairwise_dense``, the same algorithm as ``choix.ilsr_pairwise`` on the vote
  list, without a Python loop over votes). Its ``alpha`` adds ``alpha`` to every transition
  rate of the LSR Markov chain; its fixed point is exactly the maximiser of
  ``loglik(theta) - alpha * n_items * sum(exp(theta) - theta)`` (a Gamma prior on the
  strengths with mean 1; checked by the tests). The default ``alpha = 0.01 / n_items`` is a
  prior precision of 0.01 per item — worth about 0.04 votes — negligible next to real data,
  but it keeps every estimate finite when an item (or a bootstrap resample) never wins or
  never loses. ``alpha = 0`` gives the plain maximum-likelihood fit (needs a strongly
  connected comparison graph).
* **Bootstrap.** People are resampled, not votes: one replicate draws participants with
  replacement (multinomial weights), sums their per-person win-count matrices and refits
  with a vectorised Newton solver of the *same* penalised likelihood (so replicate and
  point fit are the same estimator). Intervals are 95 % percentile intervals; an interval
  of zero width (e.g. one participant: every replicate is the same person) is reported as
  missing, never as a finding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import choix
import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.special import expit

from bench.errors import UserError

PRIOR_PRECISION = 0.01  # alpha * n_items; see the module docstring


def default_alpha(n_items: int) -> float:
    """choix ``alpha`` giving a prior precision of ``PRIOR_PRECISION`` per item."""
    return PRIOR_PRECISION / max(int(n_items), 1)


# --------------------------------------------------------------------------------------
# Core: win matrices and fits
# --------------------------------------------------------------------------------------


def win_matrix(n_items: int, data: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``float64[n_items, n_items]`` with ``W[i, j]`` = (weighted) wins of ``i`` over ``j``."""
    data = np.asarray(data, dtype=np.int64).reshape(-1, 2)
    w = np.ones(len(data)) if weights is None else np.asarray(weights, dtype=np.float64)
    cells = data[:, 0] * n_items + data[:, 1]
    return np.bincount(cells, weights=w, minlength=n_items * n_items).reshape(n_items, n_items)


def is_strongly_connected(wins: np.ndarray) -> bool:
    """True when every item can be reached from every other by "beat" edges (MLE exists)."""
    n, _ = connected_components(sparse.csr_matrix(wins > 0), directed=True, connection="strong")
    return n == 1


def fit_bt_counts(wins: np.ndarray, alpha: float | None = None) -> np.ndarray:
    """Centred BT log-strengths from a win matrix via choix I-LSR.

    ``wins``: ``float64[K, K]``, ``wins[i, j]`` = wins of ``i`` over ``j`` (half-wins allowed).
    ``alpha``: choix regularisation (default ``default_alpha(K)``); 0 = plain MLE, which
    raises ``UserError`` unless the comparison graph is strongly connected.
    """
    wins = np.asarray(wins, dtype=np.float64)
    k = wins.shape[0]
    alpha = default_alpha(k) if alpha is None else float(alpha)
    if alpha == 0 and not is_strongly_connected(wins):
        raise UserError(
            "votes: the maximum-likelihood fit does not exist (some item never wins or never "
            "loses, or the comparison graph is split); use a positive --alpha"
        )
    try:
        theta = choix.ilsr_pairwise_dense(wins, alpha=alpha, max_iter=10_000, tol=1e-10)
    except (RuntimeError, ValueError):
        # I-LSR converges slowly on near-degenerate data; the Newton solver maximises the
        # same penalised likelihood (tested to agree), so fall back to it.
        theta = fit_bt_batch(wins[None], alpha)[0]
    return theta - theta.mean()


def fit_bt(
    n_items: int,
    data: np.ndarray,
    weights: np.ndarray | None = None,
    alpha: float | None = None,
) -> np.ndarray:
    """Centred BT log-strengths (``float64[n_items]``) from choix-style ``(winner, loser)`` rows."""
    return fit_bt_counts(win_matrix(n_items, data, weights), alpha)


def _penalised_loglik(theta: np.ndarray, wins: np.ndarray, lam: float) -> np.ndarray:
    d = theta[:, :, None] - theta[:, None, :]
    ll = -(wins * np.logaddexp(0.0, -d)).sum(axis=(1, 2))
    return ll - lam * (np.exp(theta) - theta).sum(axis=1)


def fit_bt_batch(
    wins: np.ndarray, alpha: float | None = None, tol: float = 1e-10, max_iter: int = 200
) -> np.ndarray:
    """Vectorised Newton fit of many win matrices at once.

    ``wins``: ``float64[R, K, K]``. Returns centred log-strengths ``float64[R, K]``. It
    maximises the same penalised likelihood as choix I-LSR with the same ``alpha``, with a
    step cap and per-replicate backtracking so every step increases the objective.
    """
    wins = np.asarray(wins, dtype=np.float64)
    r, k, _ = wins.shape
    alpha = default_alpha(k) if alpha is None else float(alpha)
    lam = alpha * k
    n = wins + wins.transpose(0, 2, 1)
    theta = np.zeros((r, k))
    obj = _penalised_loglik(theta, wins, lam)
    eye = np.eye(k, dtype=bool)
    for _ in range(max_iter):
        p = expit(theta[:, :, None] - theta[:, None, :])
        grad = (wins - n * p).sum(axis=2) - lam * (np.exp(theta) - 1.0)
        h = n * p * (1.0 - p)
        neg_hess = -h
        neg_hess[:, eye] += h.sum(axis=2) + lam * np.exp(theta)
        if lam == 0:
            # The likelihood is shift-invariant; pin the mean so the system is regular.
            neg_hess += 1.0 / k
        step = np.linalg.solve(neg_hess, grad[:, :, None])[:, :, 0]
        big = np.abs(step).max(axis=1, keepdims=True)
        step *= np.minimum(1.0, 3.0 / np.maximum(big, 1e-300))
        t = np.ones((r, 1))
        for _ in range(40):
            cand = theta + t * step
            new = _penalised_loglik(cand, wins, lam)
            ok = new >= obj - 1e-12 * np.abs(obj)
            if ok.all():
                break
            t = np.where(ok[:, None], t, t / 2)
        theta, obj = cand, new
        if np.abs(t * step).max() < tol:
            break
    return theta - theta.mean(axis=1, keepdims=True)


def p_beat_average(theta: np.ndarray) -> np.ndarray:
    """Probability of beating an average item (log-strength 0 after centring)."""
    return expit(np.asarray(theta, dtype=np.float64))


# --------------------------------------------------------------------------------------
# Participant-level bootstrap
# --------------------------------------------------------------------------------------


def person_cell_counts(
    n_items: int,
    data: np.ndarray,
    participant: np.ndarray,
    weights: np.ndarray | None = None,
) -> tuple[sparse.csr_matrix, np.ndarray, int]:
    """Per-person win counts over the observed ``(winner, loser)`` cells.

    ``participant``: ``int64[n]`` codes ``0..P-1``. Returns ``(C, cells, P)`` with ``C`` a
    sparse ``float64[P, n_cells]`` matrix and ``cells`` the flat ``winner * K + loser`` index
    of each column.
    """
    data = np.asarray(data, dtype=np.int64).reshape(-1, 2)
    participant = np.asarray(participant, dtype=np.int64)
    w = np.ones(len(data)) if weights is None else np.asarray(weights, dtype=np.float64)
    n_people = int(participant.max()) + 1 if len(participant) else 0
    flat = data[:, 0] * n_items + data[:, 1]
    cells, col = np.unique(flat, return_inverse=True)
    counts = sparse.coo_matrix(
        (w, (participant, col)), shape=(n_people, len(cells))
    ).tocsr()
    counts.sum_duplicates()
    return counts, cells, n_people


def person_resamples(
    n_people: int, reps: int, seed: int, chunk: int, progress: bool = False
) -> Iterator[tuple[int, np.ndarray]]:
    """Participant bootstrap weights in chunks: ``(start, m)`` with ``m`` ``float64[c, P]``.

    Replicate ``r`` draws ``P`` people with replacement (``numpy.random.default_rng(seed)``);
    ``m[r, p]`` is how often person ``p`` was drawn, so a person drawn twice counts twice.
    Every participant-level bootstrap of this package (BT, JOD, agreement) draws this way.
    """
    if n_people == 0:
        raise UserError("votes: no votes left to bootstrap; check the exclusions and filters")
    rng = np.random.default_rng(seed)
    starts = range(0, reps, max(1, chunk))
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="bootstrap", unit="chunk", leave=False)
    for s in starts:
        c = min(max(1, chunk), reps - s)
        picks = rng.integers(0, n_people, size=(c, n_people))
        picks += np.arange(c)[:, None] * n_people
        m = np.bincount(picks.ravel(), minlength=c * n_people).reshape(c, n_people)
        yield s, m.astype(np.float64)


def bootstrap_fits(
    n_items: int,
    data: np.ndarray,
    participant: np.ndarray,
    weights: np.ndarray | None,
    reps: int,
    seed: int,
    fitter: Callable[[np.ndarray], np.ndarray],
    progress: bool = False,
) -> np.ndarray:
    """Participant bootstrap of any batch fitter of win matrices: ``float64[reps, n_items]``.

    ``fitter`` maps ``float64[R, K, K]`` win matrices to ``float64[R, K]`` scores.
    """
    counts, cells, n_people = person_cell_counts(n_items, data, participant, weights)
    counts_t = counts.T.tocsr()
    out = np.empty((reps, n_items))
    # Chunks bound memory (R x K x K Newton systems, R x P weights); the chunk size depends
    # only on the sizes, so a seed always gives the same replicates.
    chunk = max(1, min(reps, 2_000_000 // (n_items * n_items), 20_000_000 // max(n_people, 1)))
    for s, m in person_resamples(n_people, reps, seed, chunk, progress):
        rep_counts = np.asarray((counts_t @ m.T).T)
        wins = np.zeros((len(m), n_items * n_items))
        wins[:, cells] = rep_counts
        out[s : s + len(m)] = fitter(wins.reshape(len(m), n_items, n_items))
    return out


def bootstrap_bt(
    n_items: int,
    data: np.ndarray,
    participant: np.ndarray,
    weights: np.ndarray | None = None,
    reps: int = 1000,
    seed: int = 0,
    alpha: float | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Participant-level bootstrap of centred BT log-strengths: ``float64[reps, n_items]``."""
    return bootstrap_fits(n_items, data, participant, weights, reps, seed,
                          lambda w: fit_bt_batch(w, alpha), progress)


@dataclass
class BootstrapSummary:
    """Percentile intervals and pairwise comparisons from bootstrap replicates."""

    low: np.ndarray  # float64[K], 2.5 % percentile of centred log-strength
    high: np.ndarray  # float64[K], 97.5 %
    p_better: np.ndarray  # float64[K, K]: share of replicates with theta_i > theta_j
    significant: np.ndarray  # bool[K, K]: 95 % percentile interval of theta_i - theta_j excludes 0
    degenerate: np.ndarray  # bool[K, K]: that interval has zero width (no evidence either way)


def summarise_bootstrap(boot: np.ndarray, level: float = 0.95) -> BootstrapSummary:
    """Intervals per item and the pairwise P(better)/significance matrices.

    An interval of zero width means every replicate gave the same value, which happens when
    the resampling has nothing to vary (one participant, or everyone voting identically on
    that pair). It is no measure of certainty: such item intervals are NaN, and such pairs
    are ``degenerate`` and never ``significant``.
    """
    q = (1 - level) / 2
    low, high = np.quantile(boot, [q, 1 - q], axis=0)
    flat = np.isclose(high - low, 0.0, rtol=0.0, atol=1e-12)
    low, high = np.where(flat, np.nan, low), np.where(flat, np.nan, high)
    diff = boot[:, :, None] - boot[:, None, :]
    d_low, d_high = np.quantile(diff, [q, 1 - q], axis=0)
    degenerate = np.isclose(d_high - d_low, 0.0, rtol=0.0, atol=1e-12)
    np.fill_diagonal(degenerate, False)
    p_better = (diff > 0).mean(axis=0) + 0.5 * (diff == 0).mean(axis=0)
    np.fill_diagonal(p_better, 0.5)
    sig = ((p_better >= 1 - q) | (p_better <= q)) & ~degenerate
    np.fill_diagonal(sig, False)
    return BootstrapSummary(low, high, p_better, sig, degenerate)


# --------------------------------------------------------------------------------------
# Kendall tau (vectorised tau-b)
# --------------------------------------------------------------------------------------


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall tau-b between ``x`` (``[..., K]``) and ``y`` (``[K]``); NaN when undefined."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    iu = np.triu_indices(y.shape[-1], 1)
    sx = np.sign(x[..., :, None] - x[..., None, :])[..., iu[0], iu[1]]
    sy = np.sign(y[:, None] - y[None, :])[iu]
    den = np.sqrt((sx**2).sum(-1) * (sy**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (sx * sy).sum(-1) / np.where(den > 0, den, 1), np.nan)


