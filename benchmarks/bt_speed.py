"""Speed of the Bradley–Terry fit and the participant bootstrap (issue 7).

Run: ``python -m benchmarks.bt_speed``. Goals on the 2-core reference machine:
fit on 1,000,000 votes over 10 methods < 1 s; 1000-replicate bootstrap for 250 people x 25
votes < 5 s. Baselines measured in the same run:

* fit: ``choix.ilsr_pairwise`` on the vote list (a Python loop per vote and iteration),
  timed on a 50,000-vote subset and scaled linearly to 1,000,000 votes;
* bootstrap: a per-replicate loop (resample people, gather their votes, aggregate, choix
  ``ilsr_pairwise_dense``), timed on 100 replicates and scaled to 1000.
"""

from __future__ import annotations

import argparse
import time

import choix
import numpy as np

from bench import ranking as A


def _votes(theta: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    k = len(theta)
    i = rng.integers(0, k, n)
    j = (i + rng.integers(1, k, n)) % k
    left = rng.random(n) < 1 / (1 + np.exp(theta[j] - theta[i]))
    return np.stack([np.where(left, i, j), np.where(left, j, i)], axis=1)


def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _loop_bootstrap(k, data, participant, reps, seed):
    rng = np.random.default_rng(seed)
    people = int(participant.max()) + 1
    by_person = [np.flatnonzero(participant == p) for p in range(people)]
    out = np.empty((reps, k))
    for r in range(reps):
        pick = rng.integers(0, people, people)
        idx = np.concatenate([by_person[p] for p in pick])
        out[r] = choix.ilsr_pairwise_dense(A.win_matrix(k, data[idx]),
                                           alpha=A.default_alpha(k), max_iter=10_000)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--votes", type=int, default=1_000_000)
    ap.add_argument("--methods", type=int, default=10)
    ap.add_argument("--people", type=int, default=250)
    ap.add_argument("--per-person", type=int, default=25)
    ap.add_argument("--reps", type=int, default=1000)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    k = args.methods
    theta = np.linspace(1.0, -1.0, k)

    data = _votes(theta, args.votes, rng)
    ours_fit = _best(lambda: A.fit_bt(k, data))
    sub = data[:50_000]
    base_sub = _best(lambda: choix.ilsr_pairwise(k, sub, alpha=A.default_alpha(k)), repeat=1)
    base_fit = base_sub * len(data) / len(sub)
    err = np.abs(A.fit_bt(k, data) - (theta - theta.mean())).max()
    print(f"fit: {len(data):,} votes, {k} methods: {ours_fit:.3f} s (goal < 1 s); "
          f"max |theta - truth| = {err:.3f}")
    print(f"  baseline choix.ilsr_pairwise on the vote list: {base_sub:.2f} s for "
          f"{len(sub):,} votes -> ~{base_fit:.1f} s for {len(data):,}; "
          f"speed-up x{base_fit / ours_fit:.0f}")

    n = args.people * args.per_person
    bdata = _votes(theta, n, rng)
    part = np.repeat(np.arange(args.people), args.per_person)
    ours_boot = _best(lambda: A.bootstrap_bt(k, bdata, part, reps=args.reps, seed=1))
    base_reps = 100
    base_boot = _best(lambda: _loop_bootstrap(k, bdata, part, base_reps, 1), repeat=1)
    base_boot *= args.reps / base_reps
    print(f"bootstrap: {args.reps} replicates, {args.people} people x {args.per_person} votes, "
          f"{k} methods: {ours_boot:.3f} s (goal < 5 s)")
    print(f"  baseline per-replicate loop with choix: ~{base_boot:.1f} s for {args.reps} "
          f"(timed on {base_reps}); speed-up x{base_boot / ours_boot:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
