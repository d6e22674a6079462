"""The answer path's SQL and the pair-count cache used when planning new schedules.

The answer path is the hot one: Core statements compiled once per app and run on the
driver cursor on SQLite (:class:`survey_app.db.Prepared`): one read of participant +
current trial + its validation answer, one insert, one update.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta

from sqlalchemy import (
    Boolean,
    Connection,
    DateTime,
    Integer,
    String,
    and_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)

from .db import Ask, Prepared
from .models import Pair, Participant, Study, Trial, Vote, utcnow

_vote, _part, _trial, _pair = Vote.__table__, Participant.__table__, Trial.__table__, Pair.__table__
UNCOUNTED_KINDS = ("repeat", "practice")  # trial kinds that add no vote to a pair's balance
_study = Study.__table__


def lock_study(conn: Connection, study_id: int) -> None:
    """Hold the study's row lock until this transaction ends (PostgreSQL; no-op on SQLite).

    Why: a new schedule must be planned from counts that include every schedule committed
    before it, also those planned by other server processes, or people starting at the same
    moment in different processes get the same least-used pairs. Locking the one study row
    (``SELECT … FOR NO KEY UPDATE``) queues new schedules of one study across all processes while
    answers, which never touch that row, go on. ``SKIP LOCKED`` would let a start skip the
    lock and plan from stale counts, which is the race itself; an advisory lock would work
    the same but needs a key space of its own. SQLite needs nothing: its writes already run
    one at a time in one process (``--workers`` > 1 is refused there).
    """
    if conn.dialect.name != "sqlite":
        conn.execute(_LOCK_STUDY, {"sid": study_id})


# FOR NO KEY UPDATE: queues new schedules against each other like FOR UPDATE, but not the
# foreign-key checks of rows that point at the study (a screening row's insert).
_LOCK_STUDY = select(_study.c.id).where(_study.c.id == bindparam("sid")).with_for_update(
    key_share=True)


MAX_ID = 2**31 - 1  # participant ids are PostgreSQL integers


def pair_counts(conn: Connection, study_id: int, active_window_s: float,
                after: int = 0, upto: int = MAX_ID) -> dict[int, int]:
    """Votes per pair from included people, plus open schedules of recently active people
    (only people with ``after < id <= upto``, see :meth:`PairCounts.base`)."""
    return dict(conn.execute(_COUNTS, count_params(study_id, active_window_s, after, upto)).all())


def count_params(study_id: int, active_window_s: float, after: int, upto: int = MAX_ID) -> dict:
    """The counts statement's parameters: the study, people with ``after < id <= upto``,
    and the start of the active window (now minus ``active_window_s``)."""
    return {"sid": study_id, "after": after, "upto": upto,
            "cutoff": utcnow() - timedelta(seconds=active_window_s)}


# One statement over the schedules (a trial below the person's ``next_index`` is answered:
# the vote and the advance commit together), so the counts come from one snapshot. Two
# statements (votes, then open schedules) could, under PostgreSQL's READ COMMITTED, miss or
# double an answer committed between them and unbalance the next schedule.
_COUNTS = (
    select(_trial.c.pair_id, func.count())
    .join(_part, _part.c.id == _trial.c.participant_id)
    .where(
        _part.c.study_id == bindparam("sid"),
        _part.c.id > bindparam("after"),
        _part.c.id <= bindparam("upto"),
        _part.c.excluded.is_(False),
        # A second look or a practice answer adds no independent vote.
        _trial.c.kind.not_in([literal_column(f"'{k}'") for k in UNCOUNTED_KINDS]),
        or_(
            _trial.c.index < _part.c.next_index,
            and_(_part.c.finished_at.is_(None),
                 _part.c.last_seen_at >= bindparam("cutoff", type_=DateTime)),
        ),
    )
    .group_by(_trial.c.pair_id)
)


class PairCounts:
    """Balance counts for new schedules, read in full from the database at most every
    ``ttl_s`` seconds.

    Why: the full count scans every answer and every open schedule of the study, so its
    cost grows with the study; run for each new participant it made starting a session
    the dearest request of all (on PostgreSQL it also runs under the study's lock, so it
    paced every start of every process). Between full reads only the new schedules are
    added; what lowers a count (an exclusion, a schedule left open past the active window)
    shows up at the next full read: the counts steer balance, they record nothing.
    ``ttl_s <= 0`` reads everything every time.

    - SQLite (one process, one writer): :meth:`snapshot`, plus the schedules this process
      plans (:meth:`add`).
    - PostgreSQL (several processes): a new schedule, holding the study lock, reads the
      counts of the people after :meth:`base`'s id, whichever process planned them, and
      hands the sum back with :meth:`update`.
    """

    REFRESH_S = 10.0  # base: how long a full read told to one caller may take

    def __init__(self, ttl_s: float):
        self.ttl_s = float(ttl_s)
        self._lock = threading.Lock()
        self._counts: dict[int, int] | None = None
        self._read_at = 0.0
        self._upto = 0  # base/update: the counts are those of the people with id <= this
        self._refresh_at = float("-inf")  # base: when a caller was last told to read in full

    def _stale(self) -> bool:
        return self._counts is None or time.monotonic() - self._read_at >= self.ttl_s

    def snapshot(self, read: Callable[[], dict[int, int]]) -> dict[int, int]:
        """A copy of the counts; ``read()`` (the database query) when they are stale."""
        with self._lock:  # one reader refreshes; the others wait for its result
            if self._stale():
                self._counts, self._read_at = read(), time.monotonic()
            return dict(self._counts)

    def add(self, pair_ids: Iterable[int]) -> None:
        """Count newly scheduled trials until the next database read includes them."""
        with self._lock:
            if self._counts is not None:
                for pid in pair_ids:
                    self._counts[pid] = self._counts.get(pid, 0) + 1

    def base(self) -> tuple[dict[int, int], int]:
        """``(counts, upto)``: the counts of the people with an id up to ``upto``, to which
        those of the people after it are to be added; ``({}, 0)`` when stale (read them in
        full first, see ``StartStatements``).

        Stale, one caller at a time is told to read in full (for up to ``REFRESH_S``, in
        case it fails); the others meanwhile get the old counts, which plus the people
        after them are exact but for what lowers a count."""
        with self._lock:
            if not self._stale():
                return dict(self._counts), self._upto
            now = time.monotonic()
            if self.ttl_s > 0 and self._counts is not None \
                    and now - self._refresh_at < self.REFRESH_S:
                return dict(self._counts), self._upto
            self._refresh_at = now
            return {}, 0

    def update(self, counts: dict[int, int], upto: int, full: bool) -> None:
        """Keep ``counts``, those of every person with an id up to ``upto`` (read under the
        study lock: nobody else can add a schedule meanwhile), unless newer ones are kept."""
        with self._lock:
            if full or self._counts is None or upto > self._upto:
                self._counts, self._upto = dict(counts), upto
                if full:
                    self._read_at, self._refresh_at = time.monotonic(), float("-inf")


_CURRENT = (
    select(
        _part.c.study_id, _part.c.next_index, _part.c.n_trials, _part.c.excluded,
        _part.c.validation_failures, _part.c.outcome, _trial.c.id, _trial.c.pair_id, _trial.c.left_item_id,
        _trial.c.right_item_id, _trial.c.kind, _pair.c.correct_item_id,
    )
    .select_from(
        _part.outerjoin(
            _trial,
            and_(_trial.c.participant_id == _part.c.id, _trial.c.index == _part.c.next_index),
        ).outerjoin(_pair, _pair.c.id == _trial.c.pair_id)
    )
    .where(_part.c.id == bindparam("pid"))
)
_PREV_CHOICE = select(_vote.c.choice).where(
    _vote.c.participant_id == bindparam("pid"), _vote.c.trial_index == bindparam("idx")
)
_ADVANCE = (
    update(_part)
    # The guards make a lost race update nothing: another answer got in first, or (another
    # process on PostgreSQL) the person withdrew after the answer's look-up, whose outcome
    # "returned" must neither get a vote after it nor turn into "completed".
    .where(_part.c.id == bindparam("pid"), _part.c.next_index == bindparam("idx"),
           _part.c.outcome.is_(None))
    .values(
        next_index=bindparam("new_next"),
        last_seen_at=bindparam("now", type_=DateTime),
        validation_failures=_part.c.validation_failures + bindparam("fail_n", type_=Integer),
        excluded=bindparam("new_excluded"),
        exclusion_reason=case(
            (and_(bindparam("newly_excluded", type_=Boolean), _part.c.exclusion_reason.is_(None)),
             bindparam("reason", type_=String)),
            else_=_part.c.exclusion_reason,
        ),
        finished_at=case((bindparam("done", type_=Boolean), bindparam("now", type_=DateTime)),
                         else_=_part.c.finished_at),
        outcome=case((bindparam("done", type_=Boolean), bindparam("outcome", type_=String)),
                     else_=_part.c.outcome),
        completion_code=case(
            (bindparam("set_code", type_=Boolean), bindparam("code", type_=String)),
            else_=_part.c.completion_code,
        ),
    )
)
_VOTE_COLUMNS = [
    "participant_id", "trial_index", "trial_id", "pair_id", "left_item_id", "right_item_id",
    "choice", "chosen_item_id", "correct", "rt_ms_client", "rt_ms_server", "viewport_w",
    "viewport_h", "created_at", "dpr", "display_mode", "zoom_max", "flicker_toggles",
    "hidden_ms",
]
# The trial page: the first trial (is it a practice one?), the current one and the next
# one (its images are preloaded).
TRIAL_PAGE = (
    select(_trial.c.index, _trial.c.kind, _trial.c.left_item_id, _trial.c.right_item_id)
    .where(
        _trial.c.participant_id == bindparam("pid"),
        _trial.c.index.in_([0, bindparam("cur"), bindparam("nxt")]),
    )
)


_TRIAL_COLUMNS = ["participant_id", "index", "pair_id", "left_item_id", "right_item_id", "kind",
                  "repeat_of"]
_PARTICIPANT_COLUMNS = [
    "id", "study_id", "external_id", "n_trials", "next_index", "completion_code", "user_agent",
    "excluded", "validation_failures", "created_at", "last_seen_at", "platform",
    "platform_study_id", "platform_session_id", "submit_to", "viewport_w", "viewport_h", "dpr",
]


class StartStatements:
    """A new schedule's statements on PostgreSQL, prepared once for the app's engine: the
    study lock, the counts and the new participant's id in one round trip, then the
    participant and its trials in another (see ``participant.start``).

    When the cached counts are stale, the full count is read before the lock, for the
    people up to the newest one then committed (:attr:`newest`): ids are taken only under
    the lock and every holder commits before releasing it, so all people up to that one
    are committed, and those after it are added under the lock like any new schedule.
    The full count's cost grows with the study (~0.1 s at 3,000 people); it no longer
    holds up every other process's starts.
    """

    def __init__(self, engine, lock_timeout_s: float):
        self.lock_timeout_s = lock_timeout_s
        self.lock_timeout_params = {"ms": str(max(1, round(lock_timeout_s * 1000)))}
        self.newest = Prepared(select(func.coalesce(func.max(_part.c.id), literal_column("0")))
                               .where(_part.c.study_id == bindparam("sid")), engine)
        # How long a start waits for the study lock (a holder that hangs): then 503.
        self.lock_timeout = Prepared(text("SELECT set_config('lock_timeout', :ms, true)"), engine)
        self.lock = Prepared(_LOCK_STUDY, engine)
        self.counts = Prepared(_COUNTS, engine)
        # The id first, so that the schedule (seeded by it) is planned before any insert.
        self.next_id = Prepared(text("SELECT nextval(pg_get_serial_sequence('participant', "
                                     "'id'))"), engine)
        self.insert_participant = Prepared(_part.insert(), engine, columns=_PARTICIPANT_COLUMNS)
        self.insert_trials = Prepared(_INSERT_TRIALS, engine)

    def check(self, conn: Connection) -> None:
        """``ValueError`` unless the participant id sequence hands out ids one at a time
        (``CACHE 1``, PostgreSQL's default): with a cache, each connection takes ids in
        blocks, so a committed id no longer means that every lower one is settled, which
        the counts of new schedules rely on (see the class)."""
        cache = conn.execute(_ID_CACHE).scalar()
        if cache is None:
            raise ValueError("participant.id has no id sequence; the schema is not this "
                             "version's (hrbench survey db upgrade)")
        if cache != 1:
            raise ValueError(
                f"the participant id sequence has CACHE {cache}; new schedules need CACHE 1 "
                "(run `ALTER SEQUENCE participant_id_seq CACHE 1` in this database)")

    @staticmethod
    def trial_columns(rows: list[dict]) -> dict[str, list]:
        """:attr:`insert_trials`'s parameters: one list per column."""
        return {c: [r[c] for r in rows] for c in _TRIAL_COLUMNS}


_ID_CACHE = text("SELECT seqcache FROM pg_sequence "
                 "WHERE seqrelid = pg_get_serial_sequence('participant', 'id')::regclass")


# A schedule's trials in one statement, a PostgreSQL array per column: a statement per
# trial costs the web process about 0.1 ms of CPU each in psycopg, a schedule ~26 of them.
_INSERT_TRIALS = text(
    'INSERT INTO trial (participant_id, "index", pair_id, left_item_id, right_item_id, kind, '
    "repeat_of) SELECT * FROM unnest(CAST(:participant_id AS integer[]), "
    "CAST(:index AS integer[]), CAST(:pair_id AS integer[]), CAST(:left_item_id AS integer[]), "
    "CAST(:right_item_id AS integer[]), CAST(:kind AS varchar[]), "
    "CAST(:repeat_of AS integer[]))"
).bindparams(*(bindparam(c) for c in _TRIAL_COLUMNS))


# PostgreSQL: advance the participant and, only if that happened, insert the vote, in one
# statement. Another answer that got in first leaves nothing of this one written, so the
# answer job has nothing to undo and can let its write go out with the batch's COMMIT.
_ADVANCED = _ADVANCE.returning(_part.c.id).cte("advanced")
_RECORD = insert(_vote).from_select(
    _VOTE_COLUMNS,
    # Cast: a parameter in a select list has no column to take its type from (a NULL
    # would arrive as text).
    select(*(cast(bindparam(c, type_=_vote.c[c].type), _vote.c[c].type) for c in _VOTE_COLUMNS))
    .select_from(_ADVANCED),
)


# Withdrawing: the outcome becomes "returned" unless the person already has one.
_WITHDRAW = (
    update(_part)
    .where(_part.c.id == bindparam("pid"), _part.c.outcome.is_(None))
    .values(outcome=literal_column("'returned'"), completion_code=bindparam("code"),
            finished_at=bindparam("now", type_=DateTime),
            last_seen_at=bindparam("now", type_=DateTime))
)


class AnswerStatements:
    """The answer path's statements (and a withdrawal's), prepared once for the app's
    engine."""

    def __init__(self, engine):
        self.current = Prepared(_CURRENT, engine)
        self.prev_choice = Prepared(_PREV_CHOICE, engine)
        self.withdraw = Prepared(_WITHDRAW, engine)
        self.one_statement = engine.dialect.name == "postgresql"
        if self.one_statement:
            self.record_both = Prepared(_RECORD, engine)
        else:
            self.insert_vote = Prepared(_vote.insert().inline(), engine, columns=_VOTE_COLUMNS)
            self.advance = Prepared(_ADVANCE, engine)

    def record(self, vote: dict, advance: dict) -> Ask:
        """Insert the vote and advance the participant, as the last :class:`Ask` of a
        staged job; :meth:`stored` tells from its answer whether another answer got in
        first. PostgreSQL: then nothing was written (see ``_RECORD``); elsewhere the vote
        was inserted and the job must raise to undo it."""
        if self.one_statement:
            return Ask.rowcounts((self.record_both, {**vote, **advance}), last=True)
        return Ask.rowcounts((self.insert_vote, vote), (self.advance, advance))

    def stored(self, counts: list[int]) -> bool:
        return counts[-1] == 1

