"""THE table renderer: one table model, written as Markdown, CSV or LaTeX.

Every table the project prints or saves (the benchmark's Table 1, the ranking tables) is built
as a :class:`Table` and rendered here, so escaping and layout rules live in one place:

- Markdown: a pipe table; bold cells as ``**x**``; ``notes`` as a bullet list below (notes may
  carry practical advice, e.g. why a method was skipped).
- CSV: one header row (group and column labels joined), plain cell text, no notes.
- LaTeX: a ``table`` float with a ``tabular`` needing no package beyond LaTeX itself; every
  piece of text is escaped (:func:`latex_escape`); the ``caption`` states the protocol only,
  since a paper's caption is no place for set-up advice. A table with more than
  ``WIDE_COLUMNS`` columns (Table 1 at four resolutions has 13) is a ``table*``, set in
  small type with narrower column gaps, so it spans both columns of a two-column paper.
"""

from __future__ import annotations

import csv
import io
import math
import numbers
from dataclasses import dataclass, field

FORMATS = ("md", "csv", "latex")
WIDE_COLUMNS = 7


@dataclass(frozen=True)
class Cell:
    text: str
    bold: bool = False


@dataclass
class Table:
    """A rectangular table. ``columns[0]`` labels the row-name column.

    ``groups`` optionally spans headers over ``columns[1:]``: ``[("1024", 3), ("2048", 3)]``.
    Markdown and CSV flatten a group into its columns' labels (``"1024 L1 ↓"``).
    """

    columns: list[str]
    rows: list[list[Cell | str]]
    groups: list[tuple[str, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    caption: str = ""
    label: str = ""

    def __post_init__(self):
        width = len(self.columns)
        for row in self.rows:
            if len(row) != width:
                raise ValueError(f"row {row[:1]} has {len(row)} cells, the table {width} columns")
        if self.groups and sum(span for _, span in self.groups) != width - 1:
            raise ValueError("groups must span exactly the columns after the first")

    @classmethod
    def from_frame(cls, df, float_format: str = ".6g", **kwargs) -> Table:
        """A data table (e.g. a pandas DataFrame) as a Table: floats as ``float_format``, NaN empty."""

        def text(v) -> str:
            if isinstance(v, numbers.Integral) or not isinstance(v, numbers.Real):
                return str(v)
            return "" if math.isnan(v) else format(v, float_format)

        rows = [[text(v) for v in row] for row in df.itertuples(index=False)]
        return cls([str(c) for c in df.columns], rows, **kwargs)

    def flat_columns(self) -> list[str]:
        if not self.groups:
            return list(self.columns)
        names = [self.columns[0]]
        i = 1
        for group, span in self.groups:
            names += [f"{group} {c}".strip() for c in self.columns[i : i + span]]
            i += span
        return names


def _cell(c: Cell | str) -> Cell:
    return c if isinstance(c, Cell) else Cell(str(c))


def to_markdown(table: Table) -> str:
    cols = table.flat_columns()
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table.rows:
        cells = [f"**{c.text}**" if c.bold else c.text for c in map(_cell, row)]
        lines.append("| " + " | ".join(cells) + " |")
    if table.notes:
        lines.append("")
        lines.extend(f"- {n}" for n in table.notes)
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.flat_columns())
    writer.writerows([_cell(c).text for c in row] for row in table.rows)
    return buf.getvalue()


# Characters LaTeX treats specially, and the non-ASCII ones our tables use, which pdflatex's
# default input encoding does not know.
_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "±": r"$\pm$",
    "↓": r"$\downarrow$",
    "↑": r"$\uparrow$",
    "→": r"$\rightarrow$",
    "×": r"$\times$",
    "·": r"$\cdot$",
    "−": r"$-$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "≈": r"$\approx$",
    "²": r"$^2$",
    "°": r"$^\circ$",
    "σ": r"$\sigma$",
    "μ": r"$\mu$",
    "µ": r"$\mu$",
    "Δ": r"$\Delta$",
    "θ": r"$\theta$",
    "–": "--",
    "—": "---",
    "…": r"\ldots{}",
    "‘": "`",
    "’": "'",
    "“": "``",
    "”": "''",
    "\u00a0": "~",
}


def latex_escape(text: str) -> str:
    """``text`` as LaTeX source that prints it literally (pdflatex, no extra packages).

    Special characters are escaped, the symbols above become math or text commands, and
    ``--`` stays two hyphens (``-{}-``) instead of LaTeX's en dash. Other non-ASCII letters
    (accented Latin ones) are left to LaTeX's UTF-8 input encoding.
    """
    out = []
    for i, ch in enumerate(text):
        if ch == "-" and text[i + 1 : i + 2] == "-":
            out.append("-{}")
        else:
            out.append(_LATEX.get(ch, ch))
    return "".join(out)


def _latex_cell(c: Cell | str) -> str:
    c = _cell(c)
    return rf"\textbf{{{latex_escape(c.text)}}}" if c.bold else latex_escape(c.text)


def to_latex(table: Table) -> str:
    if table.groups:
        spec = "l" + "".join("|" + "c" * span for _, span in table.groups)
    else:
        spec = "l" + "c" * (len(table.columns) - 1)
    wide = len(table.columns) > WIDE_COLUMNS
    env = "table*" if wide else "table"
    lines = [rf"\begin{{{env}}}[t]", r"\centering"]
    if wide:
        lines += [r"\footnotesize", r"\setlength{\tabcolsep}{3pt}"]
    lines += [r"\begin{tabular}{" + spec + "}", r"\hline"]
    if table.groups:
        lines.append(
            " & "
            + " & ".join(rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(g)}}}" for g, span in table.groups)
            + r" \\"
        )
    lines.append(" & ".join(latex_escape(c) for c in table.columns) + r" \\ \hline")
    for row in table.rows:
        lines.append(" & ".join(_latex_cell(c) for c in row) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    if table.caption:
        lines.append(r"\caption{" + latex_escape(table.caption) + "}")
    if table.label:
        lines.append(r"\label{" + table.label + "}")
    lines.append(rf"\end{{{env}}}")
    return "\n".join(lines) + "\n"


def render(table: Table, fmt: str) -> str:
    """``table`` as ``md``, ``csv`` or ``latex`` text."""
    renderers = {"md": to_markdown, "csv": to_csv, "latex": to_latex}
    if fmt not in renderers:
        raise ValueError(f"unknown table format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return renderers[fmt](table)
