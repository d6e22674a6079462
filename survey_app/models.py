"""SQLAlchemy 2.0 models of a pairwise study.

One database may hold several studies (e.g. a shared PostgreSQL); every row hangs off a
``Study``. The tables, and what their rows mean:

- ``study``: one created study (``uid`` from its ``study.json``).
- ``item``: one displayable image (a method's output for one photo, the ground truth, or a
  deliberately broken fill used by validation questions).
- ``pair``: two items of the same photo to compare; ``kind`` is ``compare`` or
  ``validation`` (then ``correct_item_id`` is the answer a careful person gives).
- ``participant``: one person; ``next_index`` is the trial they must answer next. At most one
  per (study, external id): ``UNIQUE(study_id, external_id)`` makes a second start with the
  same crowd-platform id fail in the database, whatever the web layer does. ``outcome`` is
  ``completed``, ``failed_screening`` (validation failures over the tolerance) or
  ``returned`` (withdrew) once known; ``completion_code`` is the code for that outcome.
- ``trial``: the server-side schedule, written in full when a participant starts; kind
  ``practice`` (index 0, not scored), ``compare``, ``validation`` or ``repeat``.
- ``screening``: a refusal at the start (e.g. a phone-sized window), recorded without
  creating a participant, so the same person may come back on a larger screen.
- ``vote``: one answer. ``UNIQUE(participant_id, trial_index)`` is what makes a resubmitted
  answer idempotent and a double count impossible, whatever the web layer does.

Time stamps are naive UTC ``datetime`` values (SQLite has no time zone type).
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

PAIR_KINDS = ("compare", "validation")
TRIAL_KINDS = ("practice", "compare", "validation", "repeat")
CHOICES = ("left", "right")
OUTCOMES = ("completed", "failed_screening", "returned")
DISPLAY_MODES = ("crop", "loupe", "flicker", "full")


def utcnow() -> datetime:
    """Current UTC time without tzinfo (what every DateTime column stores)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Study(Base):
    __tablename__ = "study"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    question: Mapped[str] = mapped_column(String(500))
    n_trials: Mapped[int] = mapped_column(Integer)
    n_validation: Mapped[int] = mapped_column(Integer)
    repeat_swapped: Mapped[bool] = mapped_column(Boolean)
    seed: Mapped[int] = mapped_column(Integer)
    config_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Item(Base):
    __tablename__ = "item"
    __table_args__ = (UniqueConstraint("study_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    key: Mapped[str] = mapped_column(String(300))
    method: Mapped[str] = mapped_column(String(100))
    image: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    file: Mapped[str] = mapped_column(String(100))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    orig_width: Mapped[int] = mapped_column(Integer)
    orig_height: Mapped[int] = mapped_column(Integer)


class Pair(Base):
    __tablename__ = "pair"
    __table_args__ = (UniqueConstraint("study_id", "item_a_id", "item_b_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    item_a_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    item_b_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    kind: Mapped[str] = mapped_column(String(20))
    correct_item_id: Mapped[int | None] = mapped_column(ForeignKey("item.id"), nullable=True)


class Participant(Base):
    __tablename__ = "participant"
    # NULL external ids (no platform id given) are distinct for the constraint.
    __table_args__ = (
        UniqueConstraint("study_id", "external_id", name="uq_participant_external"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    external_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    n_trials: Mapped[int] = mapped_column(Integer)
    next_index: Mapped[int] = mapped_column(Integer, default=0)
    completion_code: Mapped[str] = mapped_column(String(32))
    excluded: Mapped[bool] = mapped_column(Boolean, default=False)
    exclusion_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(300), nullable=True)
    # Added by issue 12 (schema revision 2).
    platform: Mapped[str | None] = mapped_column(String(16), nullable=True)
    platform_study_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    platform_session_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    submit_to: Mapped[str | None] = mapped_column(String(200), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(20), nullable=True)
    validation_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    viewport_w: Mapped[int | None] = mapped_column(Integer, nullable=True)
    viewport_h: Mapped[int | None] = mapped_column(Integer, nullable=True)
    dpr: Mapped[float | None] = mapped_column(Float, nullable=True)


class Trial(Base):
    __tablename__ = "trial"
    __table_args__ = (UniqueConstraint("participant_id", "index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participant.id"))
    index: Mapped[int] = mapped_column(Integer)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pair.id"), index=True)
    left_item_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    right_item_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    kind: Mapped[str] = mapped_column(String(20))
    repeat_of: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Vote(Base):
    __tablename__ = "vote"
    __table_args__ = (UniqueConstraint("participant_id", "trial_index", name="uq_vote_once"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participant.id"))
    trial_index: Mapped[int] = mapped_column(Integer)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), unique=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pair.id"), index=True)
    left_item_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    right_item_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    choice: Mapped[str] = mapped_column(String(5))
    chosen_item_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    correct: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    rt_ms_client: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rt_ms_server: Mapped[int | None] = mapped_column(Integer, nullable=True)
    viewport_w: Mapped[int | None] = mapped_column(Integer, nullable=True)
    viewport_h: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # Added by issue 12 (schema revision 2): how the answer was given.
    dpr: Mapped[float | None] = mapped_column(Float, nullable=True)
    display_mode: Mapped[str | None] = mapped_column(String(8), nullable=True)
    zoom_max: Mapped[float | None] = mapped_column(Float, nullable=True)
    flicker_toggles: Mapped[int | None] = mapped_column(Integer, nullable=True)
    hidden_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Screening(Base):
    """A start refused before any participant row exists (added by issue 12)."""

    __tablename__ = "screening"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    external_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str] = mapped_column(String(100))
    viewport_w: Mapped[int | None] = mapped_column(Integer, nullable=True)
    viewport_h: Mapped[int | None] = mapped_column(Integer, nullable=True)
    dpr: Mapped[float | None] = mapped_column(Float, nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(300), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
