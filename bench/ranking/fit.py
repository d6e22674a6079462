"""One study's whole analysis: BT and JOD fits with participant bootstrap, checks, and
agreement with the metrics. ``analyse_votes`` is what ``hrbench survey fit`` reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.errors import UserError

from .agreement import metric_agreement, vote_agreement
from .bt import (
    BootstrapSummary,
    bootstrap_bt,
    default_alpha,
    fit_bt_counts,
    is_strongly_connected,
    p_beat_average,
    summarise_bootstrap,
    win_matrix,
)
from .checks import (
    MIN_PARTICIPANTS,
    adequacy_warnings,
    circular_triads,
    exclusion_audit,
    pair_counts,
    per_person_checks,
    position_bias,
)
from .scaling import bootstrap_jod, fit_jod, p_beat_average_jod
from .votes import PairData, pair_data, tidy_votes

SCALES = ("bt", "jod")


@dataclass
class StudyAnalysis:
    """Everything ``hrbench survey fit`` reports. Arrays are indexed like ``items``."""

    items: list[str]
    theta: np.ndarray  # centred BT log-strengths
    boot: np.ndarray
    summary: BootstrapSummary
    jod: np.ndarray  # Thurstone Case V scores in JOD (1 JOD = 75 % preference), centred
    jod_boot: np.ndarray
    jod_summary: BootstrapSummary
    wins: np.ndarray  # float64[K, K] wins of row over column (included votes, half-win ties)
    table: pd.DataFrame
    audit: pd.DataFrame
    position: dict
    people: pd.DataFrame
    pairs: pd.DataFrame
    triads_aggregate: int
    metrics: pd.DataFrame | None  # method-level Kendall tau per metric
    votes_agreement: pd.DataFrame | None  # vote-level agreement (``agreement.vote_agreement``)
    settings: dict
    counts: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the data cannot support some claims

    @property
    def supports_significance(self) -> bool:
        """False when too few people took part for the bootstrap to mean anything."""
        return not self.settings.get("too_few_participants", False)


def ranking_table(items: list[str], theta: np.ndarray, summary: BootstrapSummary,
                  wins: np.ndarray, unit: str = "method", jod: np.ndarray | None = None,
                  jod_summary: BootstrapSummary | None = None) -> pd.DataFrame:
    """Tidy ranking, best first: rank, unit, BT score and CI, P(beat average) and CI, votes,
    and (when given) the JOD score and CI beside them. Missing intervals are NaN."""
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
    if jod is not None and jod_summary is not None:
        t["jod"] = jod
        t["jod_low"] = jod_summary.low
        t["jod_high"] = jod_summary.high
        t["jod_p_beat_avg"] = p_beat_average_jod(jod)
        t["jod_p_low"] = p_beat_average_jod(jod_summary.low)
        t["jod_p_high"] = p_beat_average_jod(jod_summary.high)
    t = t.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    t.insert(0, "rank", np.arange(1, len(t) + 1))
    return t


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
    """Fit, bootstrap and check one study. ``votes`` is a raw vote table (see ``tidy_votes``).

    ``metrics``: the study's source run's metrics.csv (tidy), for the method-level Kendall
    tau and the vote-level agreement. ``warnings`` says when the data cannot support the
    intervals or the significance claims (too few people, pairs with few votes); then no
    pair is reported as significant.
    """
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
    jod = fit_jod(wins)
    jod_boot = bootstrap_jod(k, pdata.data, pdata.participant, pdata.weights, reps, seed)
    jod_summary = summarise_bootstrap(jod_boot)
    pairs = pair_counts(fit_rows)
    warnings = adequacy_warnings(len(pdata.people), pairs, level)
    too_few = len(pdata.people) < MIN_PARTICIPANTS
    if too_few:
        # A bootstrap over a handful of people is no evidence: claim no separation.
        for s_ in (summary, jod_summary):
            s_.significant[:] = False
    table = ranking_table(items, theta, summary, wins, level, jod, jod_summary)
    audit, audit_tau = exclusion_audit(tidy, items, theta, alpha_used, level)
    people = per_person_checks(tidy, items, theta)
    images = None
    if level == "method":
        names = pd.unique(pd.concat([tidy["left"], tidy["right"]]))
        imgs = {s.split(item_sep, 1)[1] for s in names if item_sep and item_sep in s}
        images = sorted(imgs) or None
    agreement = votes_agreement = None
    if metrics is not None:
        agreement = metric_agreement(items, theta, boot, metrics, level, resolution, images,
                                     item_sep)
        compare = fit_rows[~fit_rows["is_validation"]
                           & (fit_rows["left_unit"] != fit_rows["right_unit"])]
        scores = dict(zip(items, map(float, theta), strict=True)) if level == "method" else None
        votes_agreement, agree_notes = vote_agreement(compare, metrics, resolution, item_sep,
                                                      scores, reps, seed)
        # No vote matched at all: the comparison the user asked for is missing, say it loudly.
        (warnings if votes_agreement.empty else notes).extend(agree_notes)
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
                "include_excluded": include_excluded, "resolution": resolution, "images": images,
                "tie_rule": "half-win (Davidson with nu=1)", "interval": "95% percentile",
                "bootstrap_unit": "participant", "jod": "Thurstone Case V, 1 JOD = 75 %",
                "too_few_participants": too_few}
    return StudyAnalysis(items, theta, boot, summary, jod, jod_boot, jod_summary, wins, table,
                         audit, position_bias(tidy[~tidy["excluded"]]), people, pairs,
                         circular_triads(fit_rows), agreement, votes_agreement, settings,
                         counts, notes, warnings)


def bt_point_scores(votes: pd.DataFrame) -> dict[str, float]:
    """BT log-strength per method from included votes (point fit only: fast enough for the
    site's live admin page). ``votes``: ``participant, left, right, choice`` rows."""
    tidy = tidy_votes(votes)
    names = sorted(set(tidy["left_unit"]) | set(tidy["right_unit"]))
    pdata = pair_data(tidy, names)
    wins = win_matrix(len(names), pdata.data, pdata.weights)
    return dict(zip(names, map(float, fit_bt_counts(wins)), strict=True))
