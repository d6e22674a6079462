"""Server-side trial schedules: balanced, no pair twice per person, validation anywhere.

:func:`plan_trials` is pure: everything random comes from the ``random.Random`` passed in,
which the app seeds with ``f"{study seed}:{participant id}"`` so a schedule can be rebuilt.

Balance: the pairs a person gets are the ones with the fewest votes so far (answers plus
schedules of people still active, see ``queries``), ties broken at random. Over many people
every pair therefore gets about the same number of votes.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PairRef:
    """A pair as the planner sees it: database id, its two item ids and its photo."""

    id: int
    item_a: int
    item_b: int
    group: str = ""  # the photo both items show


@dataclass(frozen=True)
class TrialPlan:
    """One scheduled trial. ``kind`` is ``compare``, ``validation`` or ``repeat``."""

    index: int
    pair_id: int
    left_item: int
    right_item: int
    kind: str
    repeat_of: int | None = None


def fewest_first(pairs: Sequence[PairRef], counts: Mapping[int, int], n: int,
                 rng: random.Random) -> list[PairRef]:
    """The ``n`` pairs (distinct) with the lowest ``counts``; ties broken by ``rng``."""
    keyed = sorted(pairs, key=lambda p: (counts.get(p.id, 0), rng.random()))
    return keyed[: max(0, n)]


def _spread_over_photos(pairs: Sequence[PairRef], counts: Mapping[int, int], n: int,
                        rng: random.Random) -> list[PairRef]:
    """Like :func:`fewest_first`, but a pair of a photo not chosen yet goes before a pair
    of a chosen photo with at most one vote less: a photo then recurs in a schedule only
    when the study has too few photos, so how often a photo recurs tells little (see
    ``plan_trials``); balance stays within two votes."""
    left = fewest_first(pairs, counts, len(pairs), rng)
    out: list[PairRef] = []
    used: set[str] = set()
    while left and len(out) < n:
        limit = counts.get(left[0].id, 0) + 1
        pick = next((p for p in left if counts.get(p.id, 0) <= limit and p.group not in used),
                    left[0])
        left.remove(pick)
        out.append(pick)
        used.add(pick.group)
    return out


def plan_trials(
    compare: Sequence[PairRef],
    validation: Sequence[PairRef],
    counts: Mapping[int, int],
    *,
    n_trials: int,
    n_validation: int,
    repeat_swapped: bool,
    rng: random.Random,
    practice: bool = False,
) -> list[TrialPlan]:
    """A participant's schedule of at most ``n_trials`` scored trials.

    - with ``practice`` (and any validation pair), trial 0 is a ``practice`` trial on top
      of the ``n_trials``: a validation pair (one with a known answer, so the page can give
      feedback), preferably of a photo whose validation pair is not scheduled for scoring;
    - ``min(n_validation, len(validation))`` validation trials at uniformly random positions,
      each in the place of a compare pair of the same photo (``PairRef.group``) when the
      study has enough pairs, at most one per photo;
    - if ``repeat_swapped``, one trial of the first half shown again later with sides
      swapped (the only pair that appears twice, on purpose, to measure consistency): kind
      ``repeat``, or ``validation`` when the original is a validation question;
    - the rest distinct compare pairs, fewest ``counts`` first; fewer trials than
      ``n_trials`` only when the study has fewer pairs than that;
    - left/right is a fair coin per trial.
    """
    n_val = min(n_validation, len(validation), n_trials)
    n_rep = 1 if repeat_swapped and n_trials - n_val >= 3 and len(compare) >= 2 else 0
    n_slots = n_trials - n_rep
    chosen = _spread_over_photos(compare, counts, n_slots, rng)
    rng.shuffle(chosen)
    # Entries are [pair, kind, swap, repeat source entry]; lists, so identity marks a slot.
    seq: list[list] = [[p, "compare", rng.random() < 0.5, None] for p in chosen]
    spare = fewest_first(validation, counts, len(validation), rng)
    placed = 0
    if len(chosen) == n_slots:
        # A validation question takes the place of a uniformly chosen compare slot and
        # shows the same photo: how often a photo occurs in a schedule (visible in the
        # pictures and in their sizes) then says nothing about which trial is a check.
        by_group: dict[str, list[PairRef]] = {}
        for v in spare:
            by_group.setdefault(v.group, []).append(v)
        for i in rng.sample(range(len(seq)), len(seq)):
            if placed == n_val:
                break
            candidates = by_group.get(seq[i][0].group)
            if candidates:
                v = candidates.pop(0)
                by_group.pop(v.group)  # one check per photo
                spare.remove(v)
                seq[i] = [v, "validation", rng.random() < 0.5, None]
                placed += 1
    # Photos without a validation pair, or a study with fewer pairs than trials: the rest go
    # in at random positions (in place of compare slots when the schedule is full).
    rest = spare[: n_val - placed]
    for v in rest:
        if len(seq) >= n_slots:
            seq.pop(rng.choice([i for i, e in enumerate(seq) if e[1] == "compare"]))
        seq.insert(rng.randrange(len(seq) + 1), [v, "validation", rng.random() < 0.5, None])
    if n_rep and len(seq) >= 2:
        # Repeat one from the first half, placed at least two trials after the original. Any
        # trial may be repeated, a validation question too (the repeat is then a check as
        # well): were only compare pairs repeated, a photo seen twice would never be a check.
        src = seq[rng.randrange(max(1, len(seq) // 2))]
        at = seq.index(src)
        kind = "validation" if src[1] == "validation" else "repeat"
        seq.insert(rng.randrange(min(at + 2, len(seq)), len(seq) + 1),
                   [src[0], kind, not src[2], src])
    if practice and validation:
        scored = {e[0] for e in seq if e[1] == "validation"}
        unused = [p for p in validation if p not in scored]
        seq.insert(0, [rng.choice(unused or list(validation)), "practice", rng.random() < 0.5,
                       None])
    plans: list[TrialPlan] = []
    for i, (p, kind, swap, src) in enumerate(seq):
        left, right = (p.item_b, p.item_a) if swap else (p.item_a, p.item_b)
        repeat_of = next(k for k, e in enumerate(seq) if e is src) if src is not None else None
        plans.append(TrialPlan(i, p.id, left, right, kind, repeat_of))
    return plans
