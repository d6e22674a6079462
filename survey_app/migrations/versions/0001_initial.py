"""The survey schema as first released (commit fc0ecb6): study, item, pair, participant,
trial, vote.

A database made by hrbench before migrations existed has exactly these tables and no
``alembic_version``; ``hrbench survey db upgrade`` stamps it as this revision first.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "study",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("question", sa.String(length=500), nullable=False),
        sa.Column("n_trials", sa.Integer(), nullable=False),
        sa.Column("n_validation", sa.Integer(), nullable=False),
        sa.Column("repeat_swapped", sa.Boolean(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("uid"),
    )
    op.create_table(
        "item",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("method", sa.String(length=100), nullable=False),
        sa.Column("image", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("file", sa.String(length=100), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("orig_width", sa.Integer(), nullable=False),
        sa.Column("orig_height", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["study.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("study_id", "key"),
    )
    op.create_index(op.f("ix_item_study_id"), "item", ["study_id"], unique=False)
    op.create_table(
        "participant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("n_trials", sa.Integer(), nullable=False),
        sa.Column("next_index", sa.Integer(), nullable=False),
        sa.Column("completion_code", sa.String(length=32), nullable=False),
        sa.Column("excluded", sa.Boolean(), nullable=False),
        sa.Column("exclusion_reason", sa.String(length=200), nullable=True),
        sa.Column("user_agent", sa.String(length=300), nullable=True),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["study.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_participant_external", "participant", ["study_id", "external_id"], unique=False)
    op.create_index(op.f("ix_participant_study_id"), "participant", ["study_id"], unique=False)
    op.create_table(
        "pair",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("item_a_id", sa.Integer(), nullable=False),
        sa.Column("item_b_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("correct_item_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["correct_item_id"],
            ["item.id"],
        ),
        sa.ForeignKeyConstraint(
            ["item_a_id"],
            ["item.id"],
        ),
        sa.ForeignKeyConstraint(
            ["item_b_id"],
            ["item.id"],
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["study.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("study_id", "item_a_id", "item_b_id"),
    )
    op.create_index(op.f("ix_pair_study_id"), "pair", ["study_id"], unique=False)
    op.create_table(
        "trial",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("pair_id", sa.Integer(), nullable=False),
        sa.Column("left_item_id", sa.Integer(), nullable=False),
        sa.Column("right_item_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("repeat_of", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["left_item_id"],
            ["item.id"],
        ),
        sa.ForeignKeyConstraint(
            ["pair_id"],
            ["pair.id"],
        ),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["participant.id"],
        ),
        sa.ForeignKeyConstraint(
            ["right_item_id"],
            ["item.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("participant_id", "index"),
    )
    op.create_index(op.f("ix_trial_pair_id"), "trial", ["pair_id"], unique=False)
    op.create_table(
        "vote",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("trial_index", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("pair_id", sa.Integer(), nullable=False),
        sa.Column("left_item_id", sa.Integer(), nullable=False),
        sa.Column("right_item_id", sa.Integer(), nullable=False),
        sa.Column("choice", sa.String(length=5), nullable=False),
        sa.Column("chosen_item_id", sa.Integer(), nullable=False),
        sa.Column("correct", sa.Boolean(), nullable=True),
        sa.Column("rt_ms_client", sa.Integer(), nullable=True),
        sa.Column("rt_ms_server", sa.Integer(), nullable=True),
        sa.Column("viewport_w", sa.Integer(), nullable=True),
        sa.Column("viewport_h", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["chosen_item_id"],
            ["item.id"],
        ),
        sa.ForeignKeyConstraint(
            ["left_item_id"],
            ["item.id"],
        ),
        sa.ForeignKeyConstraint(
            ["pair_id"],
            ["pair.id"],
        ),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["participant.id"],
        ),
        sa.ForeignKeyConstraint(
            ["right_item_id"],
            ["item.id"],
        ),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["trial.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("participant_id", "trial_index", name="uq_vote_once"),
        sa.UniqueConstraint("trial_id"),
    )
    op.create_index(op.f("ix_vote_pair_id"), "vote", ["pair_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_vote_pair_id"), table_name="vote")
    op.drop_table("vote")
    op.drop_index(op.f("ix_trial_pair_id"), table_name="trial")
    op.drop_table("trial")
    op.drop_index(op.f("ix_pair_study_id"), table_name="pair")
    op.drop_table("pair")
    op.drop_index(op.f("ix_participant_study_id"), table_name="participant")
    op.drop_index("ix_participant_external", table_name="participant")
    op.drop_table("participant")
    op.drop_index(op.f("ix_item_study_id"), table_name="item")
    op.drop_table("item")
    op.drop_table("study")
