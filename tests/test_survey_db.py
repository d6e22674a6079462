"""The database layer: SQLite settings, group commit, unique answers."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    bindparam,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from survey_app.db import Database, Prepared, make_engine

meta = MetaData()
rows = Table("rows", meta, Column("id", Integer, primary_key=True), Column("who", String),
             Column("n", Integer), UniqueConstraint("who", "n"))


def _database(url: str):
    d = Database(make_engine(url, synchronous="NORMAL"))
    meta.create_all(d.engine)
    return d


@pytest.fixture()
def db(db_url):
    """The group-commit tests run on SQLite (savepoints) and PostgreSQL (batch replay)."""
    d = _database(db_url)
    yield d
    d.dispose()


def test_sqlite_pragmas(tmp_path):
    db = _database(f"sqlite:///{tmp_path / 'x.db'}")
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


def test_job_failing_after_its_writes_leaves_nothing_and_others_commit(db):
    """A job that wrote and then raised (e.g. a lost race found late): its rows are gone,
    the concurrent jobs of its batch are stored, each exactly once."""
    gate = threading.Barrier(12)

    def writer(k: int, out: dict) -> None:
        def job(conn):
            conn.execute(rows.insert(), {"who": f"w{k}", "n": k})
            if k == 5:
                raise ValueError("changed my mind")
            return k

        gate.wait()
        try:
            out[k] = db.run_write(job)
        except ValueError as exc:
            out[k] = exc

    out: dict[int, object] = {}
    threads = [threading.Thread(target=writer, args=(k, out)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert isinstance(out[5], ValueError)
    assert all(out[k] == k for k in range(12) if k != 5)
    with db.engine.connect() as conn:
        stored = sorted(conn.execute(select(rows.c.who, rows.c.n)).all())
    assert stored == sorted((f"w{k}", k) for k in range(12) if k != 5)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_writer_survives_its_connection_being_killed(db):
    """PostgreSQL restarted or the writer's backend terminated: the next write still
    succeeds (the batch is rolled back, the writer reconnects and runs the job again)."""
    backend = db.run_write(lambda conn: conn.execute(text("SELECT pg_backend_pid()")).scalar())
    with db.engine.connect() as admin:
        assert admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": backend}).scalar()
    assert db.run_write(lambda conn: conn.execute(rows.insert(), {"who": "after", "n": 1})
                        .inserted_primary_key[0]) is not None
    again = db.run_write(lambda conn: conn.execute(text("SELECT pg_backend_pid()")).scalar())
    assert again != backend
    with db.engine.connect() as conn:
        assert conn.execute(select(rows.c.who)).all() == [("after",)]


def test_rowcounts_runs_in_order_and_a_failure_stops_the_rest(db):
    """Several statements at once (one round trip on PostgreSQL): rows touched by each; a
    failing one raises SQLAlchemy's IntegrityError, as through Core, and those after it do
    not run."""
    ins = Prepared(rows.insert(), db.engine, columns=["who", "n"])
    upd = Prepared(update(rows).where(rows.c.who == bindparam("w")).values(n=bindparam("m")), db.engine)
    with db.engine.begin() as conn:
        assert Prepared.rowcounts(conn, (ins, {"who": "a", "n": 1}), (upd, {"w": "a", "m": 2})) == [1, 1]
        assert Prepared.rowcounts(conn, (upd, {"w": "nobody", "m": 3})) == [0]
    with pytest.raises(IntegrityError), db.engine.begin() as conn:
        Prepared.rowcounts(conn, (ins, {"who": "a", "n": 2}), (upd, {"w": "a", "m": 5}))
    with db.engine.connect() as conn:
        assert conn.execute(select(rows.c.who, rows.c.n)).all() == [("a", 2)]
