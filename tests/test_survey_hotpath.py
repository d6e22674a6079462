"""The answer path's shortcuts: driver-level statements, cached balance counts, cached
session serializer. Each must behave exactly like the slow path it replaces."""

from __future__ import annotations

import sqlite3
from datetime import datetime

import pytest
from flask import Flask
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    bindparam,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from survey_app.db import Database, Prepared, make_engine
from survey_app.queries import PairCounts
from survey_app.security import CachedSerializerSessionInterface

meta = MetaData()
rows = Table(
    "rows", meta,
    Column("id", Integer, primary_key=True),
    Column("who", String(20)),
    Column("n", Integer),
    Column("flag", Boolean, nullable=True),
    Column("at", DateTime),
    UniqueConstraint("who", "n"),
)
COLUMNS = ["who", "n", "flag", "at"]


@pytest.fixture()
def db(tmp_path):
    d = Database(make_engine(f"sqlite:///{tmp_path / 'x.db'}", synchronous="NORMAL"))
    meta.create_all(d.engine)
    yield d
    d.dispose()


def _raw(db: Database) -> list[tuple]:
    path = db.engine.url.database
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT who, n, flag, at FROM rows ORDER BY id").fetchall()


@pytest.mark.parametrize("microsecond", [0, 123456])
def test_prepared_insert_stores_what_core_stores(db, microsecond):
    at = datetime(2026, 1, 2, 3, 4, 5, microsecond)
    fast = Prepared(rows.insert(), db.engine, columns=COLUMNS)
    assert fast.fast and "?" in fast.sql
    with db.write_connection() as conn:
        conn.execute(rows.insert(), {"who": "core", "n": 1, "flag": True, "at": at})
        assert fast.rowcount(conn, {"who": "fast", "n": 1, "flag": True, "at": at}) == 1
        conn.execute(rows.insert(), {"who": "core", "n": 2, "flag": None, "at": at})
        fast.rowcount(conn, {"who": "fast", "n": 2, "flag": None, "at": at})
    stored = _raw(db)
    core = [r[1:] for r in stored if r[0] == "core"]
    quick = [r[1:] for r in stored if r[0] == "fast"]
    assert core == quick and len(core) == 2
    with db.engine.connect() as conn:  # and reads back as the same Python values
        got = conn.execute(select(rows.c.flag, rows.c.at).where(rows.c.who == "fast")).all()
    assert got == [(True, at), (None, at)]


def test_prepared_select_update_and_errors(db):
    ins = Prepared(rows.insert(), db.engine, columns=COLUMNS)
    get = Prepared(select(rows.c.n, rows.c.who).where(rows.c.who == bindparam("w")), db.engine)
    bump = Prepared(
        update(rows).where(rows.c.who == bindparam("w"), rows.c.n == bindparam("old"))
        .values(n=bindparam("new")),
        db.engine,
    )
    now = datetime(2026, 1, 1)
    with db.write_connection() as conn:
        ins.rowcount(conn, {"who": "a", "n": 1, "flag": False, "at": now})
        assert get.first(conn, {"w": "a"}) == (1, "a")
        assert get.first(conn, {"w": "nobody"}) is None
        assert bump.rowcount(conn, {"w": "a", "old": 1, "new": 2}) == 1
        assert bump.rowcount(conn, {"w": "a", "old": 1, "new": 3}) == 0  # guard held
        # A unique violation raises SQLAlchemy's IntegrityError, as through Core.
        with pytest.raises(IntegrityError):
            ins.rowcount(conn, {"who": "a", "n": 2, "flag": None, "at": now})
    assert [r[:2] for r in _raw(db)] == [("a", 2)]


def test_prepared_falls_back_to_core(db):
    slow = Prepared(select(rows.c.n).where(rows.c.who == bindparam("w")), db.engine, fast=False)
    assert not slow.fast
    with db.write_connection() as conn:
        conn.execute(rows.insert(), {"who": "b", "n": 7, "flag": None, "at": datetime(2026, 1, 1)})
        assert slow.first(conn, {"w": "b"}) == (7,)


def test_group_commit_rolls_back_a_failing_job_only(db):
    """Raw savepoints: the failing job's first insert is undone, the others are kept."""
    ins = Prepared(rows.insert(), db.engine, columns=COLUMNS)
    now = datetime(2026, 1, 1)

    def good(conn):
        ins.rowcount(conn, {"who": "good", "n": 1, "flag": None, "at": now})

    def bad(conn):
        ins.rowcount(conn, {"who": "bad", "n": 1, "flag": None, "at": now})
        ins.rowcount(conn, {"who": "bad", "n": 1, "flag": None, "at": now})

    db.run_write(good)
    with pytest.raises(IntegrityError):
        db.run_write(bad)
    db.run_write(lambda conn: ins.rowcount(conn, {"who": "after", "n": 1, "flag": None,
                                                  "at": now}))
    assert [r[0] for r in _raw(db)] == ["good", "after"]


def test_pair_counts_reuse_and_local_additions():
    reads = []

    def read():
        reads.append(1)
        return {1: 5, 2: 3}

    pc = PairCounts(ttl_s=3600)
    assert pc.snapshot(read) == {1: 5, 2: 3}
    pc.add([2, 2, 9])
    snap = pc.snapshot(read)
    assert snap == {1: 5, 2: 5, 9: 1} and len(reads) == 1
    snap[1] = 100  # a copy: callers cannot change the shared counts
    assert pc.snapshot(read)[1] == 5
    always = PairCounts(ttl_s=0)
    always.snapshot(read)
    always.add([1])
    assert always.snapshot(read) == {1: 5, 2: 3} and len(reads) == 3


def test_stale_pair_counts_are_read_in_full_by_one_start_at_a_time(monkeypatch):
    """PostgreSQL starts (base/update): when stale, one start is told to read in full;
    the others meanwhile build on the old counts; the next staleness asks again, and a
    full read that never came back is handed to another start after REFRESH_S."""
    clock = [1000.0]
    monkeypatch.setattr("survey_app.queries.time.monotonic", lambda: clock[0])
    pc = PairCounts(ttl_s=2)
    assert pc.base() == ({}, 0) and pc.base() == ({}, 0)  # nothing kept yet: all read
    pc.update({1: 4}, 10, full=True)
    assert pc.base() == ({1: 4}, 10)
    pc.update({1: 5}, 11, full=False)  # a start that added person 11
    clock[0] += 2
    assert pc.base() == ({}, 0)  # stale: this start reads in full
    assert pc.base() == ({1: 5}, 11)  # meanwhile the others add to the old counts
    pc.update({1: 7}, 12, full=True)
    assert pc.base() == ({1: 7}, 12)
    clock[0] += 2
    assert pc.base() == ({}, 0)  # stale again: asked again
    clock[0] += PairCounts.REFRESH_S - 0.1
    assert pc.base() == ({1: 7}, 12)
    clock[0] += 0.2
    assert pc.base() == ({}, 0)  # the full read never came back: another start reads
    always = PairCounts(ttl_s=0)
    always.update({1: 1}, 3, full=True)
    assert always.base() == ({}, 0) and always.base() == ({}, 0)


def test_cached_session_serializer_follows_the_key():
    app = Flask("t")
    app.secret_key = "first-secret-key-0123456789abcdef"
    si = CachedSerializerSessionInterface()
    s1 = si.get_signing_serializer(app)
    assert si.get_signing_serializer(app) is s1
    cookie = s1.dumps({"p": 1})
    app.secret_key = "second-secret-key-0123456789abcdef"
    s2 = si.get_signing_serializer(app)
    assert s2 is not s1
    with pytest.raises(Exception, match="Signature"):
        s2.loads(cookie)
    app.config["SECRET_KEY_FALLBACKS"] = ["first-secret-key-0123456789abcdef"]
    assert si.get_signing_serializer(app).loads(cookie) == {"p": 1}
    app.secret_key = None
    assert si.get_signing_serializer(app) is None


def test_serving_freezes_startup_objects_before_serving(monkeypatch):
    """Full garbage collections walk every tracked object holding the interpreter lock
    (100-190 ms per collection under load, before this); what start-up built is frozen
    out of them before the server takes its first request."""
    import gc

    import waitress.server

    from survey_app import serving

    seen = []

    class FakeServer:
        def print_listen(self, fmt):
            pass

        def run(self):
            seen.append(gc.get_freeze_count())

    monkeypatch.setattr(waitress.server, "create_server", lambda app, **kw: FakeServer())
    gc.unfreeze()
    try:
        serving._waitress(Flask("t"), 2, sockets=[])
        assert seen and seen[0] > 10_000  # modules, the app: tens of thousands of objects
    finally:
        gc.unfreeze()


def test_workers_take_connections_least_loaded_first():
    """Shared connection counts: a worker listens only while it has no more connections
    than the least loaded live one; one that has not reported for a while does not count."""
    from survey_app.serving import _Balance

    b = _Balance(3, stale_s=2.0)
    assert b.may_accept(0, 0, now=100.0)  # the others have never reported: not counted
    assert b.may_accept(1, 0, now=100.0)
    assert not b.may_accept(0, 1, now=100.1)  # 1 > worker 1's 0
    assert b.may_accept(1, 1, now=100.2)  # equal: both may
    assert b.may_accept(0, 1, now=100.3)
    assert b.may_accept(2, 0, now=100.4)
    assert not b.may_accept(0, 1, now=100.5) and not b.may_accept(1, 1, now=100.5)
    # worker 2 stops reporting (hung): after stale_s the others no longer wait for it
    assert b.may_accept(0, 1, now=102.5) and b.may_accept(1, 1, now=102.5)
    b.forget(0)  # its worker died; the replacement counts once it reports
    assert b.may_accept(1, 3, now=102.6)
    assert b.may_accept(0, 0, now=102.7) and not b.may_accept(1, 3, now=102.8)
