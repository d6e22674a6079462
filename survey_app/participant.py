"""The participant flow (plain HTML forms; JavaScript only adds keyboard shortcuts, the
response time measured in the page and the viewport size)::

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

import random
import re
import secrets
import time

from flask import (
    Blueprint,
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
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from .assign import plan_trials
from .models import Participant, Trial, utcnow
from .queries import AnswerStatements, pair_counts
from .security import csrf_token
from .state import state

_part, _trial = Participant.__table__, Trial.__table__

participant_bp = Blueprint("participant", __name__)

EXTERNAL_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
EXTERNAL_ID_PARAMS = ("pid", "PROLIFIC_PID", "workerId", "participant")
MAX_TRIAL_INDEX = 100_000
MAX_RT_MS = 24 * 3600 * 1000
MAX_VIEWPORT = 100_000


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
    window = float(current_app.config["ACTIVE_WINDOW_S"])
    counts = st.pair_counts.snapshot(lambda: pair_counts(st.db, st.study_id, window))
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

