"""Issue 12: one participant per (study, external id), platform ids, outcomes, QC and view
fields per answer, screening records.

- participant: + platform, platform_study_id, platform_session_id, submit_to, outcome,
  validation_failures (NOT NULL, 0), viewport_w/h, dpr; the index on (study_id,
  external_id) becomes the unique constraint ``uq_participant_external``;
- vote: + dpr, display_mode, zoom_max, flicker_toggles, hidden_ms (NULL for older answers:
  the old pages did not measure them);
- new table ``screening``.

Existing rows, nothing deleted:
- participants that share an external id within a study (revision 0001 allowed it; two
  concurrent starts made two rows) keep it on the earliest row; the later rows get
  ``<id>~dup<participant id>`` so the new constraint holds and the export still shows
  where they came from;
- ``validation_failures`` is counted from the stored validation answers, and ``outcome`` of
  finished participants is ``failed_screening`` if they were excluded, else ``completed``
  (revision 0001 excluded on the first failed validation question).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_part = sa.table(
    "participant",
    sa.column("id", sa.Integer), sa.column("study_id", sa.Integer),
    sa.column("external_id", sa.String), sa.column("finished_at", sa.DateTime),
    sa.column("excluded", sa.Boolean), sa.column("outcome", sa.String),
    sa.column("validation_failures", sa.Integer),
)
_vote = sa.table("vote", sa.column("participant_id", sa.Integer), sa.column("trial_id", sa.Integer),
                 sa.column("correct", sa.Boolean))
_trial = sa.table("trial", sa.column("id", sa.Integer), sa.column("kind", sa.String))


def _rename_duplicate_external_ids() -> None:
    conn = op.get_bind()
    first = (
        sa.select(_part.c.study_id, _part.c.external_id, sa.func.min(_part.c.id).label("keep"))
        .where(_part.c.external_id.is_not(None))
        .group_by(_part.c.study_id, _part.c.external_id)
        .having(sa.func.count() > 1)
        .subquery()
    )
    dups = conn.execute(
        sa.select(_part.c.id, _part.c.external_id)
        .join(first, sa.and_(first.c.study_id == _part.c.study_id,
                             first.c.external_id == _part.c.external_id))
        .where(_part.c.id != first.c.keep)
    ).all()
    for pid, ext in dups:
        suffix = f"~dup{pid}"
        conn.execute(_part.update().where(_part.c.id == pid)
                     .values(external_id=ext[: 64 - len(suffix)] + suffix))


def upgrade() -> None:
    _rename_duplicate_external_ids()
    op.create_table(
        "screening",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=100), nullable=False),
        sa.Column("viewport_w", sa.Integer(), nullable=True),
        sa.Column("viewport_h", sa.Integer(), nullable=True),
        sa.Column("dpr", sa.Float(), nullable=True),
        sa.Column("user_agent", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["study.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_screening_study_id"), "screening", ["study_id"], unique=False)
    with op.batch_alter_table("participant") as batch:
        batch.add_column(sa.Column("platform", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("platform_study_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("platform_session_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("submit_to", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("outcome", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("validation_failures", sa.Integer(), server_default="0",
                                   nullable=False))
        batch.add_column(sa.Column("viewport_w", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("viewport_h", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("dpr", sa.Float(), nullable=True))
        batch.drop_index("ix_participant_external")
        batch.create_unique_constraint("uq_participant_external", ["study_id", "external_id"])
    with op.batch_alter_table("vote") as batch:
        batch.add_column(sa.Column("dpr", sa.Float(), nullable=True))
        batch.add_column(sa.Column("display_mode", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("zoom_max", sa.Float(), nullable=True))
        batch.add_column(sa.Column("flicker_toggles", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("hidden_ms", sa.Integer(), nullable=True))

    failures = (
        sa.select(sa.func.count())
        .select_from(_vote.join(_trial, _trial.c.id == _vote.c.trial_id))
        .where(_vote.c.participant_id == _part.c.id, _trial.c.kind == "validation",
               _vote.c.correct.is_(False))
        .scalar_subquery()
    )
    op.execute(_part.update().values(validation_failures=failures))
    op.execute(
        _part.update()
        .where(_part.c.finished_at.is_not(None))
        .values(outcome=sa.case((_part.c.excluded.is_(True), "failed_screening"),
                                else_="completed"))
    )


def downgrade() -> None:
    with op.batch_alter_table("vote") as batch:
        for col in ("hidden_ms", "flicker_toggles", "zoom_max", "display_mode", "dpr"):
            batch.drop_column(col)
    with op.batch_alter_table("participant") as batch:
        batch.drop_constraint("uq_participant_external", type_="unique")
        batch.create_index("ix_participant_external", ["study_id", "external_id"], unique=False)
        for col in ("dpr", "viewport_h", "viewport_w", "validation_failures", "outcome",
                    "submit_to", "platform_session_id", "platform_study_id", "platform"):
            batch.drop_column(col)
    op.drop_index(op.f("ix_screening_study_id"), table_name="screening")
    op.drop_table("screening")
