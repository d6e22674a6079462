"""Vote-level agreement between metrics and people (bench.ranking.agreement), checked on
crowds simulated from a planted metric (bench.ranking.simulate)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from bench import ranking as R
from bench.errors import UserError
from bench.ranking import simulate as S
from bench.ranking.agreement import human_ceiling
from survey_app.analysis_cli import register_analysis_commands

METHODS = [f"m{i}" for i in range(5)]
IMAGES = [f"img{i:02d}" for i in range(12)]
# The planted metric (ssim) and correlated distractors of it.
NOISE = {"ssim": 0.0, "psnr": 0.7, "l1": 0.7, "lpips": 1.0}


def _crowd(seed: int, participants: int = 250, **quality):
    metrics = S.synthetic_metrics(METHODS, IMAGES, NOISE, seed=seed)
    q = S.hidden_quality(metrics, "ssim", seed=seed, **quality)
    votes = S.simulate_metric_crowd(q, participants, seed=seed)
    return metrics, votes


def _agreement(metrics, votes, reps=0, seed=0, scores=None):
    return R.vote_agreement(R.tidy_votes(votes), metrics, method_scores=scores, reps=reps,
                            seed=seed)


def _top_metric(table: pd.DataFrame) -> str:
    m = table[table["kind"] == "metric"]
    return str(m.loc[m["agreement"].idxmax(), "name"])


def _planted_first(seeds: range) -> int:
    return sum(_top_metric(_agreement(*_crowd(s))[0]) == "ssim" for s in seeds)


def test_planted_metric_is_ranked_first_fast():
    assert _planted_first(range(20)) >= 19


@pytest.mark.slow
def test_planted_metric_is_ranked_first_in_95_of_100_seeds():
    assert _planted_first(range(100)) >= 95


def test_estimated_ceiling_matches_the_simulated_noise():
    covered, errors = 0, []
    for seed in range(20):
        metrics, votes = _crowd(seed, participants=120)
        table, _ = _agreement(metrics, votes, reps=200, seed=seed)
        c = table[table["kind"] == "ceiling"].iloc[0]
        truth = S.expected_ceiling(votes)
        covered += c["agreement_low"] <= truth <= c["agreement_high"]
        errors.append(c["agreement"] - truth)
    assert covered >= 17  # a 95 % interval; 20 seeds
    assert abs(np.mean(errors)) < 0.01  # and no bias


def test_calibrated_prediction_recovers_the_planted_slope_and_beats_chance():
    metrics, votes = _crowd(3, strength=1.5)
    scores = R.bt_point_scores(votes[["participant", "left", "right", "choice"]])
    table, notes = _agreement(metrics, votes, reps=100, scores=scores)
    t = table.set_index("name")
    ssim = metrics[metrics["metric"] == "ssim"]
    within = ssim["value"] - ssim.groupby("image")["value"].transform("mean")
    # P(left) = sigmoid(1.5 * (z_l - z_r)), z = ssim over its within-image spread: the slope
    # per unit of ssim is 1.5 / that spread.
    assert t.loc["ssim", "slope"] == pytest.approx(1.5 / np.sqrt((within**2).mean()), rel=0.1)
    chance = t.loc["chance (always 0.5)"]
    assert chance["loglik"] == pytest.approx(-np.log(2)) and chance["brier"] == 0.25
    for name in ("ssim", "psnr", "Bradley-Terry (method level)"):
        assert t.loc[name, "loglik"] > chance["loglik"] and t.loc[name, "brier"] < 0.25
        assert t.loc[name, "loglik_low"] <= t.loc[name, "loglik"] <= t.loc[name, "loglik_high"]
    # Per-image quality beats a method-level model that cannot see the image.
    assert t.loc["ssim", "loglik"] > t.loc["Bradley-Terry (method level)", "loglik"]
    assert notes == []


def test_ties_count_half_and_monotone_metrics_form_one_group():
    metrics = pd.DataFrame([
        (m, 1024, "i", name, v)
        for m, l1 in (("a", 1.0), ("b", 2.0), ("c", 2.0))
        # On protocol outputs hole-L1 is L1 / hole share and hole-PSNR = PSNR + constant.
        for name, v in (("l1", l1), ("hole_l1", l1 * 9), ("psnr", 30 - l1),
                        ("hole_psnr", 20 - l1), ("ssim", {"a": 0.5, "b": 0.9, "c": 0.1}[m]))
    ], columns=["method", "resolution", "image", "metric", "value"])
    votes = pd.DataFrame({
        "participant": ["p1", "p1", "p2", "p2"],
        "left": ["a/i", "b/i", "a/i", "b/i"],
        "right": ["b/i", "c/i", "c/i", "a/i"],
        "choice": ["left", "left", "tie", "right"],
    })
    table, notes = _agreement(metrics, votes)
    t = table.set_index("name")
    # l1/hole_l1/psnr/hole_psnr all prefer a > b = c: one group, not four tied rows.
    assert "hole_l1 = hole_psnr = l1 = psnr" in t.index and "ssim" in t.index
    assert any("prefer the same output on every vote" in n for n in notes)
    # l1 group: vote 1 agrees (a), vote 2 tie in the metric (b = c) -> 0.5,
    # vote 3 tie by the person -> 0.5, vote 4 agrees (a on the right) -> (1 + .5 + .5 + 1) / 4.
    assert t.loc["hole_l1 = hole_psnr = l1 = psnr", "agreement"] == pytest.approx(0.75)
    # ssim prefers b > a > c: vote 1 disagrees, 2 agrees, 3 tie, 4 disagrees.
    assert t.loc["ssim", "agreement"] == pytest.approx(1.5 / 4)


def test_human_ceiling_leaves_out_the_whole_person():
    group = np.array([0, 0, 0, 0, 1, 2, 2, 2])
    person = np.array([0, 0, 1, 2, 0, 0, 1, 2])
    y = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5])
    est, low, high, n = human_ceiling(group, person, y, 3, reps=0, seed=0)
    # Group 0: person 0's others (1, 2) chose the second item -> p0's two votes disagree;
    # person 1's others are p0 (twice the first) and p2 (second): share 2/3 -> first,
    # p1 chose the second -> 0; p2 likewise 0. Group 1: nobody else -> not counted.
    # Group 2: p0's others: 1 and 0.5 -> first -> agrees (1); p1 likewise (1); p2 tied -> 0.5.
    assert n == 7 and est == pytest.approx(2.5 / 7)
    assert np.isnan(low) and np.isnan(high)


def test_unmatched_study_says_so():
    metrics, votes = _crowd(0, participants=30)
    other = metrics.assign(image="elsewhere")
    table, notes = _agreement(other, votes)
    assert table.empty and any("none of the" in n and "could be matched" in n for n in notes)
    res = R.analyse_votes(votes, reps=50, metrics=other)
    from bench.ranking.report import text_report

    assert "could be matched" in text_report(res, "v.csv")


def test_fit_command_finds_the_study_run_and_writes_agreement_outputs(tmp_path):
    metrics, votes = _crowd(5, participants=60)
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    metrics.to_csv(run / "metrics.csv", index=False)
    study = tmp_path / "study"
    study.mkdir()
    # study.json links the study to its source run (as `survey create` writes it);
    # no database here, so the votes come from STUDY/votes.csv.
    (study / "study.json").write_text(json.dumps(
        {"config": {"run": str(run), "resolution": 1024, "run_json_sha256": None}}))
    votes.to_csv(study / "votes.csv", index=False)
    parser = argparse.ArgumentParser()
    register_analysis_commands(parser.add_subparsers())
    args = parser.parse_args(["fit", str(study), "--out", str(tmp_path / "o"), "--reps", "100"])
    assert args.func(args) == 0
    out = tmp_path / "o"
    for name in ("agreement.md", "agreement.csv", "agreement.tex", "agreement.png",
                 "agreement.pdf", "metric_scatter.png", "metric_scatter.pdf"):
        assert (out / name).stat().st_size > 0, name
    agree = pd.read_csv(out / "agreement.csv")
    assert set(agree["kind"]) == {"metric", "model", "ceiling", "chance"}
    assert "human ceiling" in (out / "report.txt").read_text()
    assert r"\begin{tabular}" in (out / "agreement.tex").read_text()


def test_simulate_command_checks_the_agreement_analysis(tmp_path):
    parser = argparse.ArgumentParser()
    register_analysis_commands(parser.add_subparsers())
    out = tmp_path / "sim"
    args = parser.parse_args(["simulate", "--planted", "ssim", "--participants", "60",
                              "--reps", "3", "--boot", "50", "--out", str(out)])
    assert args.func(args) == 0
    summary = pd.read_csv(out / "agreement_check_summary.csv")
    assert list(summary["participants"]) == [60] and summary["studies"].iloc[0] == 3
    per = pd.read_csv(out / "agreement_check_studies.csv")
    assert (per["ceiling_low"] <= per["ceiling_high"]).all()
    assert json.loads((out / "simulate.json").read_text())["planted"] == "ssim"
    bad = parser.parse_args(["simulate", "--planted", "nosuch", "--out", str(out)])
    with pytest.raises(UserError, match="unknown metric 'nosuch'"):
        bad.func(bad)
