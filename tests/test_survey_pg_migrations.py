"""Schema migrations (Alembic), on SQLite and on a real PostgreSQL server.

- the migrations, run from an empty database, give exactly the models' schema
  (autogenerate finds no difference), so a model change without a migration fails here;
- a database made at revision 0001 with votes in it upgrades without losing a row;
- the app refuses a database at another revision and names the upgrade command.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, select, text
from survey_helpers import make_fake_run

from bench.cli import main as cli_main
from bench.errors import UserError
from survey_app import create_app, migrations
from survey_app.db import make_engine
from survey_app.export import export_votes
from survey_app.models import Base
from survey_app.study import create_study

REV1_TABLES = ("study", "item", "pair", "participant", "trial", "vote")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("migrations")
    run = make_fake_run(root / "run", methods=("good", "flat"), images=("alpha",))
    create_study(run, root / "study", resolution=128, trials_per_participant=2, validation=1,
                 progress=False)
    return root / "study"


def _revision(engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_migrations_give_the_models_schema(db_url):
    engine = make_engine(db_url)
    try:
        before, after = migrations.upgrade(engine)
        assert before is None and after == migrations.head()
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == [], (
            "survey_app/models.py and survey_app/migrations/versions/ disagree; write a "
            f"migration for: {diff}")
    finally:
        engine.dispose()


def test_fresh_database_is_created_at_head(db_url, study):
    app = create_app({"STUDY_DIR": str(study), "SECRET_KEY": "k" * 40, "DATABASE_URL": db_url})
    engine = app.extensions["survey"].db.engine
    assert _revision(engine) == migrations.head()
    # A second app on the same database (a restart, another worker) accepts it as it is.
    create_app({"STUDY_DIR": str(study), "SECRET_KEY": "k" * 40, "DATABASE_URL": db_url})
    engine.dispose()


def _fill_revision_1(conn) -> dict[str, list[tuple]]:
    """Rows a study at revision 0001 could hold: two people answered (one excluded after a
    wrong validation answer), five votes; a third person got the first one's platform id
    (two concurrent starts; revision 0001 allowed it) and has not answered yet."""
    meta = MetaData()
    meta.reflect(conn, only=REV1_TABLES)
    t = meta.tables
    at = datetime(2026, 5, 1, 12, 30, 15, 123456)
    conn.execute(t["study"].insert(), [dict(
        id=1, uid="s1", name="old study", question="Which is better?", n_trials=3,
        n_validation=1, repeat_swapped=False, seed=7, config_json="{}", created_at=at)])
    conn.execute(t["item"].insert(), [
        dict(id=i, study_id=1, key=f"{m}/alpha", method=m, image="alpha", kind=k,
             file=f"{i:04d}.png", width=128, height=96, orig_width=128, orig_height=96)
        for i, (m, k) in enumerate([("good", "method"), ("flat", "method"),
                                    ("ground_truth", "reference"), ("broken", "broken")], 1)])
    conn.execute(t["pair"].insert(), [
        dict(id=1, study_id=1, item_a_id=1, item_b_id=2, kind="compare", correct_item_id=None),
        dict(id=2, study_id=1, item_a_id=3, item_b_id=4, kind="validation", correct_item_id=3)])
    conn.execute(t["participant"].insert(), [
        dict(id=p, study_id=1, external_id=ext, created_at=at, last_seen_at=at,
             finished_at=at if p == 1 else None, n_trials=3, next_index=3 if p == 1 else 2,
             completion_code=f"CODE{p}", excluded=p == 2,
             exclusion_reason="failed validation trial 2" if p == 2 else None,
             user_agent="test")
        for p, ext in ((1, "prolific_1"), (2, None), (3, "prolific_1"))])
    trials = []
    for p in (1, 2):
        for i, (pair, left, right, kind, rep) in enumerate(
                [(1, 1, 2, "compare", None), (2, 4, 3, "validation", None),
                 (1, 2, 1, "repeat", 0)]):
            trials.append(dict(id=len(trials) + 1, participant_id=p, index=i, pair_id=pair,
                               left_item_id=left, right_item_id=right, kind=kind,
                               repeat_of=rep))
    conn.execute(t["trial"].insert(), trials)
    votes = []
    for tr in trials:
        if tr["participant_id"] == 2 and tr["index"] == 2:
            continue  # person 2 stopped before the last trial
        # Person 1 picks the reference in the validation trial (item 3), person 2 does not.
        chosen = tr["right_item_id"] if tr["participant_id"] == 1 else tr["left_item_id"]
        votes.append(dict(
            id=len(votes) + 1, participant_id=tr["participant_id"], trial_index=tr["index"],
            trial_id=tr["id"], pair_id=tr["pair_id"], left_item_id=tr["left_item_id"],
            right_item_id=tr["right_item_id"],
            choice="left" if chosen == tr["left_item_id"] else "right", chosen_item_id=chosen,
            correct=(chosen == 3) if tr["kind"] == "validation" else None,
            rt_ms_client=1000 + len(votes), rt_ms_server=1100, viewport_w=1366,
            viewport_h=768, created_at=at))
    conn.execute(t["vote"].insert(), votes)
    return _rows(conn, meta)


def _rows(conn, meta: MetaData) -> dict[str, list[tuple]]:
    """Every row of the revision-0001 tables, in revision 0001's columns."""
    out = {}
    for name in REV1_TABLES:
        table = meta.tables[name]
        out[name] = [tuple(r) for r in conn.execute(select(table).order_by(table.c.id))]
    return out


def test_upgrade_from_revision_1_keeps_every_row(db_url):
    engine = make_engine(db_url)
    try:
        migrations.upgrade(engine, migrations.FIRST)
        assert _revision(engine) == migrations.FIRST
        with engine.begin() as conn:
            before = _fill_revision_1(conn)
            rev1 = MetaData()
            rev1.reflect(conn, only=REV1_TABLES)
        assert len(before["vote"]) == 5
        old, new = migrations.upgrade(engine)
        assert (old, new) == (migrations.FIRST, migrations.head())
        # Every row and value is kept; only the duplicate platform id is made unique.
        expected = dict(before)
        expected["participant"] = [
            r[:2] + ("prolific_1~dup3",) + r[3:] if r[0] == 3 else r
            for r in before["participant"]]
        with engine.connect() as conn:
            assert _rows(conn, rev1) == expected
            # Revision 0002's new columns, derived from what revision 0001 stored.
            derived = conn.execute(text(
                "SELECT id, validation_failures, outcome FROM participant ORDER BY id")).all()
            assert [tuple(r) for r in derived] == [(1, 0, "completed"), (2, 1, None), (3, 0, None)]
        df = export_votes(engine, study_uid="s1")
        assert len(df) == 5 and df["excluded"].sum() == 2
        assert sorted(df["rt_ms_client"]) == [1000, 1001, 1002, 1003, 1004]
    finally:
        engine.dispose()


def test_database_from_before_migrations_is_revision_1(db_url, study, capsys):
    """Survey tables without alembic_version (hrbench before this change) are revision 0001:
    the app refuses them, naming the upgrade command, which stamps and migrates them."""
    engine = make_engine(db_url)
    try:
        migrations.upgrade(engine, migrations.FIRST)
        with engine.begin() as conn:
            _fill_revision_1(conn)
            conn.execute(text("DROP TABLE alembic_version"))
        with engine.connect() as conn:
            assert migrations.revision_of(conn) == migrations.FIRST
        with pytest.raises(UserError, match="at revision 0001, this hrbench needs .*hrbench "
                           "survey db upgrade"):
            create_app({"STUDY_DIR": str(study), "SECRET_KEY": "k" * 40, "DATABASE_URL": db_url})
        rc = cli_main(["survey", "db", "upgrade", str(study), "--db", db_url])
        assert rc == 0, capsys.readouterr().err
        assert _revision(engine) == migrations.head()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM vote")).scalar() == 5
    finally:
        engine.dispose()


def test_newer_revision_is_refused(db_url, study):
    engine = make_engine(db_url)
    try:
        migrations.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
        with pytest.raises(UserError, match="newer than this hrbench knows"):
            create_app({"STUDY_DIR": str(study), "SECRET_KEY": "k" * 40, "DATABASE_URL": db_url})
    finally:
        engine.dispose()
