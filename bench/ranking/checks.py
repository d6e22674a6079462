"""Data checks on a vote table: position bias, consistency, triads, per-person checks, the
exclusion audit, and whether the data can support the claims a fit would make.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import binom, binomtest

from .bt import fit_bt, kendall_tau_b
from .votes import pair_data

# Below these sizes the report says the data cannot support its claims (issue 10, defect 8):
# a participant bootstrap needs enough people to vary, and a pair judged a handful of times
# says little about which side is better.
MIN_PARTICIPANTS = 20
MIN_PAIR_VOTES = 5


def adequacy_warnings(n_participants: int, pairs: pd.DataFrame, unit: str = "method",
                      min_participants: int = MIN_PARTICIPANTS,
                      min_pair_votes: int = MIN_PAIR_VOTES) -> list[str]:
    """Plain-language warnings when the data are too thin for the intervals and claims.

    ``pairs`` is ``pair_counts``'s table. Returns an empty list when nothing is wrong.
    """
    out = []
    if n_participants < min_participants:
        out.append(
            f"only {n_participants} included participant(s): a participant bootstrap needs "
            f"about {min_participants} or more, so the intervals are not reliable and no pair "
            "is reported as significantly different"
        )
    thin = pairs[pairs["n_votes"] < min_pair_votes]
    if len(thin):
        names = ", ".join(f"{r.a} vs {r.b} ({r.n_votes})" for r in thin.head(8).itertuples())
        more = f" and {len(thin) - 8} more" if len(thin) > 8 else ""
        out.append(f"{len(thin)} {unit} pair(s) have fewer than {min_pair_votes} votes: "
                   f"{names}{more}; their order is not established")
    return out


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


