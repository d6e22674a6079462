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


@pytest.mark.slow
def test_ranking_and_agreement_latex_compile_with_pdflatex(tmp_path):
    import shutil

    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (Debian texlive-latex-base)")
    from bench.ranking import simulate as S
    from bench.ranking.report import write_fit_outputs

    metrics = S.synthetic_metrics(["m_1", "m_2", "m_3"], ["i~1", "i%2"],
                                  {"ssim": 0.0, "l1": 0.5})
    votes = S.simulate_metric_crowd(S.hidden_quality(metrics, "ssim"), 30, seed=1)
    res = R.analyse_votes(votes, reps=50, metrics=metrics)
    write_fit_outputs(res, tmp_path / "fit", "votes_&_more.csv", "jod", metrics)
    body = "".join((tmp_path / "fit" / f).read_text() for f in ("ranking.tex", "agreement.tex"))
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\begin{document}\n" + body + "\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
