"""Bradley–Terry analysis of pairwise votes: fit, participant bootstrap, data checks.

Conventions (fixed for this module)
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
  point fit are the same estimator). Intervals are 95 % percentile intervals.

Library code here never prints; the CLI (``analysis_cli``) writes the files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import choix
import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.special import expit
from scipy.stats import binom, binomtest

from bench.errors import UserError

PRIOR_PRECISION = 0.01  # alpha * n_items; see the module docstring
TIE_WORDS = frozenset(
    {"tie", "none", "equal", "same", "neither", "both", "draw", "cannot decide", "can't decide",
     "undecided"}
)
LEFT_WORDS = frozenset({"left", "l"})
RIGHT_WORDS = frozenset({"right", "r"})
LOWER_IS_BETTER = frozenset({"l1", "hole_l1", "lpips"})
REQUIRED_COLUMNS = ("participant", "left", "right", "choice")
_TRUE = frozenset({"1", "true", "t", "yes", "y"})
_FALSE = frozenset({"0", "false", "f", "no", "n", ""})


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
    """Participant-level bootstrap of centred BT log-strengths: ``float64[reps, n_items]``.

    Each replicate draws ``P`` people with replacement (``numpy.random.default_rng(seed)``),
    so a person drawn twice counts twice.
    """
    counts, cells, n_people = person_cell_counts(n_items, data, participant, weights)
    if n_people == 0:
        raise UserError("votes: no votes left to bootstrap; check the exclusions and filters")
    rng = np.random.default_rng(seed)
    counts_t = counts.T.tocsr()
    out = np.empty((reps, n_items))
    # Chunks bound memory (R x K x K Newton systems, R x P weights); the chunk size depends
    # only on the sizes, so a seed always gives the same replicates.
    chunk = max(1, min(reps, 2_000_000 // (n_items * n_items), 20_000_000 // n_people))
    starts = range(0, reps, chunk)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="bootstrap", unit="chunk", leave=False)
    for s in starts:
        c = min(chunk, reps - s)
        # Draw P people with replacement per replicate; count how often each was drawn.
        picks = rng.integers(0, n_people, size=(c, n_people))
        picks += np.arange(c)[:, None] * n_people
        m = np.bincount(picks.ravel(), minlength=c * n_people).reshape(c, n_people)
        m = m.astype(np.float64)
        rep_counts = np.asarray((counts_t @ m.T).T)
        wins = np.zeros((len(m), n_items * n_items))
        wins[:, cells] = rep_counts
        out[s : s + chunk] = fit_bt_batch(wins.reshape(len(m), n_items, n_items), alpha)
    return out


@dataclass
class BootstrapSummary:
    """Percentile intervals and pairwise comparisons from bootstrap replicates."""

    low: np.ndarray  # float64[K], 2.5 % percentile of centred log-strength
    high: np.ndarray  # float64[K], 97.5 %
    p_better: np.ndarray  # float64[K, K]: share of replicates with theta_i > theta_j
    significant: np.ndarray  # bool[K, K]: 95 % percentile interval of theta_i - theta_j excludes 0


def summarise_bootstrap(boot: np.ndarray, level: float = 0.95) -> BootstrapSummary:
    """Intervals per item and the pairwise P(better)/significance matrices."""
    q = (1 - level) / 2
    low, high = np.quantile(boot, [q, 1 - q], axis=0)
    gt = (boot[:, :, None] > boot[:, None, :]).mean(axis=0)
    eq = (boot[:, :, None] == boot[:, None, :]).mean(axis=0)
    p_better = gt + 0.5 * eq
    np.fill_diagonal(p_better, 0.5)
    sig = (p_better >= 1 - q) | (p_better <= q)
    np.fill_diagonal(sig, False)
    return BootstrapSummary(low, high, p_better, sig)


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


# --------------------------------------------------------------------------------------
# Reading and normalising votes
# --------------------------------------------------------------------------------------


def _bool_column(series: pd.Series, name: str, where: str) -> np.ndarray:
    if series.dtype == bool:
        return series.to_numpy()
    text = series.fillna("").astype(str).str.strip().str.lower()
    bad = ~text.isin(_TRUE | _FALSE)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserError(
            f"{where}: column '{name}' row {row + 2} is {series.iloc[row]!r}; "
            "use true/false or 1/0"
        )
    return text.isin(_TRUE).to_numpy()


def _map_unique(col: pd.Series, fn) -> pd.Series:
    """Apply ``fn`` once per distinct value (vote tables repeat a few names many times)."""
    codes, uniques = pd.factorize(col, use_na_sentinel=False)
    mapped = np.array([fn(u) for u in uniques], dtype=object)
    return pd.Series(mapped[codes], index=col.index, dtype=object)


def unit_of(item: str, level: str, sep: str = "/") -> str:
    """The unit an item counts for: its method (text before the first ``sep``) or itself."""
    if level == "item":
        return item
    return item.split(sep, 1)[0] if sep and sep in item else item


def tidy_votes(df: pd.DataFrame, where: str = "votes", level: str = "method",
               item_sep: str = "/") -> pd.DataFrame:
    """Validate a vote table and add the analysis columns.

    Input columns: ``participant, left, right, choice`` (required); ``excluded``,
    ``is_validation``, ``trial``, ``rt_ms`` (optional). Without ``excluded`` but with a
    ``correct`` column (true/false on validation rows), anyone with a wrong validation answer
    is excluded. ``choice`` is ``left``/``right``, the
    chosen item's name, or a tie word (see ``TIE_WORDS``). Added columns: ``outcome``
    (``left``/``right``/``tie``), ``excluded`` and ``is_validation`` (bool),
    ``left_unit``/``right_unit`` (method or item per ``level``). Raises ``UserError`` naming
    the row (as a 1-based CSV line number) for anything it cannot interpret.
    """
    if level not in ("method", "item"):
        raise UserError(f"level: {level!r} is not known; use 'method' or 'item'")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(
            f"{where}: missing column(s) {', '.join(missing)}; a vote table needs "
            "participant, left, right, choice"
        )
    if len(df) == 0:
        raise UserError(f"{where}: no votes; nothing to fit")
    out = df.copy().reset_index(drop=True)
    for col in ("participant", "left", "right"):
        if out[col].isna().any():
            row = int(np.flatnonzero(out[col].isna().to_numpy())[0])
            raise UserError(f"{where}: column '{col}' is empty on line {row + 2}; fill it in")
        out[col] = _map_unique(out[col], lambda x: str(x).strip())
    same = out["left"] == out["right"]
    if same.any():
        row = int(np.flatnonzero(same.to_numpy())[0])
        raise UserError(f"{where}: line {row + 2} compares '{out['left'][row]}' with itself")
    raw = out["choice"]
    if raw.isna().any():
        row = int(np.flatnonzero(raw.isna().to_numpy())[0])
        raise UserError(
            f"{where}: 'choice' is empty on line {row + 2}; drop unanswered rows or mark "
            "them 'tie'"
        )
    choice = _map_unique(raw, lambda x: str(x).strip())
    low = _map_unique(choice, str.lower)
    outcome = np.full(len(out), "", dtype=object)
    outcome[(choice == out["right"]).to_numpy() | low.isin(RIGHT_WORDS).to_numpy()] = "right"
    outcome[(choice == out["left"]).to_numpy() | low.isin(LEFT_WORDS).to_numpy()] = "left"
    outcome[low.isin(TIE_WORDS).to_numpy()] = "tie"
    bad = outcome == ""
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise UserError(
            f"{where}: 'choice' on line {row + 2} is {raw.iloc[row]!r}; use left, right, the "
            "chosen item's name, or tie"
        )
    out["outcome"] = outcome
    for col in ("excluded", "is_validation"):
        out[col] = (
            _bool_column(out[col], col, where) if col in out.columns
            else np.zeros(len(out), dtype=bool)
        )
    if "excluded" not in df.columns and "correct" in df.columns:
        # No exclusion flags but graded validation answers: exclude anyone who failed one.
        graded = out["is_validation"] & out["correct"].notna() & (out["correct"] != "")
        wrong = graded & ~_bool_column(out["correct"].where(graded, "true"), "correct", where)
        out["excluded"] = out["participant"].isin(set(out.loc[wrong, "participant"]))
    for side in ("left", "right"):
        out[f"{side}_unit"] = _map_unique(out[side], lambda x: unit_of(x, level, item_sep))
    return out


def read_votes(source: str | Path) -> pd.DataFrame:
    """Read votes from a CSV file or a study folder (``STUDY/votes.csv`` or the site's export)."""
    path = Path(source)
    if not path.exists():
        raise UserError(f"{path}: not found; give a votes CSV or a study folder")
    if path.is_dir():
        csv = path / "votes.csv"
        if (path / "study.json").is_file():
            try:
                from survey_app.export import export_votes  # the site's exporter (issue 6)
            except ImportError:
                export_votes = None
            if export_votes is not None:
                try:
                    return export_votes(path)
                except UserError:
                    if not csv.is_file():
                        raise
        if not csv.is_file():
            raise UserError(
                f"{path}: no study.json with a votes database and no votes.csv in this folder; "
                "give a votes CSV (e.g. from `hrbench survey export STUDY --out votes.csv`)"
            )
        path = csv
    try:
        return pd.read_csv(path, dtype={"participant": str, "left": str, "right": str,
                                        "choice": str}, keep_default_na=False,
                           na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"{path}: not a readable CSV ({exc}); export the votes as CSV") from exc


@dataclass
class PairData:
    """Votes in choix form for one analysis (validation and same-unit votes removed)."""

    items: list[str]  # unit names, index = item id
    data: np.ndarray  # int64[n, 2] (winner, loser); ties appear twice with weight 0.5
    weights: np.ndarray  # float64[n]
    participant: np.ndarray  # int64[n] codes into ``people``
    people: list[str]


def pair_data(tidy: pd.DataFrame, items: list[str] | None = None) -> PairData:
    """Convert tidy votes (already filtered) to choix-style arrays with half-win ties."""
    v = tidy[~tidy["is_validation"] & (tidy["left_unit"] != tidy["right_unit"])]
    if items is None:
        items = sorted(set(v["left_unit"]) | set(v["right_unit"]))
    index = {name: i for i, name in enumerate(items)}
    li = v["left_unit"].map(index).to_numpy(dtype=np.int64)
    ri = v["right_unit"].map(index).to_numpy(dtype=np.int64)
    people, pcode = np.unique(v["participant"].to_numpy(dtype=str), return_inverse=True)
    oc = v["outcome"].to_numpy()
    left_won, right_won, tie = oc == "left", oc == "right", oc == "tie"
    winner = np.concatenate([li[left_won], ri[right_won], li[tie], ri[tie]])
    loser = np.concatenate([ri[left_won], li[right_won], ri[tie], li[tie]])
    weights = np.concatenate([np.ones(left_won.sum() + right_won.sum()),
                              np.full(2 * tie.sum(), 0.5)])
    part = np.concatenate([pcode[left_won], pcode[right_won], pcode[tie], pcode[tie]])
    return PairData(list(items), np.stack([winner, loser], axis=1), weights,
                    part.astype(np.int64), list(people))


# --------------------------------------------------------------------------------------
# Data checks
# --------------------------------------------------------------------------------------


def position_bias(tidy: pd.DataFrame) -> dict:
    """Binomial test of left vs right presses over decided, non-validation votes."""
    v = tidy[~tidy["is_validation"] & (tidy["outcome"] != "tie")]
    n_left = int((v["outcome"] == "left").sum())
    n = len(v)
    if n == 0:
        return {"n": 0, "n_left": 0, "share_left": math.nan, "p_value": math.nan,
                "ci_low": math.nan, "ci_high": math.nan}
    res = binomtest(n_left, n, 0.5)
    ci = res.proportion_ci(0.95)
    return {"n": n, "n_left": n_left, "share_left": n_left / n, "p_value": float(res.pvalue),
            "ci_low": float(ci.low), "ci_high": float(ci.high)}


def _binom_two_sided_half(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Two-sided binomial test p-value for p = 1/2 (vectorised ``binomtest``)."""
    k = np.asarray(k)
    n = np.asarray(n)
    tail = np.minimum(binom.cdf(k, n, 0.5), binom.sf(k - 1, n, 0.5))
    return np.minimum(1.0, 2.0 * tail)


def _cyclic_triads(dom: np.ndarray) -> int:
    """Number of circular triads in a 0/1 dominance matrix: trace(D^3) / 3."""
    return int(round(np.trace(dom @ dom @ dom) / 3))


def _triads_from_arrays(li: np.ndarray, ri: np.ndarray, score: np.ndarray) -> int:
    """Circular triads of the majority preferences among the units in ``li``/``ri``.

    ``score``: +1 left won, -1 right won, 0 tie, per vote (units as integer codes).
    """
    units, inv = np.unique(np.concatenate([li, ri]), return_inverse=True)
    k = len(units)
    if k < 3:
        return 0
    a, b = inv[: len(li)], inv[len(li):]
    net = np.zeros((k, k))
    np.add.at(net, (a, b), score)
    np.add.at(net, (b, a), -score)
    return _cyclic_triads((net > 0).astype(np.float64))


def _unit_codes(tidy: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    names, inv = np.unique(np.concatenate([tidy["left_unit"].to_numpy(dtype=str),
                                           tidy["right_unit"].to_numpy(dtype=str)]),
                           return_inverse=True)
    return inv[: len(tidy)], inv[len(tidy):]


def _vote_score(outcome: np.ndarray) -> np.ndarray:
    return np.where(outcome == "left", 1.0, np.where(outcome == "right", -1.0, 0.0))


def circular_triads(tidy: pd.DataFrame) -> int:
    """Circular triads in the majority preferences of a set of votes (at unit level)."""
    v = tidy[~tidy["is_validation"] & (tidy["left_unit"] != tidy["right_unit"])]
    if len(v) == 0:
        return 0
    li, ri = _unit_codes(v)
    return _triads_from_arrays(li, ri, _vote_score(v["outcome"].to_numpy()))


def per_person_checks(tidy: pd.DataFrame, items: list[str], theta: np.ndarray) -> pd.DataFrame:
    """One row per participant: side use, repeated-pair consistency, triads, agreement.

    Columns: ``participant, excluded, n_votes, n_ties, n_left, share_left, side_p``
    (two-sided binomial test of left vs right), ``always_same_side`` (every decided vote on
    one side, at least 5 of them), ``n_repeats`` (item pairs seen more than once),
    ``n_inconsistent`` (repeats answered with different items), ``n_swapped_same_side``
    (repeats with sides swapped where the same side was pressed), ``circular_triads`` (in the
    person's own majority preferences), ``agreement`` (share of decided votes that pick the
    item the consensus fit ranks higher) and ``agreement_p`` (one-sided binomial test that
    agreement exceeds 1/2; random clickers sit near 1/2 and have large p).
    """
    v = tidy[~tidy["is_validation"]].reset_index(drop=True)
    people, pc = np.unique(v["participant"].to_numpy(dtype=str), return_inverse=True)
    n_p = len(people)
    oc = v["outcome"].to_numpy()
    decided = oc != "tie"
    is_left = oc == "left"
    n_votes = np.bincount(pc, minlength=n_p)
    n_ties = np.bincount(pc, weights=~decided, minlength=n_p).astype(int)
    n_left = np.bincount(pc, weights=is_left, minlength=n_p).astype(int)
    n_dec = n_votes - n_ties
    # Agreement with the consensus ranking (decided votes between two fitted units).
    lookup = pd.Series(np.arange(len(items)), index=items)
    li = v["left_unit"].map(lookup).to_numpy(dtype=float)
    ri = v["right_unit"].map(lookup).to_numpy(dtype=float)
    known = ~np.isnan(li) & ~np.isnan(ri)
    tl = np.where(known, theta[np.nan_to_num(li).astype(int)], 0.0)
    tr = np.where(known, theta[np.nan_to_num(ri).astype(int)], 0.0)
    informative = known & decided & (tl != tr)
    agrees = informative & np.where(is_left, tl > tr, tr > tl)
    n_inf = np.bincount(pc, weights=informative, minlength=n_p).astype(int)
    n_agree = np.bincount(pc, weights=agrees, minlength=n_p).astype(int)
    # Repeated item pairs (unordered), e.g. the site's swapped-sides consistency check.
    lft, rgt = v["left"].to_numpy(dtype=str), v["right"].to_numpy(dtype=str)
    rep = pd.DataFrame({
        "p": pc, "a": np.where(lft < rgt, lft, rgt), "b": np.where(lft < rgt, rgt, lft),
        "left": lft, "side": oc,
        "chosen": np.where(is_left, lft, np.where(oc == "right", rgt, "<tie>")),
    })
    g = rep.groupby(["p", "a", "b"], sort=False).agg(
        n=("side", "size"), n_chosen=("chosen", "nunique"), n_lefts=("left", "nunique"),
        n_sides=("side", "nunique"), side=("side", "first"))
    g = g[g["n"] > 1]
    per = pd.DataFrame({
        "n_repeats": 1,
        "n_inconsistent": (g["n_chosen"] > 1).astype(int),
        "n_swapped_same_side": ((g["n_lefts"] > 1) & (g["n_sides"] == 1)
                                & (g["side"] != "tie")).astype(int),
    }).groupby(level="p").sum().reindex(range(n_p), fill_value=0)
    # Circular triads per person, on their own votes at unit level.
    ul, ur = _unit_codes(v)
    score = _vote_score(oc)
    n_units = int(max(ul.max(initial=-1), ur.max(initial=-1))) + 1
    if n_p * n_units * n_units <= 20_000_000:
        # All people at once: per-person net-win matrices, D^3 traces by batched matmul.
        net = np.zeros((n_p, n_units, n_units))
        np.add.at(net, (pc, ul, ur), score)
        np.add.at(net, (pc, ur, ul), -score)
        dom = (net > 0).astype(np.float64)
        triads = np.rint(np.einsum("pii->p", dom @ dom @ dom) / 3).astype(int)
    else:
        order = np.argsort(pc, kind="stable")
        bounds = np.searchsorted(pc[order], np.arange(n_p + 1))
        triads = np.zeros(n_p, dtype=int)
        for p in range(n_p):
            idx = order[bounds[p]:bounds[p + 1]]
            idx = idx[ul[idx] != ur[idx]]
            triads[p] = _triads_from_arrays(ul[idx], ur[idx], score[idx])
    excluded = np.bincount(pc, weights=v["excluded"].to_numpy(), minlength=n_p) > 0
    side_p = np.where(n_dec > 0, _binom_two_sided_half(n_left, n_dec), np.nan)
    agree_p = np.where(n_inf > 0, binom.sf(n_agree - 1, n_inf, 0.5), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        share_left = np.where(n_dec > 0, n_left / np.maximum(n_dec, 1), np.nan)
        agreement = np.where(n_inf > 0, n_agree / np.maximum(n_inf, 1), np.nan)
    return pd.DataFrame({
        "participant": people,
        "excluded": excluded,
        "n_votes": n_votes,
        "n_ties": n_ties,
        "n_left": n_left,
        "share_left": share_left,
        "side_p": side_p,
        "always_same_side": (n_dec >= 5) & ((n_left == 0) | (n_left == n_dec)),
        "n_repeats": per["n_repeats"].to_numpy(),
        "n_inconsistent": per["n_inconsistent"].to_numpy(),
        "n_swapped_same_side": per["n_swapped_same_side"].to_numpy(),
        "circular_triads": triads,
        "agreement": agreement,
        "agreement_p": agree_p,
    })


def pair_counts(tidy: pd.DataFrame) -> pd.DataFrame:
    """Votes per unordered unit pair: ``a, b, n_votes, a_wins, b_wins, ties`` (a < b)."""
    v = tidy[~tidy["is_validation"] & (tidy["left_unit"] != tidy["right_unit"])]
    lu, ru = v["left_unit"].to_numpy(dtype=str), v["right_unit"].to_numpy(dtype=str)
    a, b = np.where(lu < ru, lu, ru), np.where(lu < ru, ru, lu)
    winner = np.where(v["outcome"] == "left", v["left_unit"],
                      np.where(v["outcome"] == "right", v["right_unit"], ""))
    t = pd.DataFrame({"a": a, "b": b, "a_win": winner == a, "b_win": winner == b,
                      "tie": v["outcome"].to_numpy() == "tie"})
    g = t.groupby(["a", "b"], sort=True)
    return pd.DataFrame({
        "n_votes": g.size(), "a_wins": g["a_win"].sum(), "b_wins": g["b_win"].sum(),
        "ties": g["tie"].sum(),
    }).reset_index().astype({"a_wins": int, "b_wins": int, "ties": int})


# --------------------------------------------------------------------------------------
# Agreement with objective metrics
# --------------------------------------------------------------------------------------


def read_metrics(source: str | Path) -> pd.DataFrame:
    """Read a run's tidy ``metrics.csv`` (``method, resolution, image, metric, value``)."""
    path = Path(source)
    if path.is_dir():
        path = path / "metrics.csv"
    if not path.is_file():
        raise UserError(f"{path}: not found; give a run folder or its metrics.csv")
    df = pd.read_csv(path)
    need = {"method", "resolution", "image", "metric", "value"}
    if not need <= set(df.columns):
        raise UserError(
            f"{path}: needs columns {', '.join(sorted(need))}; is this a run's metrics.csv?"
        )
    return df


def metric_agreement(
    items: list[str],
    theta: np.ndarray,
    boot: np.ndarray | None,
    metrics: pd.DataFrame,
    level: str = "method",
    resolution: int | None = None,
    images: list[str] | None = None,
    item_sep: str = "/",
) -> pd.DataFrame:
    """Kendall tau-b between the BT ranking and each metric's ranking, with bootstrap spread.

    Metrics are oriented so that higher is better (``LOWER_IS_BETTER`` are negated) before
    ranking, so tau = +1 means people and the metric order the units the same way. With
    ``level='method'`` each method's metric is its mean over ``images`` (all images if
    None); with ``level='item'`` items ``METHOD<sep>IMAGE`` are matched to their own rows.
    Columns: ``metric, n_units, tau, tau_low, tau_high, p_tau_positive``.
    """
    m = metrics.copy()
    if resolution is None:
        res = m["resolution"].unique()
        if len(res) > 1:
            raise UserError(
                "metrics: several resolutions "
                f"({', '.join(str(r) for r in sorted(res))}); choose one with --resolution"
            )
    else:
        m = m[m["resolution"] == resolution]
        if m.empty:
            raise UserError(f"metrics: no rows for resolution {resolution}; check --resolution")
    if images is not None and level == "method":
        m = m[m["image"].astype(str).isin(images)]
    m["unit"] = (m["method"].astype(str) if level == "method"
                 else m["method"].astype(str) + item_sep + m["image"].astype(str))
    rows = []
    for metric, g in m.groupby("metric", sort=True):
        means = g.groupby("unit")["value"].mean()
        common = [i for i, name in enumerate(items) if name in means.index]
        row = {"metric": metric, "n_units": len(common), "tau": math.nan, "tau_low": math.nan,
               "tau_high": math.nan, "p_tau_positive": math.nan}
        if len(common) >= 3:
            sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
            score = sign * means.loc[[items[i] for i in common]].to_numpy(dtype=np.float64)
            row["tau"] = float(kendall_tau_b(theta[common], score))
            if boot is not None:
                taus = kendall_tau_b(boot[:, common], score)
                taus = taus[~np.isnan(taus)]
                if len(taus):
                    row["tau_low"], row["tau_high"] = (float(x) for x in
                                                       np.quantile(taus, [0.025, 0.975]))
                    row["p_tau_positive"] = float((taus > 0).mean())
        rows.append(row)
    return pd.DataFrame(rows, columns=["metric", "n_units", "tau", "tau_low", "tau_high",
                                       "p_tau_positive"])


# --------------------------------------------------------------------------------------
# The whole analysis
# --------------------------------------------------------------------------------------


@dataclass
class StudyAnalysis:
    """Everything ``hrbench survey fit`` reports. Arrays are indexed like ``items``."""

    items: list[str]
    theta: np.ndarray
    boot: np.ndarray
    summary: BootstrapSummary
    wins: np.ndarray  # float64[K, K] wins of row over column (included votes, half-win ties)
    table: pd.DataFrame
    audit: pd.DataFrame
    position: dict
    people: pd.DataFrame
    pairs: pd.DataFrame
    triads_aggregate: int
    metrics: pd.DataFrame | None
    settings: dict
    counts: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def ranking_table(items: list[str], theta: np.ndarray, summary: BootstrapSummary,
                  wins: np.ndarray, unit: str = "method") -> pd.DataFrame:
    """Tidy ranking, best first: rank, unit, score and CI, P(beat average) and CI, votes."""
    n_votes = wins.sum(axis=1) + wins.sum(axis=0)
    t = pd.DataFrame({
        unit: items,
        "score": theta,
        "ci_low": summary.low,
        "ci_high": summary.high,
        "p_beat_avg": p_beat_average(theta),
        "p_ci_low": p_beat_average(summary.low),
        "p_ci_high": p_beat_average(summary.high),
        "wins": wins.sum(axis=1),
        "n_votes": n_votes,
    })
    t["win_rate"] = np.where(n_votes > 0, t["wins"] / np.maximum(n_votes, 1e-300), np.nan)
    t = t.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    t.insert(0, "rank", np.arange(1, len(t) + 1))
    return t


def exclusion_audit(tidy: pd.DataFrame, items: list[str], theta_included: np.ndarray,
                    alpha: float | None, unit: str = "method") -> tuple[pd.DataFrame, float]:
    """Rankings with and without the excluded people, side by side, and tau between them."""
    all_pd = pair_data(tidy, items)
    theta_all = fit_bt(len(items), all_pd.data, all_pd.weights, alpha)
    t = pd.DataFrame({unit: items, "score_included": theta_included, "score_all": theta_all})
    t["rank_included"] = (-t["score_included"]).rank(method="min").astype(int)
    t["rank_all"] = (-t["score_all"]).rank(method="min").astype(int)
    t["rank_change"] = t["rank_all"] - t["rank_included"]
    tau = float(kendall_tau_b(theta_all, theta_included))
    return t.sort_values("rank_included").reset_index(drop=True), tau


def fit_with_bootstrap(
    pdata: PairData,
    wins: np.ndarray,
    reps: int,
    seed: int,
    alpha: float,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, BootstrapSummary]:
    """Point fit (choix I-LSR) plus participant bootstrap; shared by ``fit`` and ``simulate``."""
    k = len(pdata.items)
    theta = fit_bt_counts(wins, alpha)
    boot = bootstrap_bt(k, pdata.data, pdata.participant, pdata.weights, reps, seed, alpha,
                        progress)
    return theta, boot, summarise_bootstrap(boot)


def analyse_votes(
    votes: pd.DataFrame,
    level: str = "method",
    item_sep: str = "/",
    reps: int = 1000,
    seed: int = 0,
    alpha: float | None = None,
    include_excluded: bool = False,
    metrics: pd.DataFrame | None = None,
    resolution: int | None = None,
    where: str = "votes",
    progress: bool = False,
) -> StudyAnalysis:
    """Fit, bootstrap and check one study. ``votes`` is a raw vote table (see ``tidy_votes``)."""
    tidy = tidy_votes(votes, where, level, item_sep)
    fit_rows = tidy if include_excluded else tidy[~tidy["excluded"]]
    notes: list[str] = []
    n_same = int(((fit_rows["left_unit"] == fit_rows["right_unit"])
                  & ~fit_rows["is_validation"]).sum())
    if n_same:
        notes.append(f"{n_same} vote(s) compare two items of the same {level}; they carry no "
                     "information about its rank and are not in the fit")
    items = sorted(set(tidy.loc[~tidy["is_validation"], "left_unit"])
                   | set(tidy.loc[~tidy["is_validation"], "right_unit"]))
    if len(items) < 2:
        raise UserError(f"{where}: fewer than two {level}s to rank")
    pdata = pair_data(fit_rows, items)
    if len(pdata.data) == 0:
        raise UserError(f"{where}: no usable votes after exclusions; check the 'excluded' column")
    k = len(items)
    alpha_used = default_alpha(k) if alpha is None else float(alpha)
    wins = win_matrix(k, pdata.data, pdata.weights)
    never = [items[i] for i in np.flatnonzero(wins.sum(0) + wins.sum(1) == 0)]
    if never:
        notes.append(f"no included votes for: {', '.join(never)} (scores are the prior's 0)")
    if not is_strongly_connected(wins):
        notes.append("the comparison graph is not strongly connected (some item never wins or "
                     "never loses); scores there are held finite only by the regularisation")
    theta, boot, summary = fit_with_bootstrap(pdata, wins, reps, seed, alpha_used, progress)
    table = ranking_table(items, theta, summary, wins, level)
    audit, audit_tau = exclusion_audit(tidy, items, theta, alpha_used, level)
    people = per_person_checks(tidy, items, theta)
    images = None
    if level == "method":
        names = pd.unique(pd.concat([tidy["left"], tidy["right"]]))
        imgs = {s.split(item_sep, 1)[1] for s in names if item_sep and item_sep in s}
        images = sorted(imgs) or None
    agreement = (metric_agreement(items, theta, boot, metrics, level, resolution, images,
                                  item_sep) if metrics is not None else None)
    excluded_people = tidy.loc[tidy["excluded"], "participant"].unique()
    counts = {
        "rows": len(tidy),
        "participants": int(tidy["participant"].nunique()),
        "participants_excluded": len(excluded_people),
        "participants_in_fit": len(pdata.people),
        "validation_rows": int(tidy["is_validation"].sum()),
        "votes_in_fit": int(len(fit_rows[~fit_rows["is_validation"]
                                         & (fit_rows["left_unit"] != fit_rows["right_unit"])])),
        "ties_in_fit": int((pdata.weights == 0.5).sum() // 2),
        "same_unit_votes": n_same,
        "exclusion_audit_tau": audit_tau,
    }
    settings = {"level": level, "item_sep": item_sep, "reps": reps, "seed": seed,
                "alpha": alpha_used, "prior_precision_per_item": alpha_used * k,
                "include_excluded": include_excluded, "resolution": resolution,
                "tie_rule": "half-win (Davidson with nu=1)", "interval": "95% percentile",
                "bootstrap_unit": "participant"}
    return StudyAnalysis(items, theta, boot, summary, wins, table, audit,
                         position_bias(tidy[~tidy["excluded"]]), people,
                         pair_counts(fit_rows), circular_triads(fit_rows), agreement,
                         settings, counts, notes)
