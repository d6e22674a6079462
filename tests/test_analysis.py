"""Tests for the Bradley–Terry analysis (``bench.ranking``): fit, bootstrap, checks, CLI,
simulator."""

from __future__ import annotations

import argparse
import json

import choix
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize
from scipy.stats import kendalltau

from bench import ranking as A
from bench.errors import UserError
from bench.ranking import simulate as S
from bench.ranking.checks import _binom_two_sided_half
from survey_app.analysis_cli import load_votes, register_analysis_commands

# ----------------------------------------------------------------------------- helpers


def _bt_votes(theta: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``int64[n, 2]`` (winner, loser) rows drawn from a BT model over random pairs."""
    k = len(theta)
    i = rng.integers(0, k, n)
    j = (i + rng.integers(1, k, n)) % k
    left_wins = rng.random(n) < 1 / (1 + np.exp(theta[j] - theta[i]))
    return np.stack([np.where(left_wins, i, j), np.where(left_wins, j, i)], axis=1)


def _scipy_bt(n_items: int, data: np.ndarray, weights: np.ndarray | None = None,
              lam: float = 0.0) -> np.ndarray:
    """Independent penalised ML fit from the vote list with scipy (BFGS, analytic gradient).

    Maximises sum_v w_v log sigmoid(theta_win - theta_lose) - lam * sum(exp(theta) - theta);
    with lam = 0 the first parameter is pinned to 0 (the likelihood is shift-invariant).
    """
    w = np.ones(len(data)) if weights is None else weights
    win, lose = data[:, 0], data[:, 1]

    def unpack(x):
        return np.concatenate([[0.0], x]) if lam == 0 else x

    def negobj(x):
        t = unpack(x)
        d = t[win] - t[lose]
        f = (w * np.logaddexp(0.0, -d)).sum() + lam * (np.exp(t) - t).sum()
        g_d = -w / (1 + np.exp(d))  # d/d(d) of w * log(1 + exp(-d))
        g = np.bincount(win, g_d, n_items) - np.bincount(lose, g_d, n_items)
        g += lam * (np.exp(t) - 1)
        return f, (g[1:] if lam == 0 else g)

    x0 = np.zeros(n_items - 1 if lam == 0 else n_items)
    res = minimize(negobj, x0, jac=True, method="BFGS", options={"gtol": 1e-10, "maxiter": 5000})
    t = unpack(res.x)
    return t - t.mean()


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register_analysis_commands(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def _vote_frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["participant", "left", "right", "choice"])


# ----------------------------------------------------------------------------- the fit


def test_fit_agrees_with_independent_scipy_mle():
    rng = np.random.default_rng(3)
    theta = np.array([0.8, 0.3, 0.0, -0.4, -0.7])
    data = _bt_votes(theta, 3000, rng)
    wins = A.win_matrix(5, data)
    assert A.is_strongly_connected(wins)
    ours = A.fit_bt(5, data, alpha=0.0)
    ref = _scipy_bt(5, data)
    assert np.abs(ours - ref).max() < 1e-3
    assert abs(ours.mean()) < 1e-12


def test_default_regularisation_is_the_documented_penalty():
    # With the default alpha, choix I-LSR maximises loglik - alpha*K*sum(exp(t) - t).
    rng = np.random.default_rng(4)
    theta = np.array([1.0, 0.2, -0.1, -1.1])
    data = _bt_votes(theta, 200, rng)
    for alpha in (None, 0.2):
        a = A.default_alpha(4) if alpha is None else alpha
        ours = A.fit_bt(4, data, alpha=alpha)
        ref = _scipy_bt(4, data, lam=a * 4)
        assert np.abs(ours - ref).max() < 1e-3


def test_counts_fit_equals_choix_on_the_vote_list():
    rng = np.random.default_rng(5)
    data = _bt_votes(np.array([0.5, 0.0, -0.5]), 500, rng)
    listed = choix.ilsr_pairwise(3, [tuple(r) for r in data], alpha=0.01)
    assert np.allclose(A.fit_bt(3, data, alpha=0.01), listed - listed.mean(), atol=1e-7)


def test_vectorised_newton_matches_choix_including_degenerate_data():
    rng = np.random.default_rng(6)
    data = _bt_votes(np.array([0.9, 0.1, -0.2, -0.8]), 400, rng)
    wins = A.win_matrix(4, data)
    degenerate = wins.copy()
    degenerate[:, 3] = 0  # nobody ever beats item 3: MLE infinite, penalised fit finite
    batch = A.fit_bt_batch(np.stack([wins, degenerate]))
    assert np.abs(batch[0] - A.fit_bt_counts(wins)).max() < 1e-6
    assert np.abs(batch[1] - A.fit_bt_counts(degenerate)).max() < 1e-6
    assert np.isfinite(batch).all() and batch[1, 3] == batch[1].max()
    with pytest.raises(UserError, match="alpha"):
        A.fit_bt_counts(degenerate, alpha=0.0)


def test_ties_are_half_wins_and_never_dropped():
    base = [("p1", "a", "b", "left"), ("p1", "b", "c", "right"), ("p2", "c", "a", "a"),
            ("p2", "a", "c", "left"), ("p3", "b", "a", "b")]
    votes = _vote_frame(base + [("p3", "a", "b", "tie"), ("p1", "c", "b", "none")])
    tidy = A.tidy_votes(votes)
    pdata = A.pair_data(tidy)
    wins = A.win_matrix(3, pdata.data, pdata.weights)
    assert wins.sum() == len(votes)  # every answer counts once, ties as 0.5 + 0.5
    a, b, c = (pdata.items.index(x) for x in "abc")
    assert wins[a, b] == 1.5 and wins[b, a] == 1.5
    assert wins[c, b] == 1.5 and wins[b, c] == 0.5  # one "right" win plus half a tie
    # A tie between i and j has the same likelihood as half a win each way.
    res = A.analyse_votes(votes, reps=50)
    assert res.counts["ties_in_fit"] == 2


def test_choice_as_item_name_equals_left_right():
    named = _vote_frame([("p1", "x/i1", "y/i1", "x/i1"), ("p1", "y/i2", "z/i2", "z/i2"),
                         ("p2", "z/i1", "x/i1", "x/i1")])
    sides = named.assign(choice=["left", "right", "right"])
    t1, t2 = A.tidy_votes(named), A.tidy_votes(sides)
    assert list(t1["outcome"]) == list(t2["outcome"]) == ["left", "right", "right"]
    assert list(t1["left_unit"]) == ["x", "y", "z"]  # per method by default
    assert list(A.tidy_votes(named, level="item")["left_unit"]) == ["x/i1", "y/i2", "z/i1"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("p1", "a", "b", "maybe")], "choice"),
        ([("p1", "a", "a", "left")], "itself"),
        ([("p1", "a", "b", None)], "empty"),
    ],
)
def test_bad_votes_are_user_errors(rows, message):
    with pytest.raises(UserError, match=message):
        A.tidy_votes(_vote_frame(rows))


def test_missing_columns_and_bad_flags_are_user_errors():
    with pytest.raises(UserError, match="missing column"):
        A.tidy_votes(pd.DataFrame({"participant": ["p"], "left": ["a"], "right": ["b"]}))
    bad = _vote_frame([("p1", "a", "b", "left")]).assign(excluded=["perhaps"])
    with pytest.raises(UserError, match="excluded"):
        A.tidy_votes(bad)


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_is_seeded_and_resamples_people():
    votes = S.simulate_votes([0.4, 0.0, -0.4], 40, trials=10, validation=0, seed=1)
    pdata = A.pair_data(A.tidy_votes(votes))
    b1 = A.bootstrap_bt(3, pdata.data, pdata.participant, pdata.weights, reps=30, seed=7)
    b2 = A.bootstrap_bt(3, pdata.data, pdata.participant, pdata.weights, reps=30, seed=7)
    assert np.array_equal(b1, b2)
    # One person's votes all move together: with one participant every replicate is the fit.
    one = pdata.participant == 0
    solo = A.bootstrap_bt(3, pdata.data[one], np.zeros(one.sum(), dtype=np.int64),
                          pdata.weights[one], reps=5, seed=0)
    assert np.allclose(solo, A.fit_bt(3, pdata.data[one], pdata.weights[one]), atol=1e-6)


def test_summary_significance_matrix():
    boot = np.array([[1.0, 0.0, 0.2], [1.2, 0.1, 0.0]] * 50)
    s = A.summarise_bootstrap(boot)
    assert s.p_better[0, 1] == 1.0 and s.significant[0, 1] and s.significant[1, 0]
    assert s.p_better[1, 2] == 0.5 and not s.significant[1, 2]
    assert not s.significant.diagonal().any()


def _coverage(n_studies: int, boot_reps: int) -> float:
    """Share of (study, item) pairs whose 95 % interval holds the true centred score."""
    truth = np.array([0.6, 0.2, -0.1, -0.7])
    truth = truth - truth.mean()
    people, per_person = 60, 12
    hits = []
    for r in range(n_studies):
        rng = np.random.default_rng([11, r])
        data = _bt_votes(truth, people * per_person, rng)
        participant = np.repeat(np.arange(people), per_person)
        boot = A.bootstrap_bt(4, data, participant, reps=boot_reps, seed=r)
        s = A.summarise_bootstrap(boot)
        hits.append((s.low <= truth) & (truth <= s.high))
    return float(np.mean(hits))


def test_bootstrap_intervals_cover_the_truth():
    cov = _coverage(n_studies=200, boot_reps=200)
    assert 0.90 <= cov <= 0.99, cov


@pytest.mark.slow
def test_bootstrap_intervals_cover_the_truth_full():
    cov = _coverage(n_studies=500, boot_reps=1000)
    assert 0.90 <= cov <= 0.99, cov


# ----------------------------------------------------------------------------- checks


def test_planted_position_bias_is_detected():
    scores = [0.5, 0.1, -0.2, -0.4]
    biased = S.simulate_votes(scores, 200, validation=0, biased=0.3, side_bias=0.6, seed=2)
    fair = S.simulate_votes(scores, 200, validation=0, seed=2)
    assert A.position_bias(A.tidy_votes(biased))["p_value"] < 1e-4
    fair_pb = A.position_bias(A.tidy_votes(fair))
    assert fair_pb["p_value"] > 1e-3 and fair_pb["ci_low"] < 0.5 < fair_pb["ci_high"]
    # People who press one side every time are named.
    always = S.simulate_votes(scores, 100, validation=0, biased=0.1, side_bias=1.0, seed=3)
    res = A.analyse_votes(always, reps=50)
    flagged = set(res.people.loc[res.people["always_same_side"], "participant"])
    planted = set(always.loc[always["kind"] == "biased", "participant"])
    assert flagged == planted


def test_planted_cheaters_are_detected():
    scores = [1.2, 0.4, -0.4, -1.2]
    votes = S.simulate_votes(scores, 300, cheaters=0.3, seed=5)
    kind = votes.groupby("participant")["kind"].first()
    excl = votes.groupby("participant")["excluded"].first()
    # Validation questions (2 per person) catch a random clicker with probability 3/4.
    assert excl[kind == "cheater"].mean() > 0.6
    assert excl[kind == "honest"].mean() < 0.1
    res = A.analyse_votes(votes, reps=100)
    ppl = res.people.set_index("participant")
    agree = ppl["agreement"]
    cheat, honest = agree[kind == "cheater"], agree[kind == "honest"]
    # Agreement with the consensus separates them even among people validation missed.
    auc = (cheat.to_numpy()[:, None] < honest.to_numpy()[None, :]).mean()
    assert auc > 0.85 and abs(cheat.mean() - 0.5) < 0.05
    # The audit shows random clicks flatten the scale when the excluded are kept.
    spread = res.audit["score_all"].max() - res.audit["score_all"].min()
    assert spread < res.audit["score_included"].max() - res.audit["score_included"].min()


def test_repeats_and_circular_triads():
    votes = _vote_frame([
        ("p1", "a", "b", "left"), ("p1", "b", "a", "left"),  # swapped, same side: inconsistent
        ("p1", "b", "c", "left"), ("p1", "c", "a", "left"),
        ("p2", "a", "b", "left"), ("p2", "b", "a", "right"),  # swapped, consistent
        ("p2", "b", "c", "left"), ("p2", "a", "c", "left"),
    ])
    tidy = A.tidy_votes(votes)
    ppl = A.per_person_checks(tidy, ["a", "b", "c"], np.array([1.0, 0.0, -1.0]))
    p1, p2 = ppl.set_index("participant").loc["p1"], ppl.set_index("participant").loc["p2"]
    assert (p1["n_repeats"], p1["n_inconsistent"], p1["n_swapped_same_side"]) == (1, 1, 1)
    assert (p2["n_repeats"], p2["n_inconsistent"], p2["n_swapped_same_side"]) == (1, 0, 0)
    # p1: a-b tied 1:1 (undecided), b>c, c>a: no full cycle; p2: a>b>c, a>c: transitive.
    assert p1["circular_triads"] == 0 and p2["circular_triads"] == 0
    cyc = _vote_frame([("p3", "a", "b", "left"), ("p3", "b", "c", "left"),
                       ("p3", "c", "a", "left")])
    assert A.circular_triads(A.tidy_votes(cyc)) == 1
    assert p2["agreement"] == 1.0


def test_pair_counts():
    votes = _vote_frame([("p1", "a", "b", "left"), ("p2", "b", "a", "left"),
                         ("p3", "a", "b", "tie"), ("p1", "c", "a", "right")])
    pc = A.pair_counts(A.tidy_votes(votes)).set_index(["a", "b"])
    assert pc.loc[("a", "b")].tolist() == [3, 1, 1, 1]
    assert pc.loc[("a", "c")].tolist() == [1, 1, 0, 0]


# ----------------------------------------------------------------------------- metrics


def test_kendall_tau_b_matches_scipy():
    rng = np.random.default_rng(0)
    y = np.array([3.0, 1.0, 2.0, 2.0, 5.0])
    xs = rng.normal(size=(20, 5))
    xs[0, 1] = xs[0, 2]  # a tie in x too
    ours = A.kendall_tau_b(xs, y)
    ref = [kendalltau(x, y).statistic for x in xs]
    assert np.allclose(ours, ref)


def test_metric_agreement_orients_lower_is_better():
    items = ["m1", "m2", "m3", "m4"]
    theta = np.array([1.0, 0.5, -0.5, -1.0])
    rows = []
    for q, m in enumerate(items):
        for img in ("i1", "i2"):
            rows += [(m, 1024, img, "l1", 1.0 + q), (m, 1024, img, "psnr", 30.0 - q),
                     (m, 1024, img, "ssim", 0.5 + 0.1 * q)]
    metrics = pd.DataFrame(rows, columns=["method", "resolution", "image", "metric", "value"])
    boot = theta + np.random.default_rng(0).normal(scale=0.05, size=(200, 4))
    tab = A.metric_agreement(items, theta, boot, metrics).set_index("metric")
    assert tab.loc["l1", "tau"] == 1.0 and tab.loc["psnr", "tau"] == 1.0
    assert tab.loc["ssim", "tau"] == -1.0
    assert tab.loc["l1", "tau_low"] <= 1.0 and tab.loc["l1", "p_tau_positive"] == 1.0
    two_res = pd.concat([metrics, metrics.assign(resolution=2048)])
    with pytest.raises(UserError, match="resolution"):
        A.metric_agreement(items, theta, None, two_res)


# ----------------------------------------------------------------------------- outputs


def _study_votes(tmp_path):
    votes = S.simulate_votes([0.6, 0.2, -0.2, -0.6], 60, cheaters=0.1, seed=9,
                             names=["telea", "ns", "ours", "patchmatch"])
    m = ~votes["is_validation"]
    img = np.where(np.arange(len(votes)) % 2, "aitzgorri", "beach")
    votes.loc[m, "left"] = votes.loc[m, "left"] + "/" + img[m]
    votes.loc[m, "right"] = votes.loc[m, "right"] + "/" + img[m]
    votes.loc[votes.index[m][0], "choice"] = "tie"
    return votes.drop(columns="kind")


def test_fit_command_from_csv_and_from_study_folder(tmp_path):
    votes = _study_votes(tmp_path)
    csv = tmp_path / "votes.csv"
    votes.to_csv(csv, index=False)
    rows = [(m, 1024, im, metric, v) for m, v in
            (("ours", 1.0), ("ns", 2.0), ("telea", 3.0), ("patchmatch", 4.0))
            for im in ("aitzgorri", "beach") for metric in ("l1",)]
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame(rows, columns=["method", "resolution", "image", "metric", "value"]).to_csv(
        run / "metrics.csv", index=False)
    out = tmp_path / "fit"
    assert _run_cli(["fit", str(csv), "--out", str(out), "--reps", "100",
                     "--metrics", str(run)]) == 0
    for name in ("ranking.md", "ranking.csv", "ranking.tex", "ranking.png", "ranking.pdf",
                 "win_matrix.png", "report.txt", "per_person.csv", "exclusion_audit.csv",
                 "pair_counts.csv", "p_better.csv", "significance.csv", "metric_agreement.csv",
                 "fit.json"):
        assert (out / name).stat().st_size > 0, name
    table = pd.read_csv(out / "ranking.csv")
    assert set(table["method"]) == {"telea", "ns", "ours", "patchmatch"}
    assert (table["ci_low"] <= table["score"]).all() and (table["score"] <= table["ci_high"]).all()
    assert "position:" in (out / "report.txt").read_text()
    assert r"\begin{tabular}" in (out / "ranking.tex").read_text()
    # A study folder holding the site's export gives the same table.
    study = tmp_path / "study"
    study.mkdir()
    votes.to_csv(study / "votes.csv", index=False)
    from_folder = A.analyse_votes(load_votes(study), reps=100)
    assert np.allclose(from_folder.table["score"], table["score"], atol=1e-6)
    assert list(from_folder.table["method"]) == list(table["method"])
    # Per-item ranking (method/image items): 4 methods x 2 images.
    per_item = A.analyse_votes(votes, level="item", reps=50)
    assert len(per_item.table) == 8 and per_item.table["item"].str.contains("/").all()


def test_fit_command_user_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("participant,left,right\np1,a,b\n")
    with pytest.raises(UserError, match="missing column"):
        _run_cli(["fit", str(bad), "--out", str(tmp_path / "o")])
    with pytest.raises(UserError, match="not found"):
        _run_cli(["fit", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")])
    empty_study = tmp_path / "study"
    empty_study.mkdir()
    with pytest.raises(UserError, match="votes"):
        _run_cli(["fit", str(empty_study), "--out", str(tmp_path / "o")])
    (empty_study / "study.json").write_text("{}")
    with pytest.raises(UserError):
        _run_cli(["fit", str(empty_study), "--out", str(tmp_path / "o")])


def test_hrbench_survey_fit_end_to_end(tmp_path, capsys):
    from bench import cli

    parser = cli.build_parser()
    try:
        parser.parse_args(["survey", "fit", "x.csv", "--out", "o"])
    except SystemExit:
        pytest.skip("the `survey` group (survey_app/cli.py, issue 6) does not register fit yet")
    csv = tmp_path / "votes.csv"
    _study_votes(tmp_path).to_csv(csv, index=False)
    assert cli.main(["survey", "fit", str(csv), "--out", str(tmp_path / "o"),
                     "--reps", "50"]) == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("participant,left,right\np1,a,b\n")
    assert cli.main(["survey", "fit", str(bad), "--out", str(tmp_path / "o2")]) == 2
    assert "missing column" in capsys.readouterr().err


# ----------------------------------------------------------------------------- simulator


def test_simulated_study_follows_the_protocol():
    v = S.simulate_votes([0.3, 0.0, -0.3], 40, trials=25, validation=2, cheaters=0.25,
                         seed=1)
    assert len(v) == 40 * 25
    per = v.groupby("participant")
    assert (per["is_validation"].sum() == 2).all()
    assert (per["kind"].first() == "cheater").sum() == 10
    val = v[v["is_validation"]]
    failed = val.assign(ok=np.where(val["choice"] == "left", val["left"], val["right"])
                        == S.REFERENCE).groupby("participant")["ok"].all()
    assert (per["excluded"].first() == ~failed).all()
    with pytest.raises(UserError):
        S.simulate_votes([0.1, 0.1], 10)


def test_simulate_grid_and_command(tmp_path):
    per, summary = S.simulate_grid([1.0, 0.0, -1.0], [20, 60], reps=4, boot_reps=100)
    assert list(summary["participants"]) == [20, 60] and len(per) == 8
    for col in ("p_order", "p_all_adjacent", "coverage"):
        assert summary[col].between(0, 1).all()
    assert summary["p_all_adjacent"].iloc[-1] >= summary["p_all_adjacent"].iloc[0]
    out = tmp_path / "sim"
    assert _run_cli(["simulate", "--methods", "3", "--scores", "0.6", "0", "-0.6",
                     "--participants", "20,40", "--reps", "3", "--boot", "50",
                     "--out", str(out)]) == 0
    for name in ("simulate_summary.csv", "simulate_studies.csv", "simulate.png",
                 "simulate.pdf", "simulate.json"):
        assert (out / name).stat().st_size > 0
    with pytest.raises(UserError, match="scores"):
        _run_cli(["simulate", "--methods", "4", "--scores", "1", "0", "--out", str(out)])


def test_graded_validation_answers_exclude_people_when_no_flag_is_given():
    votes = _vote_frame([("p1", "gt/x", "broken_flat/x", "right"), ("p1", "a/x", "b/x", "left"),
                         ("p2", "gt/x", "broken_flat/x", "left"), ("p2", "a/x", "b/x", "right")])
    votes["is_validation"] = [True, False, True, False]
    votes["correct"] = ["false", "", "true", ""]
    tidy = A.tidy_votes(votes)
    assert tidy.groupby("participant")["excluded"].first().to_dict() == {"p1": True, "p2": False}
    assert A.tidy_votes(votes.assign(excluded=False))["excluded"].sum() == 0


def test_fit_a_study_collected_by_the_site(tmp_path):
    """Votes cast through the Flask site, read back from STUDY by `fit` (issue 6's exporter)."""
    import re

    site = pytest.importorskip("survey_app.study", reason="the voting site (issue 6) is absent")
    from survey_helpers import item_ids, make_fake_run

    from survey_app import create_app
    from survey_app.db import default_db_url

    run = make_fake_run(tmp_path / "run")
    study = tmp_path / "study"
    site.create_study(run, study, resolution=128, trials_per_participant=8, validation=2,
                      repeat_swapped=True, progress=False)
    app = create_app({"STUDY_DIR": str(study), "SECRET_KEY": "k" * 40,
                      "ADMIN_TOKEN": "t" * 32, "DATABASE_URL": default_db_url(study)})
    items = app.extensions["survey"].items
    quality = {"good": 2.0, "blurry": 0.0, "flat": -2.0}
    rng = np.random.default_rng(0)
    n_people, cheaters = 12, {0, 1}
    for person in range(n_people):
        client = app.test_client()
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text).group(1)
        assert client.post("/start", data={"csrf_token": token, "consent": "yes"}).status_code \
            == 303
        while (page := client.get("/trial")).status_code == 200:
            idx = int(re.search(r'name="trial" value="(\d+)"', page.text).group(1))
            left, right = (items[int(i)] for i in item_ids(client, page.text))
            if {left["kind"], right["kind"]} == {"reference", "broken"}:
                good_left = left["kind"] == "reference"
                pick_left = good_left != (person in cheaters)  # cheaters fail validation
            else:
                d = quality[left["method"]] - quality[right["method"]]
                pick_left = rng.random() < 1 / (1 + np.exp(-d))
            r = client.post("/trial", data={"csrf_token": token, "trial": idx,
                                            "choice": "left" if pick_left else "right"})
            assert r.status_code == 303
    # The run's per-image metrics (as `hrbench run` writes them): study.json links the study
    # to this run, so `fit` pairs every vote with the metric values of the two outputs shown.
    l1 = {"good": 1.0, "blurry": 5.0, "flat": 9.0}
    pd.DataFrame([(m, 128, im, "l1", v + k) for m, v in l1.items()
                  for k, im in enumerate(("alpha", "beta", "gamma"))],
                 columns=["method", "resolution", "image", "metric", "value"]).to_csv(
        run / "metrics.csv", index=False)
    out = tmp_path / "fit"
    assert _run_cli(["fit", str(study), "--out", str(out), "--reps", "200"]) == 0
    table = pd.read_csv(out / "ranking.csv")
    assert list(table["method"]) == ["good", "blurry", "flat"]
    agree = pd.read_csv(out / "agreement.csv").set_index("name")
    fit_json = json.loads((out / "fit.json").read_text())
    assert agree.loc["l1", "n_votes"] == fit_json["counts"]["votes_in_fit"]
    assert agree.loc["l1", "agreement"] > 0.6
    assert (out / "ranking.png").stat().st_size > 0 and (out / "ranking.pdf").stat().st_size > 0
    report = (out / "report.txt").read_text()
    assert f"participants: {n_people} (2 excluded, {n_people - 2} in the fit)" in report
    assert "repeated pairs:" in report and "none in the data" not in report


def test_vectorised_binomial_p_values_equal_scipy_binomtest():
    from scipy.stats import binomtest

    for n in (1, 2, 7, 23, 25):
        k = np.arange(n + 1)
        ref = [binomtest(int(x), n, 0.5).pvalue for x in k]
        assert np.allclose(_binom_two_sided_half(k, np.full_like(k, n)), ref, rtol=1e-10)
