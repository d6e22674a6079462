"""Routes: the participant flow, the admin pages, and the vote download.

Participant flow (plain HTML forms; JavaScript only adds keyboard shortcuts, the response
time measured in the page and the viewport size)::

    GET  /         instructions and consent        POST /start   create the schedule
    GET  /trial    the current trial               POST /trial   answer it (303 to the next)
    GET  /done     completion code (+ redirect link to the crowd platform, if configured)
    GET  /image/N  display image of item N (by id; no request path ever reaches the disk)

An answer is committed to the database before the response that leads to the next trial is
sent, so everything a participant saw acknowledged is stored. Answers for any trial other
than the current one are refused (409), except an identical resubmission of an answered
trial, which is accepted without a second row (browser retry, double click, back button).
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta

import pandas as pd
from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from sqlalchemy import Boolean, DateTime, String, and_, bindparam, case, func, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException

from .app import SurveyState
from .assign import plan_trials
from .db import Prepared
from .models import Pair, Participant, Trial, Vote, utcnow
from .security import (
    SECURITY_HEADERS,
    check_csrf,
    constant_time_equal,
    csrf_token,
)

log = logging.getLogger(__name__)
_vote, _part, _trial, _pair = Vote.__table__, Participant.__table__, Trial.__table__, Pair.__table__

participant_bp = Blueprint("participant", __name__)
admin_bp = Blueprint("admin", __name__, url_prefix="/admin")
export_bp = Blueprint("export", __name__, url_prefix="/admin/export")

EXTERNAL_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
EXTERNAL_ID_PARAMS = ("pid", "PROLIFIC_PID", "workerId", "participant")
MAX_TRIAL_INDEX = 100_000
MAX_RT_MS = 24 * 3600 * 1000
MAX_VIEWPORT = 100_000


def state() -> SurveyState:
    return current_app.extensions["survey"]


# ----------------------------------------------------------------------------- input parsing


def _int_field(name: str, lo: int, hi: int, required: bool) -> int | None:
    """An integer form field in ``[lo, hi]``; 400 when malformed (or missing if required)."""
    raw = request.form.get(name)
    if raw is None or raw.strip() == "":
        if required:
            abort(400, description=f"missing field {name!r}")
        return None
    raw = raw.strip()
    if len(raw) > 12 or not re.fullmatch(r"-?[0-9]+", raw):
        abort(400, description=f"field {name!r} must be a whole number")
    value = int(raw)
    if not lo <= value <= hi:
        abort(400, description=f"field {name!r} out of range [{lo}, {hi}]")
    return value


def _session_participant_id() -> int | None:
    """The participant id in the signed session, if it belongs to this study."""
    pid = session.get("p")
    if isinstance(pid, int) and not isinstance(pid, bool) and session.get("s") == state().spec.uid:
        return pid
    return None


def _load_participant() -> Participant | None:
    pid = _session_participant_id()
    if pid is None:
        return None
    with state().db.session_scope() as s:
        p = s.get(Participant, pid)
    if p is None or p.study_id != state().study_id:
        return None
    return p


def _now_ms() -> int:
    return int(time.time() * 1000)


# ----------------------------------------------------------------------------- participant


@participant_bp.get("/healthz")
def healthz() -> Response:
    return Response("ok\n", mimetype="text/plain")


@participant_bp.get("/")
def index():
    ext = None
    for name in EXTERNAL_ID_PARAMS:
        if name in request.args:
            ext = request.args.get(name, "")
            if not EXTERNAL_ID_RE.fullmatch(ext):
                abort(400, description=f"{name}: use 1-64 letters, digits, '.', '_' or '-'")
            break
    st = state()
    return render_template(
        "index.html",
        spec=st.spec,
        external_id=ext,
        resume=_load_participant() is not None,
        n_trials=st.spec.trials_per_participant,
    )


def _pair_counts(s, st: SurveyState) -> dict[int, int]:
    """Votes per pair from included people, plus open schedules of recently active people."""
    counts: dict[int, int] = {}
    voted = s.execute(
        select(Vote.pair_id, func.count())
        .join(Participant, Participant.id == Vote.participant_id)
        .join(Trial, Trial.id == Vote.trial_id)
        .where(
            Participant.study_id == st.study_id,
            Participant.excluded.is_(False),
            Trial.kind != "repeat",  # a person's second look adds no independent vote
        )
        .group_by(Vote.pair_id)
    )
    for pair_id, n in voted:
        counts[pair_id] = counts.get(pair_id, 0) + n
    cutoff = utcnow() - timedelta(seconds=float(current_app.config["ACTIVE_WINDOW_S"]))
    pending = s.execute(
        select(Trial.pair_id, func.count())
        .join(Participant, Participant.id == Trial.participant_id)
        .where(
            Participant.study_id == st.study_id,
            Participant.finished_at.is_(None),
            Participant.excluded.is_(False),
            Participant.last_seen_at >= cutoff,
            Trial.index >= Participant.next_index,
            Trial.kind != "repeat",
        )
        .group_by(Trial.pair_id)
    )
    for pair_id, n in pending:
        counts[pair_id] = counts.get(pair_id, 0) + n
    return counts


def _read_pair_counts(st: SurveyState) -> dict[int, int]:
    with st.db.session_scope() as s:
        return _pair_counts(s, st)


class PairCounts:
    """Balance counts for new schedules, read from the database at most every ``ttl_s``.

    Why: the two count queries scan every answer and every open schedule of the study, so
    their cost grows with the study; run for each new participant they made starting a
    session the dearest request of all. Between reads, the schedules this process plans
    are added on top, so people starting at the same moment get different least-used
    pairs (before, they read the same counts). Schedules planned by other server processes
    and exclusions show up at the next read: the counts steer balance, they record nothing.
    ``ttl_s <= 0`` reads the database every time.
    """

    def __init__(self, ttl_s: float):
        self.ttl_s = float(ttl_s)
        self._lock = threading.Lock()
        self._counts: dict[int, int] | None = None
        self._read_at = 0.0

    def snapshot(self, read: Callable[[], dict[int, int]]) -> dict[int, int]:
        """A copy of the counts; ``read()`` (the database query) when they are stale."""
        with self._lock:  # one reader refreshes; the others wait for its result
            now = time.monotonic()
            if self._counts is None or now - self._read_at >= self.ttl_s:
                self._counts, self._read_at = read(), now
            return dict(self._counts)

    def add(self, pair_ids: Iterable[int]) -> None:
        """Count newly scheduled trials until the next database read includes them."""
        with self._lock:
            if self._counts is not None:
                for pid in pair_ids:
                    self._counts[pid] = self._counts.get(pid, 0) + 1


def _start_session(pid: int) -> None:
    token = csrf_token()
    session.clear()
    session["csrf"] = token
    session["p"] = pid
    session["s"] = state().spec.uid
    session.permanent = True


@participant_bp.post("/start")
def start():
    st = state()
    if request.form.get("consent") != "yes":
        abort(400, description="please tick the consent box to take part")
    ext = request.form.get("external_id") or None
    if ext is not None and not EXTERNAL_ID_RE.fullmatch(ext):
        abort(400, description="external_id: use 1-64 letters, digits, '.', '_' or '-'")
    if _load_participant() is not None:
        return redirect(url_for(".trial"), code=303)
    if not st.start_limiter.allow(("start", request.remote_addr)):
        abort(429, description="too many new sessions from this address; wait a minute")
    if ext is not None:
        with st.db.session_scope() as s:
            known = s.scalar(
                select(Participant.id).where(
                    Participant.study_id == st.study_id, Participant.external_id == ext
                )
            )
        if known is not None:
            # Crowd-platform ids are unguessable; the same person resumes their schedule.
            _start_session(known)
            return redirect(url_for(".trial"), code=303)
    ua = (request.headers.get("User-Agent") or "")[:300]
    # Balance counts come from outside the write transaction: they are a heuristic, and a
    # scan of the schedule table must not hold up everybody's answers (see PairCounts).
    counts = st.pair_counts.snapshot(lambda: _read_pair_counts(st))
    code = secrets.token_hex(5).upper()
    now = utcnow()

    def create(conn) -> int:
        pid = conn.execute(_part.insert(), {
            "study_id": st.study_id, "external_id": ext, "n_trials": 0, "next_index": 0,
            "completion_code": code, "user_agent": ua, "excluded": False,
            "created_at": now, "last_seen_at": now,
        }).inserted_primary_key[0]
        plans = plan_trials(
            st.compare_pairs,
            st.validation_pairs,
            counts,
            n_trials=st.spec.trials_per_participant,
            n_validation=st.spec.validation,
            repeat_swapped=st.spec.repeat_swapped,
            rng=random.Random(f"{st.spec.seed}:{pid}"),
        )
        conn.execute(_trial.insert(), [
            {"participant_id": pid, "index": t.index, "pair_id": t.pair_id,
             "left_item_id": t.left_item, "right_item_id": t.right_item, "kind": t.kind,
             "repeat_of": t.repeat_of}
            for t in plans
        ])
        conn.execute(update(_part).where(_part.c.id == pid).values(n_trials=len(plans)))
        return pid, plans

    try:
        pid, plans = st.db.run_write(create)
    except TimeoutError:
        abort(503, description="the server is overloaded; try again in a moment")
    st.pair_counts.add(t.pair_id for t in plans if t.kind != "repeat")
    _start_session(pid)
    return redirect(url_for(".trial"), code=303)


@participant_bp.get("/trial")
def trial():
    st = state()
    p = _load_participant()
    if p is None:
        return redirect(url_for(".index"))
    if p.next_index >= p.n_trials:
        return redirect(url_for(".done"))
    with st.db.session_scope() as s:
        t = s.scalar(select(Trial).where(Trial.participant_id == p.id, Trial.index == p.next_index))
    if t is None:  # schedule rows are written with the participant; absence is corruption
        abort(404, description="no such trial")
    shown = session.get("shown")
    if not (isinstance(shown, list) and len(shown) == 2 and shown[0] == t.index):
        session["shown"] = [t.index, _now_ms()]
    return render_template(
        "trial.html",
        spec=st.spec,
        index=t.index,
        n_trials=p.n_trials,
        left=st.items[t.left_item_id] | {"id": t.left_item_id},
        right=st.items[t.right_item_id] | {"id": t.right_item_id},
    )


def _resubmission(sql: AnswerStatements, conn, pid: int, index: int, choice: str) -> None:
    """An answer for an already answered trial: same choice -> accepted, else 409.

    Runs in the database writer thread too: no Flask context, ``sql`` passed in.
    """
    found = sql.prev_choice.first(conn, {"pid": pid, "idx": index})
    prev = None if found is None else found[0]
    if prev is None:
        abort(409, description="this is not your current trial; reload the page")
    if prev != choice:
        abort(409, description="this trial was already answered differently; reload the page")


# The answer path is the hot one: Core statements compiled once per app and run on the
# driver cursor on SQLite (db.Prepared): one read of participant + current trial + its
# validation answer, one insert, one update.
_CURRENT = (
    select(
        _part.c.study_id, _part.c.next_index, _part.c.n_trials, _part.c.excluded,
        _trial.c.id, _trial.c.pair_id, _trial.c.left_item_id,
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
    # The guard on next_index makes a lost race (another answer got in first) update nothing.
    .where(_part.c.id == bindparam("pid"), _part.c.next_index == bindparam("idx"))
    .values(
        next_index=bindparam("new_next"),
        last_seen_at=bindparam("now", type_=DateTime),
        excluded=bindparam("new_excluded"),
        exclusion_reason=case(
            (and_(bindparam("fail", type_=Boolean), _part.c.exclusion_reason.is_(None)),
             bindparam("reason", type_=String)),
            else_=_part.c.exclusion_reason,
        ),
        finished_at=case((bindparam("done", type_=Boolean), bindparam("now", type_=DateTime)),
                         else_=_part.c.finished_at),
    )
)
_VOTE_COLUMNS = [
    "participant_id", "trial_index", "trial_id", "pair_id", "left_item_id", "right_item_id",
    "choice", "chosen_item_id", "correct", "rt_ms_client", "rt_ms_server", "viewport_w",
    "viewport_h", "created_at",
]


class AnswerStatements:
    """The answer path's statements, prepared once for the app's engine."""

    def __init__(self, engine):
        self.current = Prepared(_CURRENT, engine)
        self.prev_choice = Prepared(_PREV_CHOICE, engine)
        self.insert_vote = Prepared(_vote.insert(), engine, columns=_VOTE_COLUMNS)
        self.advance = Prepared(_ADVANCE, engine)


@participant_bp.post("/trial")
def answer():
    st = state()
    pid = _session_participant_id()
    if pid is None:
        abort(400, description="no study session (cookies off or expired); start again at /")
    index = _int_field("trial", 0, MAX_TRIAL_INDEX, required=True)
    choice = request.form.get("choice")
    if choice not in ("left", "right"):
        abort(400, description="field 'choice' must be 'left' or 'right'")
    rt_client = _int_field("rt_ms", 0, MAX_RT_MS, required=False)
    vw = _int_field("vw", 1, MAX_VIEWPORT, required=False)
    vh = _int_field("vh", 1, MAX_VIEWPORT, required=False)
    if not st.vote_limiter.allow(("vote", pid)):
        abort(429, description="answers are coming too fast; wait a moment")
    shown = session.get("shown")
    rt_server = None
    if isinstance(shown, list) and len(shown) == 2 and shown[0] == index:
        if isinstance(shown[1], int):
            rt_server = max(0, min(MAX_RT_MS, _now_ms() - shown[1]))
    now = utcnow()

    sql = st.answer_sql

    def store(conn) -> bool:
        """Check and store the answer; True when it was the last trial. Runs in the writer."""
        row = sql.current.first(conn, {"pid": pid})
        if row is None or row[0] != st.study_id:
            abort(400, description="unknown participant; start again at /")
        (_, next_index, n_trials, excluded, trial_id, pair_id, left, right, kind,
         correct_item) = row
        if index < next_index:
            _resubmission(sql, conn, pid, index, choice)
            return next_index >= n_trials
        if index != next_index or index >= n_trials or trial_id is None:
            abort(409, description="this is not your current trial; reload the page")
        chosen = left if choice == "left" else right
        correct = (chosen == correct_item) if kind == "validation" else None
        sql.insert_vote.rowcount(conn, {
            "participant_id": pid, "trial_index": index, "trial_id": trial_id,
            "pair_id": pair_id, "left_item_id": left, "right_item_id": right,
            "choice": choice, "chosen_item_id": chosen, "correct": correct,
            "rt_ms_client": rt_client, "rt_ms_server": rt_server, "viewport_w": vw,
            "viewport_h": vh, "created_at": now,
        })
        finished = index + 1 >= n_trials
        fail = correct is False
        advanced = sql.advance.rowcount(conn, {
            "pid": pid, "idx": index, "new_next": index + 1, "now": now,
            "new_excluded": bool(excluded or fail), "fail": fail,
            "reason": f"failed validation trial {index + 1}", "done": finished,
        })
        if advanced != 1:  # someone else answered first; undo ours, judge as a retry
            raise IntegrityError("next_index moved", None, Exception("race"))
        return finished

    try:
        finished = st.db.run_write(store)
    except TimeoutError:
        abort(503, description="the server is overloaded; your answer was not stored, send it again")
    except IntegrityError:
        # A concurrent identical request won (the unique constraint, or the guarded update
        # on databases without BEGIN IMMEDIATE, e.g. PostgreSQL): judge this one as a retry.
        with st.db.engine.connect() as conn:
            _resubmission(sql, conn, pid, index, choice)
            row = sql.current.first(conn, {"pid": pid})
            finished = row is not None and row[1] >= row[2]
    if "shown" in session:
        session.pop("shown")
    return redirect(url_for(".done" if finished else ".trial"), code=303)


@participant_bp.get("/done")
def done():
    st = state()
    p = _load_participant()
    if p is None:
        return redirect(url_for(".index"))
    if p.next_index < p.n_trials:
        return redirect(url_for(".trial"))
    url = current_app.config.get("COMPLETION_URL") or st.spec.completion_url
    if url:
        url = url.replace("{code}", p.completion_code)
    return render_template("done.html", spec=st.spec, code=p.completion_code, redirect_url=url)


@participant_bp.get("/image/<int:item_id>")
def image(item_id: int):
    item = state().items.get(item_id)
    if item is None:
        abort(404, description="no such image")
    resp = send_file(item["path"], mimetype="image/png", max_age=86400, conditional=True)
    return resp


# ----------------------------------------------------------------------------- admin


def live_ranking(votes: pd.DataFrame) -> tuple[list[dict], str]:
    """Per-method wins, win rate and, when ``survey_app.analysis`` is importable, the
    Bradley–Terry log-strength (point fit only; the admin page must stay fast).

    Only included (not excluded), non-validation answers count.
    """
    if len(votes) == 0:
        return [], "no answers yet"
    v = votes[~votes["excluded"] & ~votes["is_validation"]]
    if len(v) == 0:
        return [], "no included answers yet"
    stats: dict[str, list[int]] = {}
    for lm, rm, choice in zip(v["left_method"], v["right_method"], v["choice"], strict=True):
        win, lose = (lm, rm) if choice == "left" else (rm, lm)
        stats.setdefault(win, [0, 0])[0] += 1
        stats.setdefault(win, [0, 0])[1] += 1
        stats.setdefault(lose, [0, 0])[1] += 1
    scores: dict[str, float] = {}
    kind = "win rate (survey_app.analysis not available)"
    try:
        from . import analysis

        tidy = analysis.tidy_votes(v[["participant", "left", "right", "choice"]])
        names = sorted(set(tidy["left_unit"]) | set(tidy["right_unit"]))
        pdata = analysis.pair_data(tidy, names)
        wins = analysis.win_matrix(len(names), pdata.data, pdata.weights)
        scores = dict(zip(names, map(float, analysis.fit_bt_counts(wins)), strict=True))
        kind = "Bradley–Terry log-strength (point fit, no intervals; use `hrbench survey fit`)"
    except ImportError:
        pass
    except Exception:  # the admin page must not fail because of the analysis module
        log.exception("Bradley–Terry fit failed; showing win rates only")
        kind = "win rate (Bradley–Terry fit failed; see the server log)"
    rows = [
        {"method": m, "wins": w, "votes": n, "win_rate": w / n if n else 0.0,
         "score": scores.get(m)}
        for m, (w, n) in stats.items()
    ]
    rows.sort(key=lambda r: (-(r["score"] if r["score"] is not None else r["win_rate"]),
                             r["method"]))
    return rows, kind



def _admin_marker(token: str) -> str:
    # The session stores a digest, not the token, and a new token logs everybody out.
    return hashlib.sha256(b"hrbench-admin:" + token.encode()).hexdigest()[:32]


def admin_authorised() -> bool:
    token = state().admin_token
    if not token:
        return False
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer " and constant_time_equal(auth[7:].strip(), token):
        return True
    return constant_time_equal(session.get("admin") if isinstance(session.get("admin"), str)
                               else None, _admin_marker(token))


def _unauthorised(message: str = "admin token required"):
    body = render_template("admin_login.html", message=message)
    return Response(body, status=401, headers={"WWW-Authenticate": 'Bearer realm="hrbench"'})


def _require_admin():
    if request.endpoint in ("admin.login", "admin.login_post"):
        return None
    if not admin_authorised():
        return _unauthorised()
    return None


admin_bp.before_request(_require_admin)
export_bp.before_request(_require_admin)


@admin_bp.get("/login")
def login():
    return _unauthorised("enter the admin token")


@admin_bp.post("/login")
def login_post():
    st = state()
    if not st.login_limiter.allow(("login", request.remote_addr)):
        abort(429, description="too many attempts; wait a minute")
    token = request.form.get("token", "")
    if st.admin_token and constant_time_equal(token.strip(), st.admin_token):
        session["admin"] = _admin_marker(st.admin_token)
        return redirect(url_for(".dashboard"), code=303)
    return _unauthorised("wrong token")


@admin_bp.post("/logout")
def logout():
    session.pop("admin", None)
    return redirect(url_for(".login"), code=303)


@admin_bp.get("/")
def dashboard():
    from .export import export_votes

    st = state()
    with st.db.session_scope() as s:
        people = s.execute(
            select(
                func.count(),
                func.count(Participant.finished_at),
                func.sum(case((Participant.excluded.is_(True), 1), else_=0)),
            ).where(Participant.study_id == st.study_id)
        ).one()
        excluded = s.execute(
            select(Participant.id, Participant.external_id, Participant.exclusion_reason,
                   Participant.created_at)
            .where(Participant.study_id == st.study_id, Participant.excluded.is_(True))
            .order_by(Participant.id)
        ).all()
        per_pair = s.execute(
            select(Pair.id, Pair.kind, Pair.item_a_id, Pair.item_b_id, func.count(Vote.id))
            .outerjoin(Vote, and_(Vote.pair_id == Pair.id))
            .where(Pair.study_id == st.study_id)
            .group_by(Pair.id)
            .order_by(func.count(Vote.id), Pair.id)
        ).all()
    votes = export_votes(st.db, study_uid=st.spec.uid)
    ranking, ranking_kind = live_ranking(votes)
    pairs = [
        {
            "id": pid,
            "kind": kind,
            "image": st.items[a]["image"],
            "a": st.items[a]["method"],
            "b": st.items[b]["method"],
            "votes": n,
        }
        for pid, kind, a, b, n in per_pair
    ]
    return render_template(
        "admin.html",
        spec=st.spec,
        n_people=people[0],
        n_finished=people[1],
        n_excluded=people[2] or 0,
        n_votes=len(votes),
        n_validation=int(votes["is_validation"].sum()) if len(votes) else 0,
        excluded=excluded,
        pairs=pairs,
        ranking=ranking,
        ranking_kind=ranking_kind,
    )


@export_bp.get("/votes.csv")
def votes_csv():
    from .export import export_votes

    st = state()
    df = export_votes(st.db, study_uid=st.spec.uid)
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return Response(
        buf.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="votes-{st.spec.uid}.csv"'},
    )


# ----------------------------------------------------------------------------- app wiring


def _error_page(exc: HTTPException):
    if exc.code == 401:
        return _unauthorised()
    body = render_template("error.html", code=exc.code, name=exc.name,
                           description=exc.description)
    return Response(body, status=exc.code)


def _before_request():
    if request.method == "POST":
        check_csrf()


_SECURITY_HEADERS_LOWER = [(k.lower(), k, v) for k, v in SECURITY_HEADERS.items()]


def _after_request(resp: Response) -> Response:
    # One pass over the response's headers instead of a scan per setdefault() call.
    present = {k.lower() for k in resp.headers.keys()}
    resp.headers.extend([(k, v) for low, k, v in _SECURITY_HEADERS_LOWER if low not in present])
    if current_app.config.get("SESSION_COOKIE_SECURE"):  # served over HTTPS
        resp.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if resp.mimetype == "text/html" or resp.mimetype == "text/csv":
        resp.headers["Cache-Control"] = "no-store"
    return resp


def init_app(app: Flask) -> None:
    st: SurveyState = app.extensions["survey"]
    st.answer_sql = AnswerStatements(st.db.engine)
    st.pair_counts = PairCounts(float(app.config["PAIR_COUNTS_TTL_S"]))
    app.register_blueprint(participant_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(export_bp)
    app.before_request(_before_request)
    app.after_request(_after_request)
    app.register_error_handler(HTTPException, _error_page)
    app.jinja_env.globals["csrf_token"] = csrf_token
