"""The database layer: SQLite settings, group commit, unique answers."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, UniqueConstraint, select, text
from sqlalchemy.exc import IntegrityError

from survey_app.db import Database, make_engine

meta = MetaData()
rows = Table("rows", meta, Column("id", Integer, primary_key=True), Column("who", String),
             Column("n", Integer), UniqueConstraint("who", "n"))


@pytest.fixture()
def db(tmp_path):
    d = Database(make_engine(f"sqlite:///{tmp_path / 'x.db'}", synchronous="NORMAL"))
    meta.create_all(d.engine)
    yield d
    d.dispose()


def test_sqlite_pragmas(db):
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
    with pytest.raises(ValueError):
        make_engine("sqlite:///x.db", synchronous="SOMETIMES")


def test_group_commit_isolates_failing_jobs(db):
    """Many threads write at once; a failing job undoes only its own rows."""
    results: dict[int, object] = {}

    def writer(k: int) -> None:
        def job(conn):
            conn.execute(rows.insert(), {"who": f"t{k}", "n": 0})
            if k % 5 == 0:
                conn.execute(rows.insert(), {"who": f"t{k}", "n": 0})  # violates UNIQUE
            return k

        try:
            results[k] = db.run_write(job)
        except IntegrityError as exc:
            results[k] = exc

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with db.engine.connect() as conn:
        stored = {r.who for r in conn.execute(select(rows.c.who))}
    for k in range(40):
        if k % 5 == 0:
            assert isinstance(results[k], IntegrityError) and f"t{k}" not in stored
        else:
            assert results[k] == k and f"t{k}" in stored
    assert len(stored) == 32


def test_job_sees_earlier_jobs_of_the_same_batch(db):
    """Two identical answers in one batch: the second finds the first (unique constraint)."""
    def job(conn):
        conn.execute(rows.insert(), {"who": "same", "n": 1})

    db.run_write(job)
    with pytest.raises(IntegrityError):
        db.run_write(job)
    with db.engine.connect() as conn:
        assert conn.execute(select(rows.c.id).where(rows.c.who == "same")).all() == [(1,)]
