"""bench.ranking is Flask-free and never imports survey_app; read_votes takes a path or a table."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from bench import ranking as R
from bench.errors import UserError


def test_ranking_never_imports_the_site():
    code = (
        "import sys\n"
        "import bench.ranking, bench.ranking.report, bench.ranking.plots, bench.ranking.simulate\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('survey_app', 'flask'))\n"
        "print(bad)\n"
        "raise SystemExit(1 if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_read_votes_takes_a_csv_path_or_a_dataframe(tmp_path):
    votes = pd.DataFrame({"participant": ["p1", "p2"], "left": ["a/x", "b/x"],
                          "right": ["b/x", "a/x"], "choice": ["left", "tie"]})
    csv = tmp_path / "v.csv"
    votes.to_csv(csv, index=False)
    from_csv = R.read_votes(csv)
    from_frame = R.read_votes(votes)
    assert from_frame is not votes
    pd.testing.assert_frame_equal(from_csv, from_frame, check_dtype=False)
    with pytest.raises(UserError, match="not found"):
        R.read_votes(tmp_path / "missing.csv")
    with pytest.raises(UserError, match="not found"):
        R.read_votes(tmp_path)  # a folder is the site's business (`survey fit` exports it)
