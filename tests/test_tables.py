"""bench.tables (THE renderer) and the paper-ready LaTeX of Table 1."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from bench.report import build_table, table
from bench.tables import Cell, Table, latex_escape, render, to_csv, to_latex, to_markdown

REPO = Path(__file__).resolve().parent.parent

NASTY = "a_b~c%d&e#f$g{h}i^j\\k σ ± – — × ≥ 2² --x"


def _run_frame() -> tuple[pd.DataFrame, dict]:
    rows = []
    for meth, base in (("two_stage~x", 2.0), ("telea&50%", 3.0)):
        for img in ("p1", "p2"):
            for metric, v in (("l1", base), ("psnr", 30 - base), ("ssim", 0.9)):
                rows.append({"method": meth, "resolution": 1024, "image": img, "metric": metric,
                             "value": v + (0.1 if img == "p2" else 0)})
    info = {
        "config": {"resize": "nearest", "mask": "centre", "hole_fraction": 1 / 3},
        "metric_conventions": {"l1": "..."},
        "method_order": ["two_stage~x", "telea&50%"],
        "skipped_methods": {"two-stage": "weights not found; put them in ~/.cache/x or pass --weights-dir"},
    }
    return pd.DataFrame(rows), info


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("50%", r"50\%"),
        ("a_b", r"a\_b"),
        ("x~y", r"x\textasciitilde{}y"),
        ("A&B", r"A\&B"),
        ("#1", r"\#1"),
        ("σ = 1.5", r"$\sigma$ = 1.5"),
        ("{x}", r"\{x\}"),
        ("$5", r"\$5"),
        ("a\\b", r"a\textbackslash{}b"),
        ("--force", "-{}-force"),
        ("0–255", "0--255"),
        ("1 ± 2", r"1 $\pm$ 2"),
    ],
)
def test_latex_escape(raw, expected):
    assert latex_escape(raw) == expected


def test_renderers_share_one_model():
    t = Table(["Method", "L1", "PSNR"], [["m_1", Cell("1.0", True), "2"]], groups=[("1024", 2)],
              notes=["note"], caption="cap 5%")
    assert to_markdown(t).splitlines()[:3] == ["| Method | 1024 L1 | 1024 PSNR |", "|---|---|---|",
                                               "| m_1 | **1.0** | 2 |"]
    assert to_markdown(t).endswith("\n- note\n")
    assert to_csv(t) == "Method,1024 L1,1024 PSNR\nm_1,1.0,2\n"
    tex = to_latex(t)
    assert r"m\_1 & \textbf{1.0} & 2 \\" in tex and r"\caption{cap 5\%}" in tex and "note" not in tex
    assert render(t, "latex") == tex
    assert tex.startswith("\\begin{table}[t]") and tex.endswith("\\end{table}\n")
    wide = to_latex(Table(["M", *"abcdefgh"], [["m", *"12345678"]]))
    assert wide.startswith("\\begin{table*}[t]\n\\centering\n\\footnotesize")
    assert wide.endswith("\\end{table*}\n")
    with pytest.raises(ValueError):
        Table(["a", "b"], [["only one"]])


def test_from_frame_matches_pandas_csv():
    import numpy as np

    df = pd.DataFrame({"m": ["a,b", "c"], "n": [6, 7], "v": [1 / 3, np.nan], "f": [np.float32(2.5), 1e-9]})
    assert render(Table.from_frame(df), "csv") == df.to_csv(index=False, float_format="%.6g")


def test_caption_states_protocol_only_markdown_keeps_notes():
    df, info = _run_frame()
    t = build_table(df, info)
    md, tex = to_markdown(t), to_latex(t)
    # the Markdown keeps the practical note; the caption does not give set-up advice
    assert "skipped" in md and "--weights-dir" in md
    caption = tex[tex.index(r"\caption{"):]
    assert "skipped" not in caption and "weights" not in caption and "cache" not in caption
    for fact in ("Mean over 2 images", "nearest-neighbour", "N/3", r"$\sigma$ = 1.5", "K2 = 0.03"):
        assert fact in caption
    assert r"two\_stage\textasciitilde{}x" in tex and r"telea\&50\%" in tex


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="pdflatex not installed (Debian texlive-latex-base)")
def test_latex_compiles_with_pdflatex(tmp_path):
    df, info = _run_frame()
    run = tmp_path / "run"
    run.mkdir()
    df.to_csv(run / "metrics.csv", index=False)
    (run / "run.json").write_text(json.dumps(info))
    nasty = Table(["Method", NASTY], [[NASTY, Cell(NASTY, True)]], caption=NASTY)
    body = table(run, "latex", ci=True) + to_latex(nasty)
    doc = tmp_path / "t.tex"
    doc.write_text("\\documentclass{article}\n\\begin{document}\n" + body + "\\end{document}\n",
                   encoding="utf-8")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / "t.pdf").stat().st_size > 1000
    log = (tmp_path / "t.log").read_text(errors="replace")
    assert "Missing character" not in log and "Undefined control sequence" not in log


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="pdflatex not installed (Debian texlive-latex-base)")
def test_reference_table_fits_a_two_column_page(tmp_path):
    """Table 1 at four resolutions (13 columns) spans a two-column paper without overflowing."""
    tex = table(REPO / "results" / "reference", "latex")
    (tmp_path / "t.tex").write_text("\\documentclass[twocolumn]{article}\n\\begin{document}\n"
                                    + tex + "Text.\n\\end{document}\n", encoding="utf-8")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    log = (tmp_path / "t.log").read_text(errors="replace")
    assert "Overfull \\hbox" not in log, log[log.index("Overfull"):][:300]
