"""The database layer: SQLite settings, group commit, unique answers."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    bindparam,
    func,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from survey_app import db as db_module
from survey_app.db import Ask, Database, Prepared, make_engine

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


def _staged_insert(key: str):
    """A staged job (see survey_app.db.Ask): look, then insert ``key`` unless it is there."""
    def job(conn):
        (seen,) = yield Ask.first(_COUNT, {"w": key})
        if seen:
            return "already there"
        counts = yield Ask.rowcounts((_INSERT, {"who": key, "n": 0}))
        return counts[0]

    return job


_COUNT = _INSERT = None


@pytest.fixture()
def staged(db):
    global _COUNT, _INSERT
    _COUNT = Prepared(select(func.count()).select_from(rows).where(rows.c.who == bindparam("w")),
                      db.engine)
    _INSERT = Prepared(rows.insert(), db.engine, columns=["who", "n"])
    return db


def test_staged_jobs_from_many_threads_store_each_key_once(staged):
    """Staged answers-like jobs, two per key, from 20 threads at once: each key is stored
    once; the other job of the key finds it (in a later batch, or when a batch with both
    failed on the unique key and ran again one job at a time)."""
    db, gate, out = staged, threading.Barrier(20), {}

    def worker(k: int) -> None:
        gate.wait()
        out[k] = db.run_write(_staged_insert(f"s{k % 10}"))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for key in range(10):
        assert sorted(map(str, (out[key], out[key + 10]))) == ["1", "already there"]
    with db.engine.connect() as conn:
        assert sorted(conn.execute(select(rows.c.who)).scalars()) == [f"s{k}" for k in range(10)]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_one_batch_of_staged_jobs_runs_in_lock_step_then_alone_on_a_clash(staged):
    """PostgreSQL, one batch: three staged jobs step together (their look-ups in one round
    trip, their inserts in the next); two of them insert the same key, so the batch is
    rolled back and its jobs run again one at a time, each seeing the ones before it."""
    from survey_app.db import GroupCommitter, _Job

    db = staged
    steps = []
    original = db_module._lock_step

    def spy(conn, gens, commit=False):
        steps.append(len(gens))
        return original(conn, gens, commit)

    jobs = [_Job(_staged_insert(k)) for k in ("x", "y", "x")]
    committer = GroupCommitter.__new__(GroupCommitter)  # no writer thread: driven here
    committer.db, committer._pipeline = db, True
    with db._write_engine.connect() as conn:
        db_module._lock_step, saved = spy, db_module._lock_step
        try:
            committer._together(conn, jobs)
        finally:
            db_module._lock_step = saved
    assert steps == [3]
    assert [j.result for j in jobs] == [1, 1, "already there"] and all(j.error is None for j in jobs)
    with db.engine.connect() as conn:
        assert sorted(conn.execute(select(rows.c.who)).scalars()) == ["x", "y"]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_staged_job_refused_before_writing_does_not_replay_its_batch(staged):
    """A job that raises after its look-up (a 409) changed nothing: its error is its
    outcome and the batch's other jobs commit without running again."""
    from survey_app.db import GroupCommitter, _Job

    db = staged
    runs = []

    def refused(conn):
        runs.append("refused")
        yield Ask.first(_COUNT, {"w": "nobody"})
        raise ValueError("not your current trial")

    def counted(key):
        inner = _staged_insert(key)

        def job(conn):
            runs.append(key)
            return (yield from inner(conn))

        return job

    jobs = [_Job(counted("a")), _Job(refused), _Job(counted("b"))]
    committer = GroupCommitter.__new__(GroupCommitter)  # no writer thread: driven here
    committer.db, committer._pipeline = db, True
    with db._write_engine.connect() as conn:
        committer._together(conn, jobs)
    assert runs == ["a", "refused", "b"]  # each ran once: no replay
    assert [j.result for j in jobs] == [1, None, 1]
    assert isinstance(jobs[1].error, ValueError)
    with db.engine.connect() as conn:
        assert sorted(conn.execute(select(rows.c.who)).scalars()) == ["a", "b"]


def _last_insert(key: str, then=None):
    """A staged job whose insert is its last Ask; ``then(count)`` runs after it."""
    def job(conn):
        yield Ask.first(_COUNT, {"w": key})  # a look-up first, as an answer makes
        counts = yield Ask.rowcounts((_INSERT, {"who": key, "n": 0}), last=True)
        return then(counts) if then else counts[0]

    return job


def _drive(db, jobs) -> list[bool]:
    """One batch through the PostgreSQL writer, no writer thread; the ``commit`` flag of
    each pipeline it sent."""
    from survey_app.db import GroupCommitter

    sends, original = [], db_module._send_together

    def spy(raw, groups, commit=False):
        sends.append(commit)
        return original(raw, groups, commit)

    committer = GroupCommitter.__new__(GroupCommitter)
    committer.db, committer._pipeline = db, True
    db_module._send_together = spy
    try:
        with db._write_engine.connect() as conn:
            committer._together(conn, jobs)
    finally:
        db_module._send_together = original
    return sends


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_commit_rides_with_the_last_step_of_a_staged_batch(staged):
    """Every job staged and at its last Ask: the COMMIT goes in that step's round trip
    (two round trips for the batch, not three); with a plain job in the batch it does not."""
    from survey_app.db import _Job

    db = staged
    jobs = [_Job(_last_insert(k)) for k in ("p", "q")]
    assert _drive(db, jobs) == [False, True]
    assert [j.result for j in jobs] == [1, 1]
    plain = _Job(lambda conn: _INSERT.rowcount(conn, {"who": "plain", "n": 0}))
    jobs = [_Job(_last_insert("r")), plain]
    assert _drive(db, jobs) == [False, False]
    with db.engine.connect() as conn:
        assert sorted(conn.execute(select(rows.c.who)).scalars()) == ["p", "plain", "q", "r"]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_clash_in_the_committing_step_commits_nothing_and_replays(staged):
    """A unique-key clash in the step that carries the COMMIT: the COMMIT does not run,
    the batch runs again one job at a time, and each job's outcome is from that run."""
    from survey_app.db import _Job

    db = staged
    jobs = [_Job(_last_insert("same")), _Job(_last_insert("other")), _Job(_last_insert("same"))]
    assert _drive(db, jobs)[:2] == [False, True]
    assert [j.result for j in jobs[:2]] == [1, 1]
    assert jobs[2].error is not None  # alone, it met the committed "same"
    with db.engine.connect() as conn:
        assert sorted(conn.execute(select(rows.c.who)).scalars()) == ["other", "same"]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_staged_job_breaking_the_last_ask_promise_is_reported(staged):
    """A job that raises after its last Ask (its write already committed with the batch)
    gets a RuntimeError saying so; the batch's other jobs keep their results."""
    from survey_app.db import _Job

    def boom(counts):
        raise ValueError("changed its mind")

    db = staged
    jobs = [_Job(_last_insert("fine")), _Job(_last_insert("liar", then=boom))]
    assert _drive(db, jobs) == [False, True]
    assert jobs[0].result == 1
    assert isinstance(jobs[1].error, RuntimeError) and "last Ask" in str(jobs[1].error)
    with db.engine.connect() as conn:
        assert sorted(conn.execute(select(rows.c.who)).scalars()) == ["fine", "liar"]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_batch_failing_other_than_on_a_clash_says_so(staged, caplog):
    """A job raising after its writes (or a bug in the writer) makes the batch run again one
    job at a time, like a clash does; unlike a clash, that is logged, not left to show only
    as slower batches."""
    from survey_app.db import _Job

    def writes_then_fails(conn):
        yield Ask.rowcounts((_INSERT, {"who": "undone", "n": 0}))
        raise ValueError("after writing")

    jobs = [_Job(_staged_insert("kept")), _Job(writes_then_fails)]
    with caplog.at_level("WARNING", logger="survey_app.db"):
        _drive(staged, jobs)
    assert "running them one at a time" in caplog.text and "after writing" in caplog.text
    assert jobs[0].result == 1 and isinstance(jobs[1].error, ValueError)
    with staged.engine.connect() as conn:
        assert list(conn.execute(select(rows.c.who)).scalars()) == ["kept"]


def test_a_job_run_alone_does_not_join_the_group_commit_on_postgresql(db):
    """A new schedule waits for the study's row lock: on PostgreSQL it runs in the calling
    thread, in its own transaction, so no batch of answers waits with it; SQLite has one
    writer and runs it there like any write."""
    where = db.run_write(lambda conn: threading.current_thread().name, alone=True)
    if db.is_sqlite:
        assert where == "survey-group-commit"
    else:
        assert where == threading.current_thread().name
    db.run_write(lambda conn: conn.execute(rows.insert(), {"who": "alone", "n": 1}), alone=True)
    with db.engine.connect() as conn:
        assert conn.execute(select(rows.c.who)).all() == [("alone",)]


class _Fatal(BaseException):
    """Not an Exception: what no handler of a job expects."""


def test_the_writer_survives_a_job_that_raises_a_base_exception(db):
    def fatal(conn):
        raise _Fatal("boom")

    with pytest.raises(_Fatal):
        db.run_write(fatal)
    db.run_write(lambda conn: conn.execute(rows.insert(), {"who": "after", "n": 1}))
    with db.engine.connect() as conn:
        assert conn.execute(select(rows.c.who)).all() == [("after",)]


def test_a_write_given_up_before_the_writer_took_it_never_runs(db):
    """A request that timed out and said "not stored" must not find it stored later."""
    started = threading.Event()

    def slow(conn):
        started.set()
        time.sleep(1.0)  # holds the writer
        conn.execute(rows.insert(), {"who": "slow", "n": 1})

    first = threading.Thread(target=db.run_write, args=(slow,))
    first.start()
    assert started.wait(10)
    with pytest.raises(TimeoutError, match="not stored"):
        db._committer.run(lambda conn: conn.execute(rows.insert(), {"who": "late", "n": 1}),
                          timeout=0.2)
    first.join(10)
    db.run_write(lambda conn: None)  # the writer has passed the given-up job by now
    with db.engine.connect() as conn:
        assert conn.execute(select(rows.c.who)).all() == [("slow",)]


def test_statements_know_whether_they_write(db):
    assert Prepared(rows.insert(), db.engine, columns=["who", "n"]).writes
    assert Prepared(update(rows).values(n=bindparam("m")), db.engine).writes
    assert not Prepared(select(rows.c.id), db.engine).writes
    assert not Prepared(text(" -- the count\n/* of rows */ select count(*) from rows"),
                        db.engine).writes
    assert Prepared(text("WITH x AS (INSERT INTO rows (who, n) VALUES ('a', 1) RETURNING id) "
                         "SELECT id FROM x"), db.engine).writes
    assert Prepared(text("/* note */ update rows set n = 2"), db.engine).writes
    assert Prepared(text("-- only a comment"), db.engine).writes  # unsure: writes
    assert Prepared(text("/*/ SELECT */ INSERT INTO rows (who, n) VALUES ('b', 2)"),
                    db.engine).writes
    assert Prepared(text("/* /* */ SELECT */ DELETE FROM rows"), db.engine).writes
    assert Prepared(text("SELECT 1; DELETE FROM rows"), db.engine).writes
    assert Prepared(text("SELECT * INTO copy FROM rows"), db.engine).writes
    assert Prepared(text("SELECT *\n\tinto copy FROM rows"), db.engine).writes
