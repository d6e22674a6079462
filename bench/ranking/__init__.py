"""Ranking from pairwise votes: Bradley–Terry and JOD scaling with participant bootstrap,
data checks, agreement with the metrics, a crowd simulator, charts and reports.

No Flask here, and nothing from ``survey_app``: the site and the CLI call this package.

Modules: ``votes`` (reading and tidying vote tables), ``bt`` (Bradley–Terry fit and the
bootstrap), ``scaling`` (Thurstone Case V in JOD), ``checks`` (position bias, consistency,
exclusion audit, data adequacy), ``agreement`` (metrics vs people), ``fit`` (one study's
whole analysis), ``simulate`` (crowds), ``report`` (tables and files), ``plots`` (figures;
imports matplotlib, so it is not re-exported here).
"""

from .agreement import (
    metric_agreement,
    monotone_groups,
    read_metrics,
    vote_agreement,
)
from .bt import (
    BootstrapSummary,
    bootstrap_bt,
    default_alpha,
    fit_bt,
    fit_bt_batch,
    fit_bt_counts,
    is_strongly_connected,
    kendall_tau_b,
    p_beat_average,
    summarise_bootstrap,
    win_matrix,
)
from .checks import (
    MIN_PAIR_VOTES,
    MIN_PARTICIPANTS,
    adequacy_warnings,
    circular_triads,
    exclusion_audit,
    pair_counts,
    per_person_checks,
    position_bias,
)
from .fit import StudyAnalysis, analyse_votes, bt_point_scores, fit_with_bootstrap, ranking_table
from .scaling import SIGMA, bootstrap_jod, fit_jod, fit_jod_batch
from .votes import PairData, pair_data, read_votes, tidy_votes, unit_of

__all__ = [
    "MIN_PAIR_VOTES", "MIN_PARTICIPANTS", "SIGMA", "BootstrapSummary", "PairData",
    "StudyAnalysis", "adequacy_warnings", "analyse_votes", "bootstrap_bt", "bootstrap_jod",
    "bt_point_scores", "circular_triads", "default_alpha", "exclusion_audit", "fit_bt",
    "fit_bt_batch", "fit_bt_counts", "fit_jod", "fit_jod_batch", "fit_with_bootstrap",
    "is_strongly_connected", "kendall_tau_b", "metric_agreement",
    "monotone_groups", "p_beat_average", "pair_counts", "pair_data", "per_person_checks",
    "position_bias", "ranking_table", "read_metrics", "read_votes", "summarise_bootstrap",
    "tidy_votes", "unit_of", "vote_agreement", "win_matrix",
]
