"""Trial schedules: balance, no repeated pair, validation positions, swapped repeat, seeding."""

from __future__ import annotations

import random
from collections import Counter

from survey_app.assign import PairRef, fewest_first, plan_trials

# Six photos: compare pairs spread over them, one validation pair each.
COMPARE = [PairRef(i, 100 + i, 200 + i, f"img{i % 6}") for i in range(40)]
VALID = [PairRef(1000 + i, 3000 + i, 4000 + i, f"img{i}") for i in range(6)]


def _plan(seed: int, counts=None, **kw):
    args = {"n_trials": 25, "n_validation": 2, "repeat_swapped": False} | kw
    return plan_trials(COMPARE, VALID, counts or {}, rng=random.Random(seed), **args)


def test_sizes_kinds_and_no_pair_twice():
    plan = _plan(0)
    assert [t.index for t in plan] == list(range(25))
    kinds = Counter(t.kind for t in plan)
    assert kinds == {"compare": 23, "validation": 2}
    assert len({t.pair_id for t in plan}) == 25
    for t in plan:
        pair = next(p for p in COMPARE + VALID if p.id == t.pair_id)
        assert {t.left_item, t.right_item} == {pair.item_a, pair.item_b}


def test_swapped_repeat_comes_later_with_sides_swapped():
    kinds = Counter()
    for seed in range(60):
        plan = _plan(seed, repeat_swapped=True)
        reps = [t for t in plan if t.repeat_of is not None]
        assert len(reps) == 1 and len(plan) == 25
        rep = reps[0]
        orig = plan[rep.repeat_of]
        # A repeated validation question is a check again; anything else is kind "repeat".
        assert rep.kind == ("validation" if orig.kind == "validation" else "repeat")
        assert orig.pair_id == rep.pair_id and rep.index > orig.index
        assert (rep.left_item, rep.right_item) == (orig.right_item, orig.left_item)
        others = [t.pair_id for t in plan if t.repeat_of is None]
        assert len(others) == len(set(others))
        kinds[orig.kind] += 1
    assert kinds["compare"] > kinds["validation"] > 0  # any trial may be the repeated one


def test_validation_positions_vary_and_cover_the_range():
    positions = Counter()
    for seed in range(300):
        positions.update(t.index for t in _plan(seed) if t.kind == "validation")
    assert set(positions) == set(range(25))  # every position occurs
    # Roughly uniform: 600 draws over 25 slots, mean 24 per slot.
    assert max(positions.values()) < 60


def test_fewest_votes_first_and_ties_random():
    counts = {p.id: 5 for p in COMPARE} | {3: 0, 7: 1, 9: 0}
    chosen = fewest_first(COMPARE, counts, 3, random.Random(1))
    assert {p.id for p in chosen} == {3, 7, 9}
    firsts = {fewest_first(COMPARE, {}, 1, random.Random(s))[0].id for s in range(50)}
    assert len(firsts) > 10


def test_balance_over_a_crowd():
    counts: Counter = Counter()
    for person in range(200):
        for t in _plan(person, counts, repeat_swapped=True):
            if t.kind != "repeat":
                counts[t.pair_id] += 1
    cmp = [counts[p.id] for p in COMPARE]
    val = [counts[p.id] for p in VALID]
    # A validation question takes the place of a chosen compare pair, which waits for the
    # next person: compare counts stay within two. Validation pairs follow their photos.
    assert max(cmp) - min(cmp) <= 2
    assert min(val) > 0.6 * sum(val) / len(val)


def test_left_right_is_a_fair_coin():
    lefts = sum(t.left_item == next(p for p in COMPARE if p.id == t.pair_id).item_a
                for s in range(200) for t in _plan(s) if t.kind == "compare")
    assert 0.45 < lefts / (200 * 23) < 0.55


def test_seeded_and_small_studies():
    assert _plan(7) == _plan(7) and _plan(7) != _plan(8)
    few = plan_trials(COMPARE[:3], VALID[:1], {}, n_trials=25, n_validation=2,
                      repeat_swapped=True, rng=random.Random(0))
    # Fewer pairs than trials: every pair once, plus the repeat and the validation question.
    firsts = [t for t in few if t.repeat_of is None]
    assert Counter(t.kind for t in firsts) == {"compare": 3, "validation": 1}
    assert len(few) == 5 and len({t.pair_id for t in firsts}) == 4


def test_photos_recur_only_when_the_study_has_too_few():
    """Validation questions show a photo of a replaced compare slot, and photos are spread:
    with more photos than trials every photo occurs once (the repeat aside), so how often a
    photo recurs cannot single out a check."""
    many = [PairRef(i, 10 * i, 10 * i + 1, f"p{i // 3}") for i in range(90)]  # 30 photos
    checks = [PairRef(1000 + g, 5000 + g, 6000 + g, f"p{g}") for g in range(30)]
    group = {p.id: p.group for p in many + checks}
    counts: Counter = Counter()
    for seed in range(100):
        plan = plan_trials(many, checks, counts, n_trials=10, n_validation=2,
                           repeat_swapped=True, rng=random.Random(seed), practice=True)
        scored = [t for t in plan if t.kind != "practice" and t.repeat_of is None]
        assert len(scored) == 9 and sum(t.kind == "validation" for t in scored) == 2
        photos = Counter(group[t.pair_id] for t in scored)
        assert max(photos.values()) == 1
        for t in plan:
            if t.kind not in ("repeat", "practice"):
                counts[t.pair_id] += 1
