"""Vote tables: validation, normalisation and conversion to pairwise arrays.

A vote table has one row per answer with columns ``participant, left, right, choice`` and
optionally ``excluded``, ``is_validation``, ``correct``, ``trial``, ``rt_ms``, ``image``.
Item names are ``METHOD<sep>IMAGE`` (the site's export writes ``method/image``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import UserError

TIE_WORDS = frozenset(
    {"tie", "none", "equal", "same", "neither", "both", "draw", "cannot decide", "can't decide",
     "undecided"}
)
LEFT_WORDS = frozenset({"left", "l"})
RIGHT_WORDS = frozenset({"right", "r"})
REQUIRED_COLUMNS = ("participant", "left", "right", "choice")
_TRUE = frozenset({"1", "true", "t", "yes", "y"})
_FALSE = frozenset({"0", "false", "f", "no", "n", ""})


def _bool_column(series: pd.Series, name: str, where: str) -> np.ndarray:
    if series.dtype == bool:
        return series.to_numpy()
    text = series.fillna("").astype(str).str.strip().str.lower()
    bad = ~text.isin(_TRUE | _FALSE)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserError(
            f"{where}: column '{name}' row {row + 2} is {series.iloc[row]!r}; "
            "use true/false or 1/0"
        )
    return text.isin(_TRUE).to_numpy()


def _map_unique(col: pd.Series, fn) -> pd.Series:
    """Apply ``fn`` once per distinct value (vote tables repeat a few names many times)."""
    codes, uniques = pd.factorize(col, use_na_sentinel=False)
    mapped = np.array([fn(u) for u in uniques], dtype=object)
    return pd.Series(mapped[codes], index=col.index, dtype=object)


def unit_of(item: str, level: str, sep: str = "/") -> str:
    """The unit an item counts for: its method (text before the first ``sep``) or itself."""
    if level == "item":
        return item
    return item.split(sep, 1)[0] if sep and sep in item else item


def tidy_votes(df: pd.DataFrame, where: str = "votes", level: str = "method",
               item_sep: str = "/") -> pd.DataFrame:
    """Validate a vote table and add the analysis columns.

    Input columns: ``participant, left, right, choice`` (required); ``excluded``,
    ``is_validation``, ``trial``, ``rt_ms`` (optional). Without ``excluded`` but with a
    ``correct`` column (true/false on validation rows), anyone with a wrong validation answer
    is excluded. ``choice`` is ``left``/``right``, the
    chosen item's name, or a tie word (see ``TIE_WORDS``). Added columns: ``outcome``
    (``left``/``right``/``tie``), ``excluded`` and ``is_validation`` (bool),
    ``left_unit``/``right_unit`` (method or item per ``level``). Raises ``UserError`` naming
    the row (as a 1-based CSV line number) for anything it cannot interpret.
    """
    if level not in ("method", "item"):
        raise UserError(f"level: {level!r} is not known; use 'method' or 'item'")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(
            f"{where}: missing column(s) {', '.join(missing)}; a vote table needs "
            "participant, left, right, choice"
        )
    if len(df) == 0:
        raise UserError(f"{where}: no votes; nothing to fit")
    out = df.copy().reset_index(drop=True)
    for col in ("participant", "left", "right"):
        if out[col].isna().any():
            row = int(np.flatnonzero(out[col].isna().to_numpy())[0])
            raise UserError(f"{where}: column '{col}' is empty on line {row + 2}; fill it in")
        out[col] = _map_unique(out[col], lambda x: str(x).strip())
    same = out["left"] == out["right"]
    if same.any():
        row = int(np.flatnonzero(same.to_numpy())[0])
        raise UserError(f"{where}: line {row + 2} compares '{out['left'][row]}' with itself")
    raw = out["choice"]
    if raw.isna().any():
        row = int(np.flatnonzero(raw.isna().to_numpy())[0])
        raise UserError(
            f"{where}: 'choice' is empty on line {row + 2}; drop unanswered rows or mark "
            "them 'tie'"
        )
    choice = _map_unique(raw, lambda x: str(x).strip())
    low = _map_unique(choice, str.lower)
    outcome = np.full(len(out), "", dtype=object)
    outcome[(choice == out["right"]).to_numpy() | low.isin(RIGHT_WORDS).to_numpy()] = "right"
    outcome[(choice == out["left"]).to_numpy() | low.isin(LEFT_WORDS).to_numpy()] = "left"
    outcome[low.isin(TIE_WORDS).to_numpy()] = "tie"
    bad = outcome == ""
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise UserError(
            f"{where}: 'choice' on line {row + 2} is {raw.iloc[row]!r}; use left, right, the "
            "chosen item's name, or tie"
        )
    out["outcome"] = outcome
    for col in ("excluded", "is_validation"):
        out[col] = (
            _bool_column(out[col], col, where) if col in out.columns
            else np.zeros(len(out), dtype=bool)
        )
    if "excluded" not in df.columns and "correct" in df.columns:
        # No exclusion flags but graded validation answers: exclude anyone who failed one.
        graded = out["is_validation"] & out["correct"].notna() & (out["correct"] != "")
        wrong = graded & ~_bool_column(out["correct"].where(graded, "true"), "correct", where)
        out["excluded"] = out["participant"].isin(set(out.loc[wrong, "participant"]))
    for side in ("left", "right"):
        out[f"{side}_unit"] = _map_unique(out[side], lambda x: unit_of(x, level, item_sep))
    return out


def read_votes(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """A vote table from a CSV file, or a copy of a DataFrame already in memory.

    Study folders are the site's business: its CLI exports their votes and passes the table.
    """
    if isinstance(source, pd.DataFrame):
        return source.copy()
    path = Path(source)
    if not path.is_file():
        raise UserError(f"{path}: not found; give a votes CSV (`hrbench survey export`)")
    try:
        return pd.read_csv(path, dtype={"participant": str, "left": str, "right": str,
                                        "choice": str}, keep_default_na=False,
                           na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"{path}: not a readable CSV ({exc}); export the votes as CSV") from exc


@dataclass
class PairData:
    """Votes in choix form for one analysis (validation and same-unit votes removed)."""

    items: list[str]  # unit names, index = item id
    data: np.ndarray  # int64[n, 2] (winner, loser); ties appear twice with weight 0.5
    weights: np.ndarray  # float64[n]
    participant: np.ndarray  # int64[n] codes into ``people``
    people: list[str]


def pair_data(tidy: pd.DataFrame, items: list[str] | None = None) -> PairData:
    """Convert tidy votes (already filtered) to choix-style arrays with half-win ties."""
    v = tidy[~tidy["is_validation"] & (tidy["left_unit"] != tidy["right_unit"])]
    if items is None:
        items = sorted(set(v["left_unit"]) | set(v["right_unit"]))
    index = {name: i for i, name in enumerate(items)}
    li = v["left_unit"].map(index).to_numpy(dtype=np.int64)
    ri = v["right_unit"].map(index).to_numpy(dtype=np.int64)
    people, pcode = np.unique(v["participant"].to_numpy(dtype=str), return_inverse=True)
    oc = v["outcome"].to_numpy()
    left_won, right_won, tie = oc == "left", oc == "right", oc == "tie"
    winner = np.concatenate([li[left_won], ri[right_won], li[tie], ri[tie]])
    loser = np.concatenate([ri[left_won], li[right_won], ri[tie], li[tie]])
    weights = np.concatenate([np.ones(left_won.sum() + right_won.sum()),
                              np.full(2 * tie.sum(), 0.5)])
    part = np.concatenate([pcode[left_won], pcode[right_won], pcode[tie], pcode[tie]])
    return PairData(list(items), np.stack([winner, loser], axis=1), weights,
                    part.astype(np.int64), list(people))


