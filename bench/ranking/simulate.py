"""Crowd simulators, analysed by the same code as real votes.

Two kinds of crowd:

* ``simulate_votes`` / ``simulate_grid`` — for **planning** how many people a study needs:
  methods have true BT log-strengths, people are honest, cheating or position-biased;
* ``simulate_metric_crowd`` — for **checking the agreement analysis**: people's choices
  follow a hidden per-image quality that is a chosen ("planted") metric plus noise, so the
  planted metric must come out on top and the estimated human ceiling must match
  ``expected_ceiling``, the ceiling the simulated noise implies.

Planning crowds:

A simulated study follows the site's protocol: every participant answers ``trials``
questions, ``validation`` of them validation questions (a reference against a visibly broken
fill) at random positions; the other trials show a uniformly random pair of distinct
methods in random left/right order. People come in three kinds:

* **honest** — choose by the Bradley–Terry model with the true log-strengths
  (``P(left) = sigmoid(theta_left - theta_right)``) and answer validation questions
  correctly except for a lapse rate ``lapse``;
* **cheater** — click at random (P(left) = 1/2) on every trial, validation included;
* **biased** — press the left button with probability ``side_bias`` regardless of the
  images, otherwise behave honestly.

Anyone who gets a validation question wrong is marked ``excluded`` (as the site does); the
votes are then analysed through ``votes.tidy_votes`` → ``pair_data`` →
``fit.fit_with_bootstrap`` exactly like a real study.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.special import expit

from bench.errors import UserError
from bench.metrics.registry import higher_is_better

from .bt import default_alpha, win_matrix
from .fit import fit_with_bootstrap
from .votes import pair_data, tidy_votes

REFERENCE, BROKEN = "validation-reference", "validation-broken"


def method_names(k: int) -> list[str]:
    """Default names ``m1..mK`` (zero-padded so they sort in order)."""
    width = len(str(k))
    return [f"m{i + 1:0{width}d}" for i in range(k)]


def check_scores(scores: Sequence[float]) -> np.ndarray:
    """Validate true log-strengths: at least two, finite, distinct; returned centred."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or len(s) < 2:
        raise UserError("--scores: give at least two log-strengths, one per method")
    if not np.isfinite(s).all():
        raise UserError("--scores: scores must be finite numbers")
    if len(np.unique(s)) != len(s):
        raise UserError("--scores: scores must differ (the true order must be defined)")
    return s - s.mean()


def simulate_votes(
    scores: Sequence[float],
    participants: int,
    trials: int = 25,
    validation: int = 2,
    cheaters: float = 0.0,
    biased: float = 0.0,
    side_bias: float = 0.8,
    lapse: float = 0.02,
    seed: int | np.random.SeedSequence = 0,
    names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One simulated study as a tidy vote table.

    Columns: ``participant, trial, left, right, choice`` (``left``/``right``),
    ``is_validation, excluded, kind`` (``honest``/``cheater``/``biased``). ``cheaters`` and
    ``biased`` are fractions of ``participants`` (rounded; the kinds are assigned at random).
    """
    theta = check_scores(scores)
    k = len(theta)
    names = list(names) if names is not None else method_names(k)
    if len(names) != k:
        raise UserError("--names: give one name per score")
    if participants < 1 or trials < 1 or not 0 <= validation <= trials:
        raise UserError("simulate: need participants >= 1 and 0 <= validation <= trials")
    if not (0 <= cheaters <= 1 and 0 <= biased <= 1 and cheaters + biased <= 1):
        raise UserError("--cheaters/--biased: fractions in [0, 1] that sum to at most 1")
    rng = np.random.default_rng(seed)
    n_cheat = int(round(cheaters * participants))
    n_bias = int(round(biased * participants))
    kinds = np.array(["cheater"] * n_cheat + ["biased"] * n_bias
                     + ["honest"] * (participants - n_cheat - n_bias))
    rng.shuffle(kinds)
    person = np.repeat(np.arange(participants), trials)
    trial = np.tile(np.arange(1, trials + 1), participants)
    kind = kinds[person]
    # Validation trials at random positions within each person's sequence.
    order = rng.random((participants, trials)).argsort(axis=1)
    is_val = (order < validation).ravel()
    n = participants * trials
    i = rng.integers(0, k, n)
    j = (i + rng.integers(1, k, n)) % k
    p_left = expit(theta[i] - theta[j])
    # Validation: reference on a random side; an honest person picks it unless they lapse.
    ref_left = rng.random(n) < 0.5
    p_val_left = np.where(ref_left, 1 - lapse, lapse)
    p_left = np.where(is_val, p_val_left, p_left)
    p_left = np.where(kind == "cheater", 0.5, p_left)
    p_left = np.where(kind == "biased", side_bias + (1 - side_bias) * p_left, p_left)
    pressed_left = rng.random(n) < p_left
    names_arr = np.array(names, dtype=object)
    left = np.where(is_val, np.where(ref_left, REFERENCE, BROKEN), names_arr[i])
    right = np.where(is_val, np.where(ref_left, BROKEN, REFERENCE), names_arr[j])
    failed_val = is_val & (pressed_left != ref_left)
    failed_person = np.bincount(person, weights=failed_val, minlength=participants) > 0
    width = len(str(participants))
    return pd.DataFrame({
        "participant": [f"p{x:0{width}d}" for x in person],
        "trial": trial,
        "left": left,
        "right": right,
        "choice": np.where(pressed_left, "left", "right"),
        "is_validation": is_val,
        "excluded": failed_person[person],
        "kind": kind,
    })


def evaluate_study(votes: pd.DataFrame, theta_true: np.ndarray, names: Sequence[str],
                   boot_reps: int, seed: int) -> dict:
    """Analyse one simulated study; compare with the truth.

    Returns ``order`` (point estimates in the true order), ``all_adjacent`` (every adjacent
    pair of the true order separated at 95 % in the right direction), ``sep_<a>__<b>`` per
    adjacent pair, ``coverage`` (share of methods whose 95 % interval holds the truth) and
    ``excluded`` (share of people excluded).
    """
    tidy = tidy_votes(votes, "simulated votes", "method")
    kept = tidy[~tidy["excluded"]]
    items = list(names)
    index = {n: i for i, n in enumerate(items)}
    truth = np.array([theta_true[index[n]] for n in items])
    pdata = pair_data(kept, items)
    result = {"excluded": float(tidy.groupby("participant")["excluded"].first().mean())}
    order = np.argsort(-truth)
    if len(pdata.data) == 0:
        result.update(order=False, all_adjacent=False, coverage=np.nan)
        for a, b in zip(order[:-1], order[1:], strict=True):
            result[f"sep_{items[a]}__{items[b]}"] = False
        return result
    wins = win_matrix(len(items), pdata.data, pdata.weights)
    alpha = default_alpha(len(items))
    theta, _, summ = fit_with_bootstrap(pdata, wins, boot_reps, seed, alpha)
    result["order"] = bool(np.all(np.argsort(-theta) == order))
    seps = []
    for a, b in zip(order[:-1], order[1:], strict=True):
        sep = bool(summ.p_better[a, b] >= 0.975)
        seps.append(sep)
        result[f"sep_{items[a]}__{items[b]}"] = sep
    result["all_adjacent"] = all(seps)
    result["coverage"] = float(((summ.low <= truth) & (truth <= summ.high)).mean())
    return result


def simulate_grid(
    scores: Sequence[float],
    participants: Sequence[int],
    reps: int = 100,
    boot_reps: int = 500,
    trials: int = 25,
    validation: int = 2,
    cheaters: float = 0.0,
    biased: float = 0.0,
    side_bias: float = 0.8,
    lapse: float = 0.02,
    seed: int = 0,
    names: Sequence[str] | None = None,
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate ``reps`` studies for every N in ``participants``.

    Returns ``(per_study, summary)``: one row per simulated study, and per N the shares
    ``p_order``, ``p_all_adjacent``, ``p_sep_<a>__<b>`` and the mean ``coverage`` and
    ``excluded``. Study ``r`` at size ``N`` uses seed ``SeedSequence([seed, N, r])``.
    """
    theta = check_scores(scores)
    names = list(names) if names is not None else method_names(len(theta))
    jobs = [(n, r) for n in participants for r in range(reps)]
    it = jobs
    if progress:
        from tqdm import tqdm

        it = tqdm(jobs, desc="simulate", unit="study")
    rows = []
    for n, r in it:
        ss = np.random.SeedSequence([seed, int(n), r])
        votes = simulate_votes(theta, int(n), trials, validation, cheaters, biased, side_bias,
                               lapse, ss, names)
        boot_seed = int(ss.generate_state(1)[0])
        rows.append({"participants": int(n), "rep": r,
                     **evaluate_study(votes, theta, names, boot_reps, boot_seed)})
    per = pd.DataFrame(rows)
    agg = {"p_order": ("order", "mean"), "p_all_adjacent": ("all_adjacent", "mean"),
           "coverage": ("coverage", "mean"), "excluded": ("excluded", "mean")}
    for col in per.columns:
        if col.startswith("sep_"):
            agg[f"p_{col}"] = (col, "mean")
    summary = per.groupby("participants").agg(**agg).reset_index()
    summary.insert(1, "studies", reps)
    return per, summary


def needed_participants(summary: pd.DataFrame, column: str = "p_all_adjacent",
                        target: float = 0.8) -> int | None:
    """Smallest simulated N whose ``column`` reaches ``target`` (None if none does)."""
    ok = summary[summary[column] >= target]
    return int(ok["participants"].min()) if len(ok) else None


# --------------------------------------------------------------------------------------
# Crowds that follow a planted metric
# --------------------------------------------------------------------------------------


def synthetic_metrics(methods: Sequence[str], images: Sequence[str], metrics: dict[str, float],
                      resolution: int = 1024, seed: int = 0) -> pd.DataFrame:
    """A tidy metrics table (``method, resolution, image, metric, value``) for simulations.

    Every (method, image) has a latent quality ``z ~ N(0, 1)``; metric ``name`` is ``z`` plus
    independent ``N(0, metrics[name]**2)`` noise, oriented by the metric's registered
    direction (a lower-is-better metric gets ``-z``), so the metrics are correlated
    distractors of one another.
    """
    rng = np.random.default_rng(seed)
    grid = pd.MultiIndex.from_product([list(methods), list(images)], names=["method", "image"])
    z = rng.standard_normal(len(grid))
    frames = []
    for name, noise in metrics.items():
        value = z + noise * rng.standard_normal(len(grid))
        frames.append(pd.DataFrame({
            "method": grid.get_level_values(0), "resolution": resolution,
            "image": grid.get_level_values(1), "metric": name,
            "value": value if higher_is_better(name) else -value,
        }))
    return pd.concat(frames, ignore_index=True)


def hidden_quality(metrics: pd.DataFrame, planted: str, strength: float = 1.5,
                   item_noise: float = 0.0, resolution: int | None = None,
                   seed: int = 0) -> pd.Series:
    """The crowd's hidden quality per (method, image): the planted metric, oriented by its
    direction, centred per image and divided by its pooled within-image standard deviation
    (people only ever compare outputs of one image), times ``strength`` (logits per SD),
    plus ``N(0, item_noise)`` per item (what the metric misses but everybody sees)."""
    m = metrics[metrics["metric"] == planted]
    if resolution is not None:
        m = m[m["resolution"] == resolution]
    if m.empty:
        raise UserError(f"--planted: metric {planted!r} has no values in the metrics table")
    v = m.groupby(["method", "image"])["value"].mean()
    v = v if higher_is_better(planted) else -v
    centred = v - v.groupby(level="image").transform("mean")
    z = centred / (float(np.sqrt((centred**2).mean())) or 1.0)
    rng = np.random.default_rng(seed)
    return strength * z + item_noise * rng.standard_normal(len(z))


def simulate_metric_crowd(quality: pd.Series, participants: int, trials: int = 25,
                          seed: int | np.random.SeedSequence = 0, sep: str = "/"
                          ) -> pd.DataFrame:
    """Votes of people who choose by the hidden per-image ``quality``.

    Each trial shows a random image and two different methods on it in random order; the
    person picks the left one with probability ``sigmoid(q_left - q_right)`` (the same
    person-level noise for everybody). Columns as the site's export needs them:
    ``participant, trial, image, left, right, choice, p_left``.
    """
    q = quality.sort_index()
    methods = q.index.get_level_values(0).unique()
    images = q.index.get_level_values(1).unique()
    if len(methods) < 2:
        raise UserError("simulate: the metrics table needs at least two methods")
    table = np.full((len(methods), len(images)), np.nan)
    mi = methods.get_indexer(q.index.get_level_values(0))
    ii = images.get_indexer(q.index.get_level_values(1))
    table[mi, ii] = q.to_numpy()
    if np.isnan(table).any():
        raise UserError("simulate: every method needs a value on every image")
    rng = np.random.default_rng(seed)
    n = participants * trials
    img = rng.integers(0, len(images), n)
    a = rng.integers(0, len(methods), n)
    b = (a + rng.integers(1, len(methods), n)) % len(methods)
    p_left = expit(table[a, img] - table[b, img])
    left_chosen = rng.random(n) < p_left
    mnames = np.asarray(methods, dtype=str)
    inames = np.asarray(images, dtype=str)
    width = len(str(participants))
    person = np.repeat(np.arange(participants), trials)
    return pd.DataFrame({
        "participant": np.char.add("p", np.char.zfill(person.astype(str), width)),
        "trial": np.tile(np.arange(trials), participants),
        "image": inames[img],
        "left": np.char.add(np.char.add(mnames[a], sep), inames[img]),
        "right": np.char.add(np.char.add(mnames[b], sep), inames[img]),
        "choice": np.where(left_chosen, "left", "right"),
        "p_left": p_left,
    })


def expected_ceiling(votes: pd.DataFrame) -> float:
    """The human ceiling the simulated noise implies for exactly these votes.

    For a vote whose pair the other people judged ``n`` times, with true probability ``p``
    of choosing the pair's first item: the chance of agreeing with their majority is
    ``p P(B > n/2) + (1 - p) P(B < n/2) + 0.5 P(B = n/2)`` with ``B ~ Binomial(n, p)``
    (leave-one-person-out, like ``agreement.human_ceiling``). Needs the
    ``p_left`` column of ``simulate_metric_crowd``; votes no one else saw are left out.
    """
    from scipy.stats import binom

    lu, ru = votes["left"].to_numpy(dtype=str), votes["right"].to_numpy(dtype=str)
    first = lu < ru
    key = pd.Series(np.where(first, lu, ru)) + "\x00" + np.where(first, ru, lu)
    g = pd.factorize(key)[0]
    p_first = np.where(first, votes["p_left"], 1 - votes["p_left"].to_numpy())
    frame = pd.DataFrame({"g": g, "p": votes["participant"].to_numpy()})
    n_others = (frame.groupby("g")["g"].transform("size")
                - frame.groupby(["g", "p"])["g"].transform("size")).to_numpy()
    keep = n_others > 0
    p, n = p_first[keep], n_others[keep]
    above = binom.sf(np.floor(n / 2), n, p)  # P(B > n/2)
    below = binom.cdf(np.ceil(n / 2) - 1, n, p)  # P(B < n/2)
    tie = 1 - above - below
    return float(np.mean(p * above + (1 - p) * below + 0.5 * tie))


def check_agreement(
    metrics: pd.DataFrame,
    planted: str,
    participants: Sequence[int],
    reps: int = 20,
    trials: int = 25,
    strength: float = 1.5,
    item_noise: float = 0.0,
    boot_reps: int = 200,
    resolution: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate crowds that follow ``planted`` and check the agreement analysis on them.

    For every N in ``participants``, ``reps`` studies (study ``r`` at size ``N`` uses seed
    ``SeedSequence([seed, N, r])``; the hidden item noise is drawn once). Returns
    ``(per_study, summary)``: per study the planted metric's rank by 2AFC agreement (its
    monotone group counts as one), the estimated human ceiling with its CI and the ceiling
    the simulated noise implies; per N the share of studies with the planted metric first
    (``p_planted_first``), the share whose ceiling CI holds the truth (``ceiling_coverage``)
    and the mean ceiling error.
    """
    from .agreement import vote_agreement

    if resolution is not None:
        metrics = metrics[metrics["resolution"] == resolution]
    quality = hidden_quality(metrics, planted, strength, item_noise, seed=seed)
    jobs = [(int(n), r) for n in participants for r in range(reps)]
    it = jobs
    if progress:
        from tqdm import tqdm

        it = tqdm(jobs, desc="simulate", unit="study")
    rows = []
    for n, r in it:
        ss = np.random.SeedSequence([seed, n, r])
        votes = simulate_metric_crowd(quality, n, trials, ss)
        boot_seed = int(ss.generate_state(1)[0])
        table, _ = vote_agreement(tidy_votes(votes, "simulated votes"), metrics,
                                  reps=boot_reps, seed=boot_seed)
        m = table[table["kind"] == "metric"].sort_values("agreement", ascending=False,
                                                         kind="stable")
        members = [str(x).split(", ") for x in m["members"]]
        rank = next(i for i, g in enumerate(members, 1) if planted in g)
        c = table[table["kind"] == "ceiling"].iloc[0]
        truth = expected_ceiling(votes)
        rows.append({"participants": n, "rep": r, "planted_rank": rank,
                     "top": str(m["name"].iloc[0]), "ceiling": c["agreement"],
                     "ceiling_low": c["agreement_low"], "ceiling_high": c["agreement_high"],
                     "ceiling_truth": truth,
                     "covered": bool(c["agreement_low"] <= truth <= c["agreement_high"])})
    per = pd.DataFrame(rows)
    per["first"] = per["planted_rank"] == 1
    per["error"] = per["ceiling"] - per["ceiling_truth"]
    summary = per.groupby("participants").agg(
        studies=("rep", "size"), p_planted_first=("first", "mean"),
        ceiling_coverage=("covered", "mean"), ceiling_error=("error", "mean"),
        ceiling_truth=("ceiling_truth", "mean")).reset_index()
    return per.drop(columns=["first", "error"]), summary
