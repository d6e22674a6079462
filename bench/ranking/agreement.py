"""Agreement between people and the objective metrics.

Two views: the method-level Kendall tau between the BT ranking and each metric's ranking
(``metric_agreement``), and the vote-level analysis (``vote_agreement``): for every included
vote, does the metric prefer the output the person chose?
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import UserError
from bench.metrics.registry import higher_is_better

from .bt import kendall_tau_b


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

    Metrics are oriented so that higher is better (direction from the metric registry) before
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
            sign = 1.0 if higher_is_better(metric) else -1.0
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
# Vote-level agreement
# --------------------------------------------------------------------------------------

CV_FOLDS = 5  # participant folds for the out-of-sample calibrated predictions
_RIDGE = 1e-3  # tiny penalty on the standardised logistic slope: finite under separation


def split_item(names: pd.Series, sep: str) -> tuple[np.ndarray, np.ndarray]:
    """``METHOD<sep>IMAGE`` names -> (method, image) arrays; image is '' without ``sep``."""
    codes, uniques = pd.factorize(names.astype(str))  # a study has few distinct items
    parts = [u.split(sep, 1) if sep else [u] for u in uniques]
    method = np.array([p[0] for p in parts] + [""], dtype=object)
    image = np.array([p[1] if len(p) > 1 else "" for p in parts] + [""], dtype=object)
    return method[codes].astype(str), image[codes].astype(str)


def _pick_resolution(metrics: pd.DataFrame, resolution: int | None) -> pd.DataFrame:
    if resolution is None:
        res = metrics["resolution"].unique()
        if len(res) > 1:
            raise UserError(
                "metrics: several resolutions "
                f"({', '.join(str(r) for r in sorted(res))}); choose one with --resolution"
            )
        return metrics
    m = metrics[metrics["resolution"] == resolution]
    if m.empty:
        raise UserError(f"metrics: no rows for resolution {resolution}; check --resolution")
    return m


def matched_metric_values(votes: pd.DataFrame, metrics: pd.DataFrame, resolution: int | None,
                          item_sep: str = "/") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Each vote's metric values on the left and right output: ``(left, right, names)``.

    ``left``/``right`` are ``float64[n_votes, n_metrics]``, NaN where metrics.csv has no row
    for that method and image at the study's resolution.
    """
    m = _pick_resolution(metrics, resolution)
    wide = m.pivot_table(index=["method", "image"], columns="metric", values="value",
                         aggfunc="mean")
    wide.index = pd.MultiIndex.from_arrays(
        [wide.index.get_level_values(0).astype(str), wide.index.get_level_values(1).astype(str)])
    names = [str(c) for c in wide.columns]
    out = []
    for side in ("left", "right"):
        keys = pd.MultiIndex.from_arrays(split_item(votes[side], item_sep))
        out.append(wide.reindex(keys).to_numpy(dtype=np.float64))
    return out[0], out[1], names


def _choice_score(outcome: np.ndarray) -> np.ndarray:
    """1 = left chosen, 0 = right, 0.5 = tie."""
    return np.where(outcome == "left", 1.0, np.where(outcome == "right", 0.0, 0.5))


def _agree(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """2AFC agreement per vote: 1 same side, 0 opposite, 0.5 if either side is a tie."""
    half = (pred == 0.5) | (y == 0.5)
    return np.where(half, 0.5, (pred == y).astype(np.float64))


def _side(diff: np.ndarray) -> np.ndarray:
    """Preferred side from an oriented left-minus-right difference (1 left, 0 right, .5 tie)."""
    return np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))


def human_ceiling(group: np.ndarray, person: np.ndarray, y_a: np.ndarray, n_people: int,
                  reps: int, seed: int) -> tuple[float, float, float, int]:
    """Agreement of each vote with the other people's majority on the same image and pair.

    ``group``: int codes of (image, unordered pair); ``person``: codes ``0..P-1``; ``y_a``:
    the vote in the pair's own orientation (1 = first item chosen, 0 = second, 0.5 tie).
    Every vote of the same person in the group is left out of "the others"; a tied majority
    or a tied vote counts half; votes nobody else matched are not counted. The bootstrap
    resamples people (drawn like every bootstrap here) and recomputes the majorities in
    each replicate, since they too depend on who took part. Returns
    ``(estimate, low, high, n_votes)``; the interval is NaN when it has zero width.
    """
    from scipy import sparse

    from .bt import person_resamples

    cell, cell_index = pd.factorize(pd.MultiIndex.from_arrays([person, group]))
    c_person = cell_index.get_level_values(0).to_numpy()
    c_group = cell_index.get_level_values(1).to_numpy()
    n_a = np.bincount(cell, weights=(y_a == 1.0))  # votes for the pair's first item
    n_b = np.bincount(cell, weights=(y_a == 0.0))
    n_t = np.bincount(cell, weights=(y_a == 0.5))
    n = n_a + n_b + n_t
    score = n_a + 0.5 * n_t  # "first item" votes, ties half
    n_groups = int(group.max()) + 1 if len(group) else 0
    score_pg = sparse.csr_matrix((score, (c_person, c_group)), shape=(n_people, n_groups))
    count_pg = sparse.csr_matrix((n, (c_person, c_group)), shape=(n_people, n_groups))

    def agreement(w: np.ndarray, g_score: np.ndarray, g_count: np.ndarray) -> np.ndarray:
        # w: [R, cells] person weights; g_*: [R, groups] weighted sums over everybody.
        o_count = g_count[:, c_group] - w * n
        with np.errstate(invalid="ignore", divide="ignore"):
            share = (g_score[:, c_group] - w * score) / o_count
        valid = o_count > 1e-9
        agree = np.where(share > 0.5, n_a + 0.5 * n_t,
                         np.where(share < 0.5, n_b + 0.5 * n_t, 0.5 * n))
        num = (w * np.where(valid, agree, 0.0)).sum(axis=1)
        den = (w * np.where(valid, n, 0.0)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return num / den

    ones = np.ones((1, n_people))
    est = float(agreement(ones[:, c_person], ones @ score_pg, ones @ count_pg)[0])
    o_all = np.asarray(count_pg.sum(axis=0)).ravel()[c_group] - n
    n_votes = int(n[o_all > 0].sum())
    if reps <= 0 or n_votes == 0:
        return est, math.nan, math.nan, n_votes
    boot = np.empty(reps)
    chunk = max(1, 5_000_000 // max(len(cell_index), n_groups, 1))
    for s_, m in person_resamples(n_people, reps, seed, chunk):
        boot[s_ : s_ + len(m)] = agreement(m[:, c_person], np.asarray(m @ score_pg),
                                           np.asarray(m @ count_pg))
    low, high = np.nanquantile(boot, [0.025, 0.975])
    if math.isclose(high - low, 0.0, abs_tol=1e-12):
        return est, math.nan, math.nan, n_votes
    return est, float(low), float(high), n_votes


def _logistic_slope(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per column, the slope ``b`` of ``P(left) = sigmoid(b * x)`` (no intercept: swapping
    the sides must flip the prediction) by Newton's method; ``w`` masks votes (0/1)."""
    scale = np.sqrt((w * x * x).sum(axis=0) / np.maximum(w.sum(axis=0), 1))
    scale = np.where(scale > 0, scale, 1.0)
    z = x / scale
    b = np.zeros(x.shape[1])
    for _ in range(100):
        p = 1 / (1 + np.exp(-b * z))
        grad = (w * (y[:, None] - p) * z).sum(axis=0) - _RIDGE * b
        hess = (w * p * (1 - p) * z * z).sum(axis=0) + _RIDGE
        step = np.clip(grad / hess, -5, 5)
        b += step
        if np.abs(step).max() < 1e-10:
            break
    return b / scale


def _loglik_brier(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return y * np.log(p) + (1 - y) * np.log1p(-p), (p - y) ** 2


def monotone_groups(pred: np.ndarray, names: list[str]) -> list[list[str]]:
    """Metrics whose preferred side is the same on every vote, grouped (order kept).

    On protocol outputs L1 and hole-L1 (and PSNR and hole-PSNR) are monotone transforms of
    each other per image, so they predict every vote identically: one group, not a tie.
    """
    groups: list[list[int]] = []
    for j in range(pred.shape[1]):
        for g in groups:
            if np.array_equal(pred[:, g[0]], pred[:, j]):
                g.append(j)
                break
        else:
            groups.append([j])
    return [[names[j] for j in g] for g in groups]


def vote_agreement(
    votes: pd.DataFrame,
    metrics: pd.DataFrame,
    resolution: int | None = None,
    item_sep: str = "/",
    method_scores: dict[str, float] | None = None,
    reps: int = 1000,
    seed: int = 0,
    folds: int = CV_FOLDS,
) -> tuple[pd.DataFrame, list[str]]:
    """How well each metric agrees with people, vote by vote.

    ``votes``: tidy included comparison votes (``tidy_votes`` output without validation,
    excluded and same-method rows). ``metrics``: a run's tidy metrics.csv. Returns
    ``(table, notes)``; ``table`` has one row per metric group plus reference rows
    (``kind`` = ``metric``, ``model``, ``ceiling``, ``chance``), with columns
    ``name, kind, members, n_votes, agreement, agreement_low, agreement_high`` (2AFC:
    ties half), and for metric groups and the model ``loglik`` (mean log-likelihood per vote,
    nats) and ``brier`` with CIs and the logistic ``slope``. Probabilities are predicted
    out of sample: the slope (and, for the BT reference row, the method strengths) are fitted
    on the other participant folds. Intervals: participant bootstrap (95 % percentile).
    ``method_scores`` (the study's BT log-strengths per method) give the ``model`` row's
    2AFC side (in sample: the study's own fit); its probabilities are refitted per fold.
    """
    notes: list[str] = []
    n_all = len(votes)
    cols = ["name", "kind", "members", "n_votes", "agreement", "agreement_low",
            "agreement_high", "loglik", "loglik_low", "loglik_high", "brier", "brier_low",
            "brier_high", "slope"]
    if n_all == 0:
        return pd.DataFrame(columns=cols), ["no included comparison votes to compare with"]
    left, right, names = matched_metric_values(votes, metrics, resolution, item_sep)
    present = ~np.isnan(left) & ~np.isnan(right)
    share = present.mean(axis=0)
    keep = [j for j in range(len(names)) if share[j] >= 0.5]
    dropped = [names[j] for j in range(len(names)) if share[j] < 0.5]
    if not keep:
        notes.append(f"none of the {n_all} votes could be matched to the run's metrics.csv "
                     "(methods, images or resolution differ); no vote-level agreement")
        return pd.DataFrame(columns=cols), notes
    if dropped:
        notes.append(f"metrics left out (values for fewer than half the votes): "
                     f"{', '.join(dropped)}")
    ok = present[:, keep].all(axis=1)
    if not ok.all():
        notes.append(f"{int((~ok).sum())} of {n_all} votes could not be matched to the run's "
                     "metrics and are left out of the agreement analysis")
    v = votes[ok].reset_index(drop=True)
    names = [names[j] for j in keep]
    sign = np.array([1.0 if higher_is_better(n) else -1.0 for n in names])
    with np.errstate(invalid="ignore"):
        diff = (left[ok][:, keep] - right[ok][:, keep]) * sign  # > 0: the metric prefers left
    # PSNR is infinite for an exact copy: keep the preferred side, cap the size for the fit.
    finite = np.where(np.isfinite(diff), np.abs(diff), 0.0).max(axis=0)
    diff = np.where(np.isnan(diff), 0.0, np.clip(diff, -2 * finite - 1, 2 * finite + 1))
    y = _choice_score(v["outcome"].to_numpy())
    people, person = np.unique(v["participant"].to_numpy(dtype=str), return_inverse=True)
    fold = np.random.default_rng(seed).permutation(len(people))[person] % max(2, folds)

    pred = _side(diff)
    groups = monotone_groups(pred, names)
    for g in groups:
        if len(g) > 1:
            notes.append(f"{' and '.join(g)} prefer the same output on every vote (monotone "
                         "transforms of each other here): reported as one group")
    first = [names.index(g[0]) for g in groups]
    agree = _agree(pred[:, first], y[:, None])
    p_metric, slope = _calibrated(diff[:, first], y, fold)
    ll, brier = _loglik_brier(p_metric, y[:, None])
    columns = {"agreement": [agree], "loglik": [ll], "brier": [brier]}
    rows = [{"name": " = ".join(g), "kind": "metric", "members": ", ".join(g),
             "slope": float(s)} for g, s in zip(groups, slope, strict=True)]
    bt = _bt_reference(v, y, fold, method_scores) if method_scores is not None else None
    if bt is not None:
        bt_ll, bt_brier = _loglik_brier(bt[1], y)
        columns["agreement"].append(bt[0][:, None])
        columns["loglik"].append(bt_ll[:, None])
        columns["brier"].append(bt_brier[:, None])
        rows.append({"name": "Bradley-Terry (method level)", "kind": "model",
                     "members": "", "slope": math.nan})
    # Human ceiling: agreement with the other people's majority on the same image and pair.
    lu, ru = v["left"].to_numpy(dtype=str), v["right"].to_numpy(dtype=str)
    a_first = lu < ru
    key = pd.Series(np.where(a_first, lu, ru)) + "\x00" + np.where(a_first, ru, lu)
    group = pd.factorize(key)[0]
    y_a = np.where(a_first, y, 1 - y)
    ceiling = human_ceiling(group, person, y_a, len(people), reps, seed)
    if ceiling[3] == 0:
        notes.append("no image and pair was judged by two or more people: no human ceiling")
    ll_all = np.column_stack(columns["loglik"])
    br_all = np.column_stack(columns["brier"])
    table = pd.DataFrame(rows)
    for name, values in (("agreement", np.column_stack(columns["agreement"])),
                         ("loglik", ll_all), ("brier", br_all)):
        est, low, high = person_bootstrap_means(values, person, len(people), reps, seed)
        table[name], table[f"{name}_low"], table[f"{name}_high"] = est, low, high
    table["n_votes"] = len(v)
    table.loc[len(table)] = {"name": "human ceiling (leave-one-out majority)",
                             "kind": "ceiling", "members": "", "n_votes": ceiling[3],
                             "agreement": ceiling[0], "agreement_low": ceiling[1],
                             "agreement_high": ceiling[2], "slope": math.nan}
    chance_ll, chance_brier = _loglik_brier(np.full(len(v), 0.5), y)
    table.loc[len(table)] = {"name": "chance (always 0.5)", "kind": "chance", "members": "",
                             "n_votes": len(v), "agreement": 0.5,
                             "loglik": float(chance_ll.mean()),
                             "brier": float(chance_brier.mean()), "slope": math.nan}
    return table.reindex(columns=cols), notes


def _calibrated(diff: np.ndarray, y: np.ndarray, fold: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per column of oriented differences: out-of-sample ``P(left)`` (slope fitted on the
    other participant folds) and the slope fitted on all votes."""
    p = np.empty(diff.shape)
    for f in np.unique(fold):
        train = np.broadcast_to((fold != f).astype(np.float64)[:, None], diff.shape)
        test = fold == f
        p[test] = 1 / (1 + np.exp(-_logistic_slope(diff, y, train) * diff[test]))
    return p, _logistic_slope(diff, y, np.ones_like(diff))


def _bt_reference(v: pd.DataFrame, y: np.ndarray, fold: np.ndarray,
                  method_scores: dict[str, float]) -> tuple[np.ndarray, np.ndarray] | None:
    """The method-level BT model as a predictor: per vote its 2AFC agreement (side from the
    study's fit) and out-of-sample ``P(left)`` (refitted on the other folds); None when a
    vote's method has no score."""
    from .bt import fit_bt_counts

    units = sorted(method_scores)
    index = {u: i for i, u in enumerate(units)}
    li = np.array([index.get(u, -1) for u in v["left_unit"]])
    ri = np.array([index.get(u, -1) for u in v["right_unit"]])
    if (li < 0).any() or (ri < 0).any():
        return None
    theta = np.array([method_scores[u] for u in units])
    agree = _agree(_side(theta[li] - theta[ri]), y)
    p = np.empty(len(v))
    for f in np.unique(fold):
        tr, te = fold != f, fold == f
        wins = np.zeros((len(units), len(units)))
        np.add.at(wins, (li[tr], ri[tr]), y[tr])  # ties as half wins, as in the fit
        np.add.at(wins, (ri[tr], li[tr]), 1 - y[tr])
        th = fit_bt_counts(wins)
        p[te] = 1 / (1 + np.exp(th[ri[te]] - th[li[te]]))
    return agree, p


def person_bootstrap_means(values: np.ndarray, person: np.ndarray, n_people: int, reps: int,
                           seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over votes of each column (NaN = not counted), with a participant bootstrap.

    ``values``: ``float64[n_votes, C]``. Returns ``(estimate, low, high)``, each
    ``float64[C]``; intervals are 95 % percentiles, NaN when ``reps`` is 0 or the interval
    has zero width (nothing to resample).
    """
    from .bt import person_resamples

    have = ~np.isnan(values)
    sums = np.zeros((n_people, values.shape[1]))
    counts = np.zeros((n_people, values.shape[1]))
    np.add.at(sums, person, np.where(have, values, 0.0))
    np.add.at(counts, person, have.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        est = sums.sum(axis=0) / counts.sum(axis=0)
    if reps <= 0:
        nan = np.full(values.shape[1], np.nan)
        return est, nan, nan
    boot = np.empty((reps, values.shape[1]))
    chunk = max(1, 20_000_000 // max(n_people, 1) // 8)
    for s, m in person_resamples(n_people, reps, seed, chunk):
        with np.errstate(invalid="ignore", divide="ignore"):
            boot[s : s + len(m)] = (m @ sums) / (m @ counts)
    low, high = np.nanquantile(boot, [0.025, 0.975], axis=0)
    flat = np.isclose(high - low, 0.0, rtol=0.0, atol=1e-12)
    return est, np.where(flat, np.nan, low), np.where(flat, np.nan, high)
