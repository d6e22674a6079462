"""`survey fit` says when the data cannot support its claims (issue 10, defect 8)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench import cli
from bench import ranking as R
from bench.ranking import simulate as S
from bench.ranking.report import table_markdown, text_report


def _votes(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["participant", "left", "right", "choice"])


def test_one_vote_is_never_a_significant_finding(tmp_path, caplog):
    """Regression: one vote gave "Significant pairs: 1 of 1" with a zero-width interval."""
    votes = _votes([("p1", "a/i1", "b/i1", "left")])
    res = R.analyse_votes(votes, reps=100)
    assert not res.summary.significant.any() and not res.jod_summary.significant.any()
    assert np.isnan(res.table[["ci_low", "ci_high", "jod_low", "jod_high"]].to_numpy()).all()
    assert any("only 1 included participant" in w for w in res.warnings)
    assert any("fewer than 5 votes" in w and "a vs b (1)" in w for w in res.warnings)
    report = text_report(res, "one.csv")
    assert "Significant pairs at 95 %: 1 of 1" not in report
    assert "not assessed" in report and "WARNING: only 1 included participant" in report
    assert "| – |" in table_markdown(res.table, "method")  # no zero-width interval shown
    # Through the command line: the warning reaches the user, the exit is still 0.
    csv = tmp_path / "one.csv"
    votes.to_csv(csv, index=False)
    assert cli.main(["survey", "fit", str(csv), "--out", str(tmp_path / "o"), "--reps",
                     "50"]) == 0
    assert "warning: only 1 included participant" in caplog.text
    assert "Significant pairs at 95 %: 1 of 1" not in (tmp_path / "o" / "report.txt").read_text()


def test_zero_width_pair_interval_is_not_significant_even_with_many_people():
    # 25 people, each voting once, all for a over b: every bootstrap replicate is identical,
    # so the percentile interval of the difference has zero width.
    votes = _votes([(f"p{i}", "a/x", "b/x", "left") for i in range(25)])
    res = R.analyse_votes(votes, reps=100)
    assert res.summary.degenerate[0, 1] and not res.summary.significant.any()
    assert "Uncertainty not measurable" in text_report(res, "v.csv")
    assert not any("included participant" in w for w in res.warnings)


def test_enough_people_and_votes_give_no_warning_and_claims_are_made():
    votes = S.simulate_votes([1.0, 0.0, -1.0], 60, trials=20, validation=0, seed=4)
    res = R.analyse_votes(votes, reps=200)
    assert res.warnings == []
    assert res.supports_significance and res.summary.significant.any()
    assert "Significant pairs at 95 %: " in text_report(res, "v.csv")


def test_thin_pairs_are_named():
    pairs = pd.DataFrame({"a": ["x", "x"], "b": ["y", "z"], "n_votes": [3, 40]})
    out = R.adequacy_warnings(30, pairs)
    assert len(out) == 1 and "x vs y (3)" in out[0] and "x vs z" not in out[0]
    assert R.adequacy_warnings(30, pairs, min_pair_votes=3) == []
