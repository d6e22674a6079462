"""Database engine and sessions; opening a study's database with one-line errors.

SQLite is the embedded default (``STUDY/instance/survey.db``), in WAL mode so that readers
never block the writer; any other SQLAlchemy URL is used as given, except that
``postgresql://`` (and ``postgres://``) mean the psycopg 3 driver (``postgresql+psycopg://``,
the ``postgres`` extra), not SQLAlchemy's default psycopg2. :func:`open_database` is how the
commands and the app open one: it connects once and turns every failure a user can cause
(missing driver, unreachable server, wrong password, missing database, a database holding
another study, an old schema) into one :class:`~bench.errors.UserError` line.

Why transactions that write begin with ``BEGIN IMMEDIATE`` on SQLite: a deferred
transaction that first reads and then writes can fail at once with ``SQLITE_BUSY`` (the
busy timeout does not apply to a snapshot upgrade) when another connection committed in
between. Taking the write lock up front makes concurrent votes queue on the busy timeout
instead. Pass ``write=True`` to :func:`session_scope` for such transactions.

Durability: with ``synchronous=FULL`` (the default here) a committed vote survives a
process kill *and* a power cut; ``NORMAL`` survives a process kill (SIGKILL) but may lose
the last commits on power loss, and is faster. Configurable per app (``SQLITE_SYNCHRONOUS``).
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import GeneratorType
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, inspect, make_url, select
from sqlalchemy.exc import DBAPIError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.expression import Executable, TextClause

from bench.errors import UserError

from .models import Study

log = logging.getLogger(__name__)

T = TypeVar("T")
SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_IMMEDIATE = "hrbench_sqlite_immediate"


def default_db_url(study_dir: str | Path) -> str:
    """``sqlite:///STUDY/instance/survey.db`` (absolute path)."""
    path = Path(study_dir).resolve() / "instance" / "survey.db"
    return f"sqlite:///{path}"


POSTGRES_INSTALL = "pip install 'hrbench[postgres]'"


def normalise_url(url: str) -> str:
    """``postgresql://`` / ``postgres://`` -> ``postgresql+psycopg://``; others unchanged."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def shown_url(url: str) -> str:
    """The URL for messages and logs, password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: nothing to mask reliably
        return url.split("@")[-1] if "@" in url else url


def make_engine(url: str, *, synchronous: str = "FULL", pool_size: int = 16) -> Engine:
    """Create an engine; for SQLite set WAL, foreign keys, busy timeout and the begin mode.

    ``synchronous`` is one of ``SQLITE_SYNCHRONOUS`` (ignored for other databases).
    """
    synchronous = synchronous.upper()
    if synchronous not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {SQLITE_SYNCHRONOUS}, got {synchronous!r}")
    url = normalise_url(url)
    if not url.startswith("sqlite"):
        # A dead server must fail a request in seconds, not hang it on the OS's TCP timeout.
        # The pre-ping (one round trip per checkout: page reads) replaces connections that a
        # database restart broke before a request uses them. Writes do not check out: the
        # group-commit writer keeps one connection and replaces it when a batch fails.
        pg = url.startswith("postgresql")
        connect_args = {"connect_timeout": 10} if pg else {}
        # READ COMMITTED whatever the server's default: the writes rely on each statement
        # seeing what committed before it (the answers' guarded updates, the counts of new
        # schedules under the study lock); an export asks for its own snapshot.
        isolation = {"isolation_level": "READ COMMITTED"} if pg else {}
        # LIFO: the same few connections serve most requests, so the statements psycopg has
        # prepared on them get reused instead of being prepared again on every connection.
        return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                             pool_use_lifo=True, connect_args=connect_args, **isolation)
    if url.startswith("sqlite:///") and url not in ("sqlite:///", "sqlite:///:memory:"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"timeout": 30, "check_same_thread": False},
        pool_size=pool_size,
        max_overflow=pool_size,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # pragma: no cover - driver callback
        # Let SQLAlchemy's begin event own transaction start (pysqlite's own is deferred).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # pragma: no cover - driver callback
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        # Straight to the driver: this runs for every transaction, and a statement through
        # SQLAlchemy's execution machinery costs several times what SQLite needs for it.
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """An engine plus two session factories: plain (reads) and write (BEGIN IMMEDIATE)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._write_engine = engine.execution_options(**{_IMMEDIATE: True})
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(self._write_engine, expire_on_commit=False)
        # SQLite has one writer at a time. Waiting on its busy handler means sleeping in
        # growing steps (up to 100 ms) and polling; queueing this process's writers on a
        # lock instead hands the database over the moment the previous commit ends. Other
        # processes on the same file still wait on the busy timeout; PostgreSQL needs none.
        self._write_lock = threading.Lock() if self.is_sqlite else nullcontext()
        self._committer: GroupCommitter | None = None
        self._committer_lock = threading.Lock()

    def session(self, write: bool = False) -> Session:
        return (self._write if write else self._read)()

    @contextmanager
    def session_scope(self, write: bool = False) -> Iterator[Session]:
        """A session committed on success, rolled back on error, always closed.

        ``write=True``: the transaction takes the write lock up front (see module docstring).
        """
        with self._write_lock if write else nullcontext():
            s = self.session(write)
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise
            finally:
                s.close()

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read-only transaction in which every statement sees the same committed state.

        PostgreSQL: ``REPEATABLE READ READ ONLY`` (its default, READ COMMITTED, takes a new
        snapshot per statement); SQLite: a plain read transaction, which in WAL mode keeps
        the snapshot of its first read. Writers go on meanwhile; for exports of a live study.
        """
        opts = {} if self.is_sqlite else {"isolation_level": "REPEATABLE READ",
                                           "postgresql_readonly": True}
        with self.engine.connect().execution_options(**opts) as conn, conn.begin():
            yield conn

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """A Core connection in a write transaction (committed on success) for hot paths."""
        with self._write_lock, self._write_engine.begin() as conn:
            yield conn

    def run_write(self, job: Callable[[Connection], T], *, alone: bool = False,
                  lock_order: int | None = None) -> T:
        """Run ``job(conn)`` in a committed write transaction and return its result.

        The job joins a group commit (see :class:`GroupCommitter`): it returns only after
        the shared transaction holding its writes has been committed (durably, with
        SQLite's ``synchronous=FULL`` or PostgreSQL's defaults). An exception from the job
        undoes only that job's writes and is re-raised here. A job may run more than once
        (on PostgreSQL, see :class:`GroupCommitter`), so it must not act outside ``conn``.

        ``alone``: on PostgreSQL, run the job in a transaction of its own, in this thread,
        for a job that may wait on a lock another process holds (a new schedule waits for
        the study row, see ``queries.lock_study``): in a group commit the wait, and then
        the lock itself until the batch commits, would hold up every answer of the batch.
        SQLite has one writer and ignores it.

        ``lock_order``: the id of the row the job updates (an answer's person). PostgreSQL
        steps a batch's staged jobs in this order (those without one first, equal ones as
        they came), so that batches of two processes that update the same rows lock them
        in the same order: in opposite orders each would wait for the other's row until
        PostgreSQL's deadlock check (1 s) failed one of them. The order holds within a
        step, so such jobs must write in the same step: answers and withdrawals write in
        their second (a plain job writes before any staged job's first step).
        """
        if alone and not self.is_sqlite:
            with self.write_connection() as conn:
                return _call(job, conn)
        if self._committer is None:
            with self._committer_lock:
                if self._committer is None:
                    self._committer = GroupCommitter(self)
        return self._committer.run(job, lock_order=lock_order)

    def dispose(self) -> None:
        self.engine.dispose()


@dataclass(eq=False)  # hashable by identity: batches key their jobs
class _Job:
    fn: Callable[[Connection], object]
    lock_order: int | None = None  # see Database.run_write
    done: threading.Event = field(default_factory=threading.Event)
    result: object = None
    error: BaseException | None = None
    # A job is claimed by the writer or cancelled by its request (timed out), never both:
    # a request told "not stored" must not find it stored later.
    claim: threading.Lock = field(default_factory=threading.Lock)
    state: str = "queued"  # "queued" -> "claimed" or "cancelled"

    def take(self, new_state: str) -> bool:
        """Move from queued to ``new_state``; False if the other side got there first."""
        with self.claim:
            if self.state != "queued":
                return False
            self.state = new_state
            return True


class GroupCommitter:
    """One writer thread that runs write jobs from many request threads in shared commits.

    Why: a commit is the expensive part of a small write. On a disk where one ``fsync``
    costs milliseconds (5.7 ms measured on the development VM), one commit per answer caps
    a durable (``synchronous=FULL``) SQLite at a few hundred answers per second; on
    PostgreSQL each transaction of its own also costs a pool checkout, ``BEGIN`` and
    ``COMMIT`` round trips (about 0.15 ms of client CPU each through psycopg here) and a
    WAL flush. The writer takes every job waiting in the queue (up to ``max_batch``), runs
    them in one transaction on the one connection it keeps, commits once, and only then
    wakes the request threads. If the commit itself fails, every job of the batch gets the
    error (none of them was stored, none is acknowledged).

    A failing job must not take the batch's other writes with it:

    - SQLite: each job runs inside its own SAVEPOINT (microseconds there); a failing job
      rolls back to it alone.
    - PostgreSQL: a savepoint would cost two more round trips per job, so the jobs share
      the transaction without them. When one fails, the whole batch is rolled back and
      every job of it runs again alone, in its own transaction, so that each result and
      each error is the one of a run that committed (or of none). Failures are rare
      (a 409, a duplicate); jobs must then be safe to run twice: no effects outside the
      connection. This also covers a connection that a server restart broke: the batch
      fails, the writer reconnects and the jobs run again. When every job of a batch is
      staged and at its last step (:attr:`Ask.last`), the COMMIT goes in that step's round
      trip; were the connection lost then, whether it committed is unknown and the batch
      runs again, which such jobs promise to survive (an answer finds itself stored).
    """

    def __init__(self, db: Database, max_batch: int = 64):
        self.db, self.max_batch = db, max_batch
        # Staged jobs go to the server together only through psycopg's pipeline mode.
        self._pipeline = db.engine.dialect.driver == "psycopg"
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="survey-group-commit",
                                        daemon=True)
        self._thread.start()

    def run(self, fn: Callable[[Connection], T], timeout: float = 60.0,
            lock_order: int | None = None) -> T:
        """``fn``'s result once committed. ``TimeoutError`` when the writer did not start on
        it within ``timeout`` (then it never runs) or did not finish it within twice that
        (then it may still be stored: the caller must not say it was not)."""
        if not self._thread.is_alive():
            raise RuntimeError("the database writer has stopped; restart the server")
        job = _Job(fn, lock_order)
        self._queue.put(job)
        if not job.done.wait(timeout):
            if job.take("cancelled"):
                raise TimeoutError("the database writer did not start on it in time; not stored")
            if not job.done.wait(timeout):
                raise TimeoutError("the database writer did not finish it in time; it may be stored")
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def _take(self) -> list[_Job]:
        """The jobs waiting now (at least one), less those their requests gave up on."""
        batch: list[_Job] = []
        while not batch:
            job = self._queue.get()
            batch = [job] if job.take("claimed") else []
            while len(batch) < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job.take("claimed"):
                    batch.append(job)
        return batch

    def _loop(self) -> None:
        # The writer keeps one connection for its lifetime (None after a failure until the
        # next batch): checking one out of the pool and resetting it on return costs more
        # CPU per batch than the answers' own SQL.
        conn: Connection | None = None
        while True:
            batch = self._take()
            try:
                if conn is None:
                    conn = self.db._write_engine.connect()
                if self.db.is_sqlite:
                    self._with_savepoints(conn, batch)
                else:
                    conn = self._together(conn, batch)
            except BaseException as exc:  # whatever it was, the writer must go on
                log.exception("group commit of %d writes failed; none is acknowledged", len(batch))
                for job in batch:
                    job.error, job.result = exc, None
                conn = _discard(conn)
            finally:
                for job in batch:
                    job.done.set()

    def _with_savepoints(self, conn: Connection, batch: list[_Job]) -> None:
        with self.db._write_lock, conn.begin():
            # Savepoints issued on the driver connection: SQLAlchemy's begin_nested() costs
            # more CPU than the answer's own statements. SQLAlchemy does not track them, so
            # its transaction stays the one plain BEGIN IMMEDIATE ... COMMIT around the batch.
            raw = conn.connection.driver_connection
            for job in batch:
                raw.execute("SAVEPOINT job")
                try:
                    job.result = _call(job.fn, conn)
                    raw.execute("RELEASE job")
                except Exception as exc:  # handed to the request thread
                    raw.execute("ROLLBACK TO job")
                    raw.execute("RELEASE job")
                    job.error = exc

    def _together(self, conn: Connection, batch: list[_Job]) -> Connection | None:
        """PostgreSQL: the batch in one transaction; on any failure, one job at a time.
        Jobs run in their ``lock_order`` (see :meth:`Database.run_write`)."""
        batch = sorted(batch, key=_lock_key)
        trans = conn.begin()
        try:
            gens = {}
            for job in batch:
                out = job.fn(conn)
                if isinstance(out, GeneratorType) and self._pipeline:
                    gens[job] = out
                else:
                    job.result = _finish(out, conn)
            # The COMMIT may ride with the last step only when every job is staged: were
            # the connection lost in that round trip, the commit's outcome would be unknown
            # and the batch runs again, which staged jobs promise to survive (Ask.last) and
            # plain ones (a screening row's insert) do not.
            _lock_step(conn, gens, commit=len(gens) == len(batch))
        except Exception as exc:
            if not isinstance(exc, (SQLAlchemyError, self.db.engine.dialect.loaded_dbapi.Error)):
                # Not a clash between the batch's writes: a job failing after its writes, or
                # a bug, which the replay below would otherwise hide behind slower batches.
                log.warning("a batch of %d writes failed (%r); running them one at a time",
                            len(batch), exc)
            try:
                trans.rollback()
            except Exception:  # the connection is gone (server restart): a new one
                conn = _discard(conn)
            return self._one_by_one(conn, batch)
        trans.commit()  # (a no-op when the last step committed) an error here reaches every
        return conn     # job of the batch (see _loop)

    def _one_by_one(self, conn: Connection | None, batch: list[_Job]) -> Connection | None:
        unreachable: BaseException | None = None
        for job in batch:
            job.result = job.error = None
            if unreachable is not None:  # one connect timeout per batch, not one per job
                job.error = unreachable
                continue
            if conn is None:
                try:
                    conn = self.db._write_engine.connect()
                except Exception as exc:
                    job.error = unreachable = exc
                    continue
            try:
                with conn.begin():
                    job.result = _call(job.fn, conn)
            except Exception as exc:  # handed to the request thread
                job.error = exc
                if conn.invalidated or conn.closed:
                    conn = _discard(conn)
        return conn


def _lock_key(job: _Job) -> tuple[bool, int]:
    return job.lock_order is not None, job.lock_order or 0


def _lock_step(conn: Connection, gens: dict, commit: bool = False) -> bool:
    """Drive staged jobs (``{job: generator}``) together: the statements all of them ask
    for next go to the server in one pipeline (one round trip), then each job gets its
    answer and asks again, until every one has returned.

    ``commit``: when every job's next Ask is its last (``Ask.last``), send the COMMIT in
    the same pipeline; returns whether it did (the transaction is then over).

    The jobs of one step do not see each other's writes of that step (a second answer of
    one person in the same batch reads the state before the first): that can only make a
    statement fail (a unique or guarded write), and then the caller runs the batch again
    one job at a time, where each sees everything before it. A job that raises before it
    asked for any write (a 409 after its look-up) changed nothing: that error is its
    outcome, and the others go on; raising after a write fails the batch.
    """
    raw = conn.connection.driver_connection
    asks: dict = {}
    answers: dict = dict.fromkeys(gens)
    wrote: set = set()
    committed = False
    while gens:
        for job, gen in list(gens.items()):
            try:
                asks[job] = gen.send(answers[job])
            except StopIteration as stop:
                job.result = stop.value
            except Exception as exc:
                if committed:  # it broke Ask.last's promise: its writes are committed
                    job.error = RuntimeError(f"a staged job raised after its last Ask ({exc!r})")
                    log.error("%s", job.error)
                elif job in wrote:
                    raise
                else:
                    job.error = exc
            else:
                if not committed:
                    if asks[job].writes:
                        wrote.add(job)
                    continue
                gen.close()  # the same, asking again
                job.error = RuntimeError("a staged job asked again after its last Ask")
                log.error("%s", job.error)
            del gens[job]
            asks.pop(job, None)
        if not gens:
            return committed
        jobs = list(asks)
        committed = commit and all(asks[job].last for job in jobs)
        sent = _send_together(raw, [asks[job].steps for job in jobs], commit=committed)
        answers = {job: asks[job].result(cursors) for job, cursors in zip(jobs, sent, strict=True)}
    return committed


def _send_together(raw, groups: list, commit: bool = False) -> list[list]:
    """Run each group's ``(Prepared, params)`` steps in one psycopg pipeline: one round trip
    for all of them (``commit``: and then COMMIT). Their cursors, group by group; a failing
    statement raises on leaving the pipeline, and the statements after it, the COMMIT
    included, do not run."""
    with raw.pipeline():
        cursors = [[raw.execute(p.sql, p._args(params)) for p, params in steps]
                   for steps in groups]
        if commit:
            # As a statement, not raw.commit(), which would sync the pipeline on its own:
            # the pipeline's one sync on leaving it brings every result back together.
            raw.execute("COMMIT")
        return cursors


def _finish(out: object, conn: Connection) -> object:
    """The result of a job that returned ``out``: ``out`` itself for a plain job; for a
    staged one (a generator, see :class:`Ask`), what it returns once each statement it
    yields has been executed at once."""
    if not isinstance(out, GeneratorType):
        return out
    try:
        ask = next(out)
        while True:
            ask = out.send(ask.run(conn))
    except StopIteration as stop:
        return stop.value
    finally:
        out.close()  # a statement failed: the job's own cleanup (finally, with) runs now


def _call(fn: Callable[[Connection], object], conn: Connection) -> object:
    """Run a job alone (plain or staged)."""
    return _finish(fn(conn), conn)


def _writes(stmt: Executable) -> bool:
    """Whether ``stmt`` may write: a Core INSERT, UPDATE or DELETE, or any text that is not
    a plain SELECT (a ``WITH`` may hold an INSERT; when unsure, say it writes: a batch whose
    job fails after a write runs again, which is only slower)."""
    if isinstance(stmt, TextClause):
        # SELECT … INTO makes a table; a second statement after ";" may write.
        return _leading_word(stmt.text) != "SELECT" or ";" in stmt.text \
            or _INTO.search(stmt.text) is not None
    return bool(getattr(stmt, "is_dml", False))


_INTO = re.compile(r"\bINTO\b", re.IGNORECASE)


def _leading_word(sql: str) -> str:
    """The first SQL keyword of ``sql``, after whitespace and comments (nested ``/* */``
    included, as PostgreSQL reads them), upper case; "" when there is none."""
    i, n = 0, len(sql)
    while i < n:
        if sql[i].isspace():
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        else:
            break
    return sql[i:i + 6].upper()


def _discard(conn: Connection | None) -> None:
    """Close a connection in whatever state a failure left it; the next batch opens another."""
    if conn is not None:
        try:
            conn.close()
        except Exception:  # already broken; the pool discards it
            log.debug("closing the writer's connection failed", exc_info=True)
    return None


class Prepared:
    """A Core statement compiled once, run on the driver connection (SQLite or psycopg).

    Why: on the answer path SQLAlchemy's execution machinery (compiled-cache lookup,
    events, result set-up) costs about 0.1 ms CPU per statement, ten times what
    ``sqlite3`` itself needs, and the statements never change. The SQL is still what
    SQLAlchemy generates for the dialect, and parameters still go through the column
    types' bind processors (on SQLite booleans as 0/1, date-times in SQLAlchemy's text
    format; psycopg adapts Python values itself), so rows written here read back exactly
    like rows written through Core. psycopg also prepares a statement on the server once it
    has run a few times. With any other driver (or when ``fast`` is False) :meth:`first`
    and :meth:`rowcount` run the statement through Core.

    ``columns``: for an INSERT, the columns given (one value each, by name).
    Results are plain tuples in select-list order; no result processing is applied, so
    select only integers, strings and booleans (SQLite returns booleans as 0/1).
    """

    def __init__(self, stmt: Executable, engine: Engine, columns: list[str] | None = None,
                 fast: bool = True):
        self.stmt = stmt
        self.writes = _writes(stmt)
        dialect = engine.dialect
        qmark = dialect.name == "sqlite" and dialect.paramstyle == "qmark"
        named = dialect.name == "postgresql" and dialect.driver == "psycopg" \
            and dialect.paramstyle == "pyformat"
        self.fast = fast and (qmark or named)
        self._named = named
        self.sql = ""
        self._params: list[tuple[str, Callable | None]] = []
        self._dbapi_error = dialect.loaded_dbapi.Error if self.fast else Exception
        if not self.fast:
            return
        compiled = stmt.compile(dialect=dialect, column_keys=columns)
        binds = compiled.binds
        # qmark: one value per placeholder, in order; pyformat: one value per name.
        for name in (compiled.positiontup or ()) if qmark else list(binds):
            typ = binds[name].type.dialect_impl(dialect)
            self._params.append((name, typ.bind_processor(dialect)))
        self.sql = compiled.string

    def _args(self, params: dict) -> tuple | dict:
        values = ((n, p(params[n]) if p is not None else params[n]) for n, p in self._params)
        return dict(values) if self._named else tuple(v for _, v in values)

    def _run(self, conn: Connection, params: dict):
        args = self._args(params)
        try:
            return conn.connection.driver_connection.execute(self.sql, args)
        except self._dbapi_error as exc:
            # The same exception types as through Core (e.g. sqlalchemy IntegrityError).
            raise DBAPIError.instance(self.sql, args, exc, self._dbapi_error) from exc

    def first(self, conn: Connection, params: dict) -> tuple | None:
        """The first result row (a tuple) or None."""
        if not self.fast:
            row = conn.execute(self.stmt, params).first()
            return None if row is None else tuple(row)
        return self._run(conn, params).fetchone()

    def rowcount(self, conn: Connection, params: dict) -> int:
        """Execute (INSERT/UPDATE) and return the number of rows it touched."""
        if not self.fast:
            return conn.execute(self.stmt, params).rowcount
        return self._run(conn, params).rowcount

    def all(self, conn: Connection, params: dict) -> list[tuple]:
        """Every result row (tuples)."""
        if not self.fast:
            return [tuple(row) for row in conn.execute(self.stmt, params)]
        return self._run(conn, params).fetchall()

    @staticmethod
    def rowcounts(conn: Connection, *steps: tuple[Prepared, dict]) -> list[int]:
        """Execute several INSERT/UPDATE statements in order; the rows each touched.

        On PostgreSQL they go to the server together (psycopg's pipeline mode): one round
        trip instead of one each; on a server as busy as its clients, each round trip waits
        for the database process to get a core. A failing statement raises as
        :meth:`rowcount` would, and the ones after it do not run.
        """
        return Ask.rowcounts(*steps).run(conn)


@dataclass(frozen=True)
class Ask:
    """What a staged write job yields: statements to run, and how to read their answer.

    A staged job is a generator ``job(conn)`` that yields ``Ask`` objects and gets back
    each one's result (``Ask.first``: the first row or None; ``Ask.rowcounts``: the rows
    each statement touched; ``Ask.rows``: each statement's rows); what it returns is its
    result. It reads and writes only through what it yields. Alone it runs like a plain
    job (each ``Ask`` executed at once, its statements in one round trip on PostgreSQL).
    In a PostgreSQL group commit the writer steps all the batch's staged jobs together and
    sends what they ask for at each step in one round trip, so a batch of answers costs a
    few round trips instead of a few per answer.
    """

    steps: tuple[tuple[Prepared, dict], ...]
    read: str  # "first", "rowcounts" or "rows"
    # The job's last Ask: whatever its answer, the job then returns without raising, and
    # running the whole job again after this Ask's writes were committed gives the same
    # result (an answer then finds itself stored). In a group commit where every job's
    # step is a last one, the writer sends the COMMIT in the same round trip.
    last: bool = False

    @classmethod
    def first(cls, stmt: Prepared, params: dict) -> Ask:
        return cls(((stmt, params),), "first")

    @classmethod
    def rowcounts(cls, *steps: tuple[Prepared, dict], last: bool = False) -> Ask:
        return cls(tuple(steps), "rowcounts", last)

    @classmethod
    def rows(cls, *steps: tuple[Prepared, dict]) -> Ask:
        return cls(tuple(steps), "rows")

    @property
    def writes(self) -> bool:
        """Whether a statement of it is an INSERT, UPDATE or DELETE."""
        return any(p.writes for p, _ in self.steps)

    def run(self, conn: Connection):
        """Execute the steps in order (on PostgreSQL in one round trip); a failing one
        raises as through Core (e.g. sqlalchemy's IntegrityError) and stops the rest."""
        if self.read == "first":
            (stmt, params), = self.steps
            return stmt.first(conn, params)
        if not all(p.fast and p._named for p, _ in self.steps):
            one = Prepared.rowcount if self.read == "rowcounts" else Prepared.all
            return [one(p, conn, params) for p, params in self.steps]
        error = self.steps[0][0]._dbapi_error
        try:
            (cursors,) = _send_together(conn.connection.driver_connection, [self.steps])
        except error as exc:
            sql = "; ".join(p.sql for p, _ in self.steps)
            raise DBAPIError.instance(sql, None, exc, error) from exc
        return self.result(cursors)

    def result(self, cursors: list):
        """The answer from the psycopg cursors of a pipeline that ran ``steps``."""
        if self.read == "first":
            return cursors[0].fetchone()
        if self.read == "rowcounts":
            return [c.rowcount for c in cursors]
        return [c.fetchall() if c.description else [] for c in cursors]


def _connect_error(url: str, exc: BaseException) -> str:
    """One line saying why connecting to ``url`` failed and what to do."""
    u = make_url(url)
    where = f"{u.host or 'localhost'}:{u.port or 5432}"
    text = str(getattr(exc, "orig", None) or exc)
    low = text.lower()
    state = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if state == "3D000" or ("database" in low and "does not exist" in low):
        return (f"database {u.database!r} does not exist on {where}; create it with "
                f"`createdb -h {u.host or 'localhost'} -p {u.port or 5432}"
                f"{f' -U {u.username}' if u.username else ''} {u.database}`")
    if state in ("28P01", "28000") or "authentication failed" in low or (
            "role" in low and "does not exist" in low) or "no password supplied" in low:
        return (f"authentication as {u.username!r} failed on {where}; check the user name and "
                "password in the URL (or ~/.pgpass)")
    if state == "42501" or "permission denied" in low:
        return (f"user {u.username!r} may not create or read the survey tables in "
                f"{u.database!r} (PostgreSQL 15 and later: make the user the owner, "
                f"`createdb -O {u.username} {u.database}`, or GRANT CREATE ON SCHEMA public)")
    if "resolve host" in low or "translate host name" in low or "name or service" in low:
        return f"unknown host {u.host!r}; check the host name in the URL"
    if "refused" in low or "timeout" in low or "timed out" in low or "could not connect" in low \
            or "no route" in low or "unreachable" in low:
        return (f"cannot reach a PostgreSQL server at {where} "
                f"({'connection refused' if 'refused' in low else 'no answer'}); is it running "
                "and listening there (listen_addresses, port, firewall)?")
    return f"cannot connect ({text.splitlines()[0] if text else type(exc).__name__})"


def open_database(url: str, *, study_uid: str | None = None, create: bool = True,
                  check_schema: bool = True, synchronous: str = "FULL", pool_size: int = 16,
                  upgrade_hint: str = "hrbench survey db upgrade STUDY") -> Database:
    """Open a survey database, ready to use, or raise a one-line :class:`UserError`.

    - connects once (driver, server, credentials, database name checked);
    - ``create``: an empty database gets the current schema (:mod:`.migrations`);
      otherwise an empty database is an error (e.g. export before anyone voted);
    - ``check_schema``: a schema at another revision is refused, naming ``upgrade_hint``
      (see migrations); False for the upgrade command itself;
    - ``study_uid``: refused when the database holds a different study (one database per
      study: export, backups and restores then concern exactly one study).
    """
    from . import migrations

    url = normalise_url(url)
    shown = shown_url(url)
    try:
        engine = make_engine(url, synchronous=synchronous, pool_size=pool_size)
    except ValueError as exc:
        raise UserError(f"database settings: {exc}") from None
    except NoSuchModuleError:
        raise UserError(f"--db {shown}: unknown database kind; use sqlite:///FILE or "
                        "postgresql://USER:PASSWORD@HOST:PORT/DATABASE") from None
    except ModuleNotFoundError as exc:
        hint = POSTGRES_INSTALL if url.startswith("postgresql") else f"pip install {exc.name}"
        raise UserError(f"--db {shown}: the database driver {exc.name!r} is not installed; "
                        f"install it with `{hint}`") from None
    except Exception as exc:  # e.g. an unparseable URL
        raise UserError(f"--db {shown}: cannot use this database URL ({exc})") from None
    db = Database(engine)
    try:
        try:
            with engine.connect() as conn:
                has_tables = inspect(conn).has_table("study")
        except OperationalError as exc:
            if engine.dialect.name == "sqlite":
                raise UserError(f"--db {shown}: cannot open the SQLite file ({exc.orig})") from None
            raise UserError(f"--db {shown}: {_connect_error(url, exc)}") from None
        if not has_tables and not create:
            raise UserError(f"--db {shown}: holds no survey yet; serve the study first, or pass "
                            "the --db URL it was served with")
        try:
            # SQLite: BEGIN IMMEDIATE, so two processes set up an empty file one after the other.
            if check_schema:
                migrations.prepare(db._write_engine, upgrade_hint)
        except migrations.SchemaOutdated as exc:
            raise UserError(f"--db {shown}: {exc}") from None
        if study_uid is not None and has_tables:
            with engine.connect() as conn:
                others = conn.execute(select(Study.uid, Study.name).where(Study.uid != study_uid)
                                      .limit(1)).first()
            if others is not None:
                raise UserError(
                    f"--db {shown}: this database holds another study ({others[0]}, "
                    f"{others[1]!r}), not {study_uid}; use one database per study "
                    "(createdb a new one and pass its URL)"
                )
    except UserError:
        db.dispose()
        raise
    except SQLAlchemyError as exc:
        db.dispose()
        raise UserError(f"--db {shown}: {_connect_error(url, exc)}") from None
    return db
