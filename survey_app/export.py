"""``export_votes``: every stored answer as a tidy table, one row per answer.

Columns (in this order; ``left``/``right`` are item names ``method/image``, the form the
analysis in ``survey_app.analysis`` splits into method and image):

=====================  ================================================================
study                  study uid
participant            participant id (int, unique in the database)
external_id            crowd-platform id given at start, or empty
trial                  0-based trial index in that person's schedule
pair                   pair id
kind                   ``compare``, ``validation`` or ``repeat`` (swapped repeat)
is_validation          bool
repeat_of              for ``repeat`` rows, the trial index of the original showing
image                  photo name
left, right            item names shown left and right (``method/image``)
left_method,           method names (``ground_truth`` and ``broken_flat``/``broken_blur``
right_method           in validation questions)
left_item, right_item  item ids
choice                 ``left`` or ``right``
winner, loser          item names
correct                validation answers: True/False; empty otherwise
rt_ms                  response time: measured in the page when JavaScript ran, else on
                       the server (page sent -> answer received)
rt_ms_client,          both raw measurements (Int64, may be empty)
rt_ms_server
viewport               ``WxH`` CSS pixels of the browser window, or empty without JS
viewport_w, viewport_h Int64
timestamp              UTC ISO-8601 time the answer was stored (``…Z``)
excluded               bool: the person failed a validation question (all their rows)
exclusion_reason       text or empty
=====================  ================================================================
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, inspect, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import aliased

from bench.errors import UserError

from .db import Database, default_db_url, make_engine
from .models import Item, Participant, Study, Trial, Vote

COLUMNS = [
    "study", "participant", "external_id", "trial", "pair", "kind", "is_validation",
    "repeat_of", "image", "left", "right", "left_method", "right_method", "left_item",
    "right_item", "choice", "winner", "loser", "correct", "rt_ms", "rt_ms_client",
    "rt_ms_server", "viewport", "viewport_w", "viewport_h", "timestamp", "excluded",
    "exclusion_reason",
]


def _resolve(source, db_url: str | None, study_uid: str | None) -> tuple[Database, str | None, bool]:
    """(database, study uid or None for all, whether we own the engine)."""
    if isinstance(source, Database):
        return source, study_uid, False
    if isinstance(source, Engine):
        return Database(source), study_uid, False
    text = str(source)
    if "://" in text and not Path(text).exists():
        url = text
    else:
        from .study import load_study

        spec = load_study(source)
        study_uid = study_uid or spec.uid
        url = db_url or os.environ.get("HRBENCH_DATABASE_URL") or default_db_url(spec.folder)
        if url == default_db_url(spec.folder) and not (spec.folder / "instance" / "survey.db").exists():
            raise UserError(
                f"{spec.folder / 'instance' / 'survey.db'}: no votes database yet; serve the "
                "study first, or pass --db URL if it was served with another database"
            )
    try:
        return Database(make_engine(url, pool_size=2)), study_uid, True
    except Exception as exc:
        raise UserError(f"--db {url!r}: cannot open this database ({exc})") from None


def export_votes(source, *, db_url: str | None = None, study_uid: str | None = None) -> pd.DataFrame:
    """All answers of a study as a DataFrame (see the module docstring for the columns).

    ``source`` is a study folder (its default SQLite database, or ``db_url``), an SQLAlchemy
    URL, an ``Engine`` or a ``Database``. ``study_uid`` limits the rows to one study (the
    default for a study folder); otherwise every study in the database is exported.
    Excluded people's answers are included and marked; filter on ``excluded``.
    """
    db, uid, owned = _resolve(source, db_url, study_uid)
    try:
        if "vote" not in inspect(db.engine).get_table_names():
            raise UserError(f"{db.engine.url}: not a survey database (no 'vote' table)")
        li, ri = aliased(Item), aliased(Item)
        q = (
            select(
                Study.uid, Vote.participant_id, Participant.external_id, Vote.trial_index,
                Vote.pair_id, Trial.kind, Trial.repeat_of, li.image, li.key, ri.key, li.method,
                ri.method, Vote.left_item_id, Vote.right_item_id, Vote.choice, Vote.correct,
                Vote.rt_ms_client, Vote.rt_ms_server, Vote.viewport_w, Vote.viewport_h,
                Vote.created_at, Participant.excluded, Participant.exclusion_reason,
            )
            .join(Participant, Participant.id == Vote.participant_id)
            .join(Study, Study.id == Participant.study_id)
            .join(Trial, Trial.id == Vote.trial_id)
            .join(li, li.id == Vote.left_item_id)
            .join(ri, ri.id == Vote.right_item_id)
            .order_by(Vote.participant_id, Vote.trial_index)
        )
        if uid is not None:
            q = q.where(Study.uid == uid)
        with db.session_scope() as s:
            rows = s.execute(q).all()
    except SQLAlchemyError as exc:
        raise UserError(f"{db.engine.url}: cannot read votes ({type(exc).__name__}); "
                        "is this the study's database?") from None
    finally:
        if owned:
            db.dispose()
    raw = pd.DataFrame(
        rows,
        columns=[
            "study", "participant", "external_id", "trial", "pair", "kind", "repeat_of",
            "image", "left", "right", "left_method", "right_method", "left_item", "right_item",
            "choice", "correct", "rt_ms_client", "rt_ms_server", "viewport_w", "viewport_h",
            "created_at", "excluded", "exclusion_reason",
        ],
    )
    return _tidy(raw)


def _tidy(raw: pd.DataFrame) -> pd.DataFrame:
    df = raw.copy()
    left_won = df["choice"] == "left"
    df["winner"] = df["left"].where(left_won, df["right"])
    df["loser"] = df["right"].where(left_won, df["left"])
    df["is_validation"] = (df["kind"] == "validation").astype(bool)
    df["excluded"] = df["excluded"].astype(bool)
    for col in ("rt_ms_client", "rt_ms_server", "viewport_w", "viewport_h", "repeat_of"):
        df[col] = pd.array(df[col].tolist(), dtype="Int64")
    for col in ("participant", "trial", "pair", "left_item", "right_item"):
        df[col] = df[col].astype("int64")
    df["correct"] = pd.array(df["correct"].tolist(), dtype="boolean")
    df["rt_ms"] = df["rt_ms_client"].fillna(df["rt_ms_server"])
    has_vp = df["viewport_w"].notna() & df["viewport_h"].notna()
    df["viewport"] = (
        df["viewport_w"].astype("string") + "x" + df["viewport_h"].astype("string")
    ).where(has_vp, pd.NA)
    df["timestamp"] = pd.to_datetime(df["created_at"]).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return df[COLUMNS].reset_index(drop=True)


def write_votes_csv(df: pd.DataFrame, out: str | Path) -> None:
    """Write the export atomically as CSV (UTF-8, header, no index)."""
    from bench.io import atomic_path

    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)
