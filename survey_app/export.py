"""``export_votes``: every stored answer as a tidy table, one row per answer.

Columns (in this order; ``left``/``right`` are item names ``method/image``, the form the
analysis in ``bench.ranking`` splits into method and image):

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
rt_ms_client,          both raw measurements (Int64, may be empty; an empty
rt_ms_server           ``rt_ms_server`` means that session was never sent the trial's page:
                       an answer posted by a script, worth a look)
viewport               ``WxH`` CSS pixels of the browser window, or empty without JS
viewport_w, viewport_h Int64
timestamp              UTC ISO-8601 time the answer was stored (``…Z``)
excluded               bool: the person failed more validation questions than the study
                       tolerates (all their rows; nothing is ever deleted)
exclusion_reason       text or empty
dpr                    device pixel ratio when the answer was given (float, may be empty)
display_mode           view in use when answering: ``crop``, ``loupe``, ``flicker``, ``full``
zoom_max               largest zoom used on the trial (1 = one image pixel per CSS pixel)
flicker_toggles        A/B swaps on the trial (Int64)
hidden_ms              time the tab was hidden during the trial (Int64)
too_fast               bool: answered in under ``TOO_FAST_MS`` by the page's or the server's
                       clock (quality flag, per answer)
platform               ``prolific``, ``mturk``, ``generic`` or empty
platform_study_id,     Prolific STUDY_ID / SESSION_ID, MTurk hitId / assignmentId, as given
platform_session_id
outcome                ``completed``, ``failed_screening``, ``returned`` or empty (ongoing)
completion_code        the code that person was given for that outcome
p_too_fast_share       per person: share of their answers flagged ``too_fast``
p_longest_same_side    per person: longest run of answers on one side
p_hidden_ms            per person: total hidden-tab time
flags                  per person: ``;``-joined ``too_fast`` (share over
                       ``FAST_SHARE_FLAG``), ``same_side`` (run of ``STREAK_FLAG`` or more),
                       ``hidden_tab`` (over ``HIDDEN_FLAG_MS``); empty when none. Flags
                       exclude nobody: the analysis chooses
=====================  ================================================================

Practice answers are not votes: they are left out unless ``include_practice=True`` (then
with kind ``practice``). :func:`export_participants` gives one row per person, also those
who never answered (withdrew at once, or still on the first trial).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, inspect, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import aliased

from bench.errors import UserError

from .db import Database, default_db_url, open_database
from .models import Item, Participant, Study, Trial, Vote

COLUMNS = [
    "study", "participant", "external_id", "trial", "pair", "kind", "is_validation",
    "repeat_of", "image", "left", "right", "left_method", "right_method", "left_item",
    "right_item", "choice", "winner", "loser", "correct", "rt_ms", "rt_ms_client",
    "rt_ms_server", "viewport", "viewport_w", "viewport_h", "timestamp", "excluded",
    "exclusion_reason", "dpr", "display_mode", "zoom_max", "flicker_toggles", "hidden_ms",
    "too_fast", "platform", "platform_study_id", "platform_session_id", "outcome",
    "completion_code", "p_too_fast_share", "p_longest_same_side", "p_hidden_ms", "flags",
]
# Quality flags. Under a second is too little to look at two 1:1 crops; a run of 10 answers
# on one side has about a 1.7 % chance in 25 fair coin flips; a minute away from the tab.
TOO_FAST_MS = 1000
FAST_SHARE_FLAG = 0.25
STREAK_FLAG = 10
HIDDEN_FLAG_MS = 60_000


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
    return open_database(url, study_uid=study_uid, create=False, pool_size=2), study_uid, True


def _votes_query(uid: str | None, include_practice: bool):
    """The statement behind :func:`export_votes` (one study's answers, or every study's)."""
    li, ri = aliased(Item), aliased(Item)
    q = (
        select(
            Study.uid, Vote.participant_id, Participant.external_id, Vote.trial_index,
            Vote.pair_id, Trial.kind, Trial.repeat_of, li.image, li.key, ri.key, li.method,
            ri.method, Vote.left_item_id, Vote.right_item_id, Vote.choice, Vote.correct,
            Vote.rt_ms_client, Vote.rt_ms_server, Vote.viewport_w, Vote.viewport_h,
            Vote.created_at, Participant.excluded, Participant.exclusion_reason,
            Vote.dpr, Vote.display_mode, Vote.zoom_max, Vote.flicker_toggles,
            Vote.hidden_ms, Participant.platform, Participant.platform_study_id,
            Participant.platform_session_id, Participant.outcome,
            Participant.completion_code,
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
    if not include_practice:
        q = q.where(Trial.kind != "practice")
    return q


def _votes_frame(rows) -> pd.DataFrame:
    """Rows of :func:`_votes_query` as the tidy export frame."""
    raw = pd.DataFrame(
        rows,
        columns=[
            "study", "participant", "external_id", "trial", "pair", "kind", "repeat_of",
            "image", "left", "right", "left_method", "right_method", "left_item", "right_item",
            "choice", "correct", "rt_ms_client", "rt_ms_server", "viewport_w", "viewport_h",
            "created_at", "excluded", "exclusion_reason", "dpr", "display_mode", "zoom_max",
            "flicker_toggles", "hidden_ms", "platform", "platform_study_id",
            "platform_session_id", "outcome", "completion_code",
        ],
    )
    return _tidy(raw)


def export_votes(source, *, db_url: str | None = None, study_uid: str | None = None,
                 include_practice: bool = False) -> pd.DataFrame:
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
        q = _votes_query(uid, include_practice)
        with db.snapshot() as conn:  # one consistent state of a live study
            rows = conn.execute(q).all()
    except SQLAlchemyError as exc:
        raise UserError(f"{db.engine.url}: cannot read votes ({type(exc).__name__}); "
                        "is this the study's database?") from None
    finally:
        if owned:
            db.dispose()
    return _votes_frame(rows)


def _tidy(raw: pd.DataFrame) -> pd.DataFrame:
    df = raw.copy()
    left_won = df["choice"] == "left"
    df["winner"] = df["left"].where(left_won, df["right"])
    df["loser"] = df["right"].where(left_won, df["left"])
    df["is_validation"] = (df["kind"] == "validation").astype(bool)
    df["excluded"] = df["excluded"].astype(bool)
    for col in ("rt_ms_client", "rt_ms_server", "viewport_w", "viewport_h", "repeat_of",
                "flicker_toggles", "hidden_ms"):
        df[col] = pd.array(df[col].tolist(), dtype="Int64")
    for col in ("dpr", "zoom_max"):
        df[col] = pd.array(df[col].tolist(), dtype="Float64")
    for col in ("participant", "trial", "pair", "left_item", "right_item"):
        df[col] = df[col].astype("int64")
    df["correct"] = pd.array(df["correct"].tolist(), dtype="boolean")
    df["rt_ms"] = df["rt_ms_client"].fillna(df["rt_ms_server"])
    has_vp = df["viewport_w"].notna() & df["viewport_h"].notna()
    df["viewport"] = (
        df["viewport_w"].astype("string") + "x" + df["viewport_h"].astype("string")
    ).where(has_vp, pd.NA)
    df["timestamp"] = pd.to_datetime(df["created_at"]).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # Either clock under the limit flags the answer: the page's time is the client's word,
    # the server's (page sent -> answer received) only overstates the time spent, so a
    # bot cannot hide a quick answer behind a large rt_ms.
    df["too_fast"] = ((df["rt_ms_client"] < TOO_FAST_MS).fillna(False)
                      | (df["rt_ms_server"] < TOO_FAST_MS).fillna(False)).astype(bool)
    df = df.join(person_flags(df), on="participant")
    return df[COLUMNS].reset_index(drop=True)


def _longest_run(sides: pd.Series) -> int:
    values = sides.tolist()
    best = run = 0
    for i, v in enumerate(values):
        run = run + 1 if i and v == values[i - 1] else 1
        best = max(best, run)
    return best


def person_flags(votes: pd.DataFrame) -> pd.DataFrame:
    """Per participant (index): the quality-flag columns ``p_*`` and ``flags``.

    ``votes`` has one row per scored answer with ``participant``, ``trial``, ``choice``,
    ``too_fast`` and ``hidden_ms``.
    """
    cols = ["p_too_fast_share", "p_longest_same_side", "p_hidden_ms", "flags"]
    if len(votes) == 0:
        return pd.DataFrame(columns=cols, index=pd.Index([], name="participant"))
    g = votes.sort_values(["participant", "trial"]).groupby("participant", sort=True)
    out = pd.DataFrame({
        "p_too_fast_share": g["too_fast"].mean().astype(float),
        "p_longest_same_side": g["choice"].apply(_longest_run).astype("int64"),
        "p_hidden_ms": g["hidden_ms"].sum(min_count=1).astype("Int64"),
    })
    fast = out["p_too_fast_share"] > FAST_SHARE_FLAG
    streak = out["p_longest_same_side"] >= STREAK_FLAG
    hidden = (out["p_hidden_ms"] > HIDDEN_FLAG_MS).fillna(False).astype(bool)
    out["flags"] = [
        ";".join(name for name, on in (("too_fast", f), ("same_side", s), ("hidden_tab", h)) if on)
        for f, s, h in zip(fast, streak, hidden, strict=True)
    ]
    return out


PARTICIPANT_COLUMNS = [
    "study", "participant", "external_id", "platform", "platform_study_id",
    "platform_session_id", "outcome", "completion_code", "excluded", "exclusion_reason",
    "validation_failures", "answers", "viewport_w", "viewport_h", "dpr", "started", "finished",
    "p_too_fast_share", "p_longest_same_side", "p_hidden_ms", "flags",
]


def export_participants(source, *, db_url: str | None = None,
                        study_uid: str | None = None) -> pd.DataFrame:
    """One row per participant, also those without an answer (``PARTICIPANT_COLUMNS``):
    platform ids, outcome and code, exclusion, the start viewport, and the quality flags of
    their scored answers (``answers`` counts those). ``source`` as for :func:`export_votes`.
    """
    db, uid, owned = _resolve(source, db_url, study_uid)
    try:
        q = (
            select(Study.uid, Participant.id, Participant.external_id, Participant.platform,
                   Participant.platform_study_id, Participant.platform_session_id,
                   Participant.outcome, Participant.completion_code, Participant.excluded,
                   Participant.exclusion_reason, Participant.validation_failures,
                   Participant.viewport_w, Participant.viewport_h, Participant.dpr,
                   Participant.created_at, Participant.finished_at)
            .join(Study, Study.id == Participant.study_id)
            .order_by(Participant.id)
        )
        if uid is not None:
            q = q.where(Study.uid == uid)
        with db.snapshot() as conn:  # people and their answers from one consistent state
            rows = conn.execute(q).all()
            votes = _votes_frame(conn.execute(_votes_query(uid, include_practice=False)).all())
    except SQLAlchemyError as exc:
        raise UserError(f"{db.engine.url}: cannot read participants ({type(exc).__name__}); "
                        "is this the study's database?") from None
    finally:
        if owned:
            db.dispose()
    people = pd.DataFrame(rows, columns=[
        "study", "participant", "external_id", "platform", "platform_study_id",
        "platform_session_id", "outcome", "completion_code", "excluded", "exclusion_reason",
        "validation_failures", "viewport_w", "viewport_h", "dpr", "started", "finished",
    ])
    people["excluded"] = people["excluded"].astype(bool)
    people["answers"] = people["participant"].map(votes.groupby("participant").size()).fillna(0)
    people["answers"] = people["answers"].astype("int64")
    people = people.join(person_flags(votes), on="participant")
    people["flags"] = people["flags"].fillna("")
    for col in ("started", "finished"):
        people[col] = pd.to_datetime(people[col]).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return people[PARTICIPANT_COLUMNS].reset_index(drop=True)


def write_votes_csv(df: pd.DataFrame, out: str | Path) -> None:
    """Write the export atomically as CSV (UTF-8, header, no index)."""
    from bench.io import atomic_path

    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)
