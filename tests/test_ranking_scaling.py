"""Thurstone Case V scaling in JOD (bench.ranking.scaling) and the `--scale` option."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.stats import norm

from bench import ranking as R
from bench.ranking import simulate as S
from bench.ranking.scaling import SIGMA, fit_jod_batch, p_beat_average_jod
from survey_app.analysis_cli import register_analysis_commands


def _case_v_votes(q: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    k = len(q)
    i = rng.integers(0, k, n)
    j = (i + rng.integers(1, k, n)) % k
    left = rng.random(n) < norm.cdf((q[i] - q[j]) / SIGMA)
    return np.stack([np.where(left, i, j), np.where(left, j, i)], axis=1)


def _scipy_case_v_mle(k: int, data: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Independent ML fit from the vote list: BFGS on -sum w log Phi(d / SIGMA) with the
    first score pinned to 0, then centred."""
    win, lose = data[:, 0], data[:, 1]

    def nll(x):
        t = np.concatenate([[0.0], x])
        return -(weights * norm.logcdf((t[win] - t[lose]) / SIGMA)).sum()

    res = minimize(nll, np.zeros(k - 1), method="BFGS", options={"gtol": 1e-9})
    t = np.concatenate([[0.0], res.x])
    return t - t.mean()


def test_one_jod_is_a_75_percent_preference():
    assert abs(norm.cdf(1 / SIGMA) - 0.75) < 1e-12
    wins = np.array([[0.0, 75.0], [25.0, 0.0]])
    q = R.fit_jod(wins, lam=0.0)
    assert abs((q[0] - q[1]) - 1.0) < 1e-8 and abs(q.sum()) < 1e-12
    assert abs(p_beat_average_jod(np.array([1.0]))[0] - 0.75) < 1e-12


def test_jod_equals_an_independent_scipy_maximum_likelihood_fit():
    rng = np.random.default_rng(11)
    q_true = np.array([1.2, 0.5, 0.0, -0.6, -1.1])
    data = _case_v_votes(q_true, 4000, rng)
    weights = np.ones(len(data))
    # A few ties, as two half-wins, like the vote tables produce.
    ties = np.array([[0, 1], [1, 0], [2, 4], [4, 2]])
    data = np.vstack([data, ties])
    weights = np.concatenate([weights, np.full(4, 0.5)])
    wins = R.win_matrix(5, data, weights)
    ours = R.fit_jod(wins, lam=0.0)
    ref = _scipy_case_v_mle(5, data, weights)
    assert np.abs(ours - ref).max() < 1e-3
    # The estimate recovers the truth it was simulated from (4000 votes, 5 items).
    assert np.abs(ours - (q_true - q_true.mean())).max() < 0.15
    # The default weak prior changes almost nothing on real amounts of data...
    assert np.abs(R.fit_jod(wins) - ours).max() < 1e-3
    # ...and the batch solver gives the same scores as one fit.
    assert np.allclose(fit_jod_batch(np.stack([wins, wins]), 0.0)[1], ours, atol=1e-8)


def test_jod_stays_finite_when_an_item_never_loses():
    wins = np.array([[0.0, 5.0, 4.0], [0.0, 0.0, 3.0], [0.0, 2.0, 0.0]])
    q = R.fit_jod(wins)
    assert np.isfinite(q).all() and q[0] == q.max()


def test_jod_bootstrap_resamples_people_like_the_bt_bootstrap():
    votes = S.simulate_votes([0.5, 0.0, -0.5], 40, trials=10, validation=0, seed=1)
    pdata = R.pair_data(R.tidy_votes(votes))
    a = R.bootstrap_jod(3, pdata.data, pdata.participant, pdata.weights, reps=40, seed=3)
    b = R.bootstrap_jod(3, pdata.data, pdata.participant, pdata.weights, reps=40, seed=3)
    assert np.array_equal(a, b) and a.std(axis=0).min() > 0
    # Replicate r of both bootstraps uses the same people: refit replicate 0 by hand.
    rng = np.random.default_rng(3)
    picks = rng.integers(0, 40, size=(40, 40))[0]
    m = np.bincount(picks, minlength=40)
    w = pdata.weights * m[pdata.participant]
    assert np.allclose(a[0], R.fit_jod(R.win_matrix(3, pdata.data, w)), atol=1e-6)


def test_fit_reports_jod_beside_bt_and_scale_option(tmp_path):
    votes = S.simulate_votes([0.8, 0.0, -0.8], 40, trials=15, validation=0, seed=2)
    csv = tmp_path / "v.csv"
    votes.to_csv(csv, index=False)
    parser = argparse.ArgumentParser()
    register_analysis_commands(parser.add_subparsers())
    args = parser.parse_args(["fit", str(csv), "--out", str(tmp_path / "o"), "--reps", "100",
                              "--scale", "jod"])
    assert args.func(args) == 0
    table = pd.read_csv(tmp_path / "o" / "ranking.csv")
    for col in ("score", "ci_low", "ci_high", "jod", "jod_low", "jod_high"):
        assert col in table.columns
    # Same order on both scales.
    assert list(table.sort_values("jod", ascending=False)["method"]) == list(table["method"])
    assert (table["jod_low"] <= table["jod"]).all() and (table["jod"] <= table["jod_high"]).all()
    md = (tmp_path / "o" / "ranking.md").read_text()
    assert "| JOD |" in md
    assert f"{table['jod'].iloc[0]:.2f}" in md
    assert (tmp_path / "o" / "ranking.png").stat().st_size > 0
