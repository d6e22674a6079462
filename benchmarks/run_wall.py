"""Wall time of ``hrbench run``: this checkout against a baseline commit, side by side (issue 10).

Run: ``python -m benchmarks.run_wall [--baseline fc0ecb6] [-- RUN ARGS]``. The baseline is
checked out with ``git worktree`` into a temporary folder; both runs start at the same moment
with the same arguments (default ``--resolutions 1024``), so they share whatever else loads
the machine, and each reports its wall time (start-up and exit included). The metric values
both runs have in common are compared too: they must be equal.

Extra arguments after ``--`` go to both runs; ``--after-args`` only to this checkout's (e.g. a
metric set the baseline did not know about).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent


def _start(src: Path, out: Path, args: list[str]) -> tuple[subprocess.Popen, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-m", "bench.cli", "run", "--out", str(out), "-q", *args]
    log = open(out.with_suffix(".log"), "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, cwd=src, env=env, stdout=log, stderr=subprocess.STDOUT), time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="fc0ecb6", help="commit to compare with (default fc0ecb6)")
    ap.add_argument("--after-args", default="", help="extra arguments for this checkout's run only")
    ap.add_argument("run_args", nargs="*", help="arguments for both runs (after --)")
    opts = ap.parse_args(argv)
    args = opts.run_args or ["--resolutions", "1024"]
    with tempfile.TemporaryDirectory(prefix="run-wall-") as tmp:
        tmp = Path(tmp)
        base_src = tmp / "baseline"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(base_src), opts.baseline],
            check=True,
            capture_output=True,
        )
        try:
            procs = {
                "baseline": _start(base_src, tmp / "baseline-run", args),
                "this": _start(REPO, tmp / "this-run", [*args, *shlex.split(opts.after_args)]),
            }
            walls = {}
            for name, (proc, t0) in procs.items():
                proc.wait()
                walls[name] = time.perf_counter() - t0
                if proc.returncode:
                    print(f"{name} run failed; see {tmp / (name + '-run.log')}", file=sys.stderr)
                    print((tmp / f"{name}-run.log").read_text()[-2000:], file=sys.stderr)
                    return 1
            a, b = (pd.read_csv(tmp / f"{n}-run" / "metrics.csv") for n in ("baseline", "this"))
            keys = ["method", "resolution", "image", "metric"]
            both = a.merge(b, on=keys, suffixes=("_baseline", "_this"))
            diff = (both.value_baseline - both.value_this).abs().max()
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(base_src)], capture_output=True
            )
    print(
        f"hrbench run {' '.join(args)}: baseline {opts.baseline} {walls['baseline']:.1f} s, "
        f"this checkout {walls['this']:.1f} s (ratio {walls['this'] / walls['baseline']:.2f}); "
        f"{len(both)} common metric values, largest difference {diff:.3g}"
    )
    return 0 if diff == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
