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
    """A pair as the planner sees it: database id and its two item ids."""

    id: int
    item_a: int
    item_b: int


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
    - ``min(n_validation, len(validation))`` validation trials at uniformly random positions;
    - if ``repeat_swapped``, one compare trial shown again later with sides swapped
      (the only pair that appears twice, on purpose, to measure consistency);
    - the rest distinct compare pairs, fewest ``counts`` first; fewer trials than
      ``n_trials`` only when the study has fewer pairs than that;
    - left/right is a fair coin per trial.
    """
    n_val = min(n_validation, len(validation), n_trials)
    n_cmp_wanted = n_trials - n_val
    n_rep = 1 if repeat_swapped and n_cmp_wanted >= 3 and len(compare) >= 2 else 0
    chosen = fewest_first(compare, counts, n_cmp_wanted - n_rep, rng)
    rng.shuffle(chosen)
    seq: list[tuple[PairRef, str, bool | None, int | None]] = []
    for p in chosen:
        seq.append((p, "compare", rng.random() < 0.5, None))
    if n_rep and len(seq) >= 2:
        # Repeat one from the first half, placed at least two trials after the original.
        src = rng.randrange(0, max(1, len(seq) // 2))
        pos = rng.randrange(min(src + 2, len(seq)), len(seq) + 1)
        p, _, swap, _ = seq[src]
        seq.insert(pos, (p, "repeat", not swap, src))
    vals = fewest_first(validation, counts, n_val, rng)
    total = len(seq) + len(vals)
    positions = sorted(rng.sample(range(total), len(vals)))
    for pos, p in zip(positions, vals, strict=True):
        seq.insert(pos, (p, "validation", rng.random() < 0.5, None))
    if practice and validation:
        unused = [p for p in validation if p not in vals]
        seq.insert(0, (rng.choice(unused or list(validation)), "practice", rng.random() < 0.5,
                       None))
    # Positions shift as validation trials go in; map the repeat's source to its final index.
    plans: list[TrialPlan] = []
    final_index_of_compare: dict[int, int] = {}
    compare_seen = 0
    for i, (p, kind, swap, rep) in enumerate(seq):
        if kind == "compare":
            final_index_of_compare[compare_seen] = i
            compare_seen += 1
        left, right = (p.item_b, p.item_a) if swap else (p.item_a, p.item_b)
        repeat_of = final_index_of_compare.get(rep) if kind == "repeat" else None
        plans.append(TrialPlan(i, p.id, left, right, kind, repeat_of))
    return plans
