"""The participant flow (plain HTML forms; JavaScript only adds keyboard shortcuts, the
response time measured in the page and the viewport size)::

    GET  /         instructions and consent        POST /start   create the schedule
    GET  /trial    the current trial               POST /trial   answer it (303 to the next)
    GET  /practice feedback after the practice trial
    POST /withdraw stop taking part (outcome "returned")
    GET  /done     outcome and its code (+ the platform's return link or MTurk form)
    GET  /i/TOKEN  a display image by its opaque per-participant token (see images.py)

Identity: a session resumes only from its own signed cookie. A platform id that has started
the study before gets "you have already taken part", never that person's trials or code;
``UNIQUE(study_id, external_id)`` makes concurrent starts with one id create one row.

An answer is committed to the database before the response that leads to the next trial is
sent, so everything a participant saw acknowledged is stored. Answers for any trial other
than the current one are refused (409), except an identical resubmission of an answered
trial, which is accepted without a second row (browser retry, double click, back button).
"""

from __future__ import annotations

import logging
import random
import re
import time

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from .assign import plan_trials
from .db import Ask
from .images import BadToken, make_token, read_token
from .models import DISPLAY_MODES, Participant, Screening, Trial, Vote, utcnow
from .platforms import PlatformIds, completion_link, mturk_form, outcome_code, read_ids
from .queries import (
    TRIAL_PAGE,
    UNCOUNTED_KINDS,
    count_params,
    lock_study,
    pair_counts,
)
from .security import allow_form_target, csrf_token
from .state import state

_part, _trial, _screening = Participant.__table__, Trial.__table__, Screening.__table__

participant_bp = Blueprint("participant", __name__)
log = logging.getLogger(__name__)

MAX_TRIAL_INDEX = 100_000
MAX_RT_MS = 24 * 3600 * 1000
MAX_VIEWPORT = 100_000
MAX_FLIPS = 1_000_000
# Every image gets the same caching headers and no validators (ETag/Last-Modified would
# be derived from the file and could tell items apart).
IMAGE_CACHE = "private, max-age=86400"
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's error when lock_timeout ran out


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


def _float_field(name: str, lo: float, hi: float) -> float | None:
    """An optional decimal form field in ``[lo, hi]``; 400 naming the field when bad."""
    raw = (request.form.get(name) or "").strip()
    if not raw:
        return None
    if len(raw) > 24 or not re.fullmatch(r"[0-9]+(\.[0-9]+)?", raw):
        abort(400, description=f"field {name!r} must be a decimal number")
    value = float(raw)
    if not lo <= value <= hi:
        abort(400, description=f"field {name!r} out of range [{lo}, {hi}]")
    return value


def _ids(values) -> PlatformIds:
    try:
        return read_ids(values)
    except ValueError as exc:
        abort(400, description=str(exc))


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


def _own_session(ids: PlatformIds) -> Participant | None:
    """The session's participant, unless the request names another platform id: then this
    browser is someone else's now (a shared computer) and must neither continue that
    person's schedule nor see their code."""
    p = _load_participant()
    if p is not None and ids.external_id is not None and ids.external_id != p.external_id:
        return None
    return p


def _now_ms() -> int:
    return int(time.time() * 1000)


def _taken(external_id: str) -> bool:
    st = state()
    with st.db.session_scope() as s:
        return s.scalar(select(Participant.id).where(
            Participant.study_id == st.study_id, Participant.external_id == external_id
        )) is not None


def _already_taken_part() -> Response:
    # The same page whoever owns the id: it never resumes a session or shows a code.
    body = render_template(
        "error.html", code=409, name="Already taken part",
        description="You have already taken part in this study (this platform id has started "
        "it before). Each person can take part once; if this is your id, please continue in "
        "the browser where you started.",
    )
    return Response(body, status=409)


def _completion_template() -> str | None:
    return current_app.config.get("COMPLETION_URL") or state().spec.completion_url


# ----------------------------------------------------------------------------- participant


@participant_bp.get("/healthz")
def healthz() -> Response:
    return Response("ok\n", mimetype="text/plain")


@participant_bp.get("/")
def index():
    st = state()
    ids = _ids(request.args)
    resume = _own_session(ids) is not None
    if not resume and ids.external_id and _taken(ids.external_id):
        return _already_taken_part()
    return render_template(
        "index.html",
        spec=st.spec,
        platform_fields=ids.fields(),
        preview=ids.preview,
        resume=resume,
        n_trials=st.n_scored,
        practice=st.has_practice,
    )


def _start_session(pid: int) -> None:
    token = csrf_token()
    session.clear()
    session["csrf"] = token
    session["p"] = pid
    session["s"] = state().spec.uid
    session.permanent = True


def _screen_out(ids: PlatformIds, vw: int, vh: int, dpr: float | None, ua: str):
    """Record a refused start (window too small) and show the polite page."""
    st = state()
    st.db.run_write(lambda conn: conn.execute(_screening.insert(), {
        "study_id": st.study_id, "external_id": ids.external_id, "reason": "small screen",
        "viewport_w": vw, "viewport_h": vh, "dpr": dpr, "user_agent": ua, "created_at": utcnow(),
    }))
    fixed = st.codes.get("failed_screening")
    min_w, min_h = st.spec.min_viewport
    return render_template(
        "small_screen.html", spec=st.spec, vw=vw, vh=vh, min_width=min_w, min_height=min_h,
        return_url=completion_link(_completion_template(), fixed) if fixed else None,
    )


@participant_bp.post("/start")
def start():
    st = state()
    if request.form.get("consent") != "yes":
        abort(400, description="please tick the consent box to take part")
    ids = _ids(request.form)
    if ids.preview:
        abort(400, description="this is the MTurk preview; accept the HIT first, then start")
    vw = _int_field("vw", 1, MAX_VIEWPORT, required=False)
    vh = _int_field("vh", 1, MAX_VIEWPORT, required=False)
    dpr = _float_field("dpr", 0.25, 10)
    if _own_session(ids) is not None:
        return redirect(url_for(".trial"), code=303)
    if not st.start_limiter.allow(("start", request.remote_addr)):
        abort(429, description="too many new sessions from this address; wait a minute")
    if ids.external_id is not None and _taken(ids.external_id):
        return _already_taken_part()
    ua = (request.headers.get("User-Agent") or "")[:300]
    min_w, min_h = st.spec.min_viewport
    if not st.spec.allow_phone and vw and vh and (vw < min_w or vh < min_h):
        return _screen_out(ids, vw, vh, dpr, ua)
    window = float(current_app.config["ACTIVE_WINDOW_S"])
    code = outcome_code(st.codes, "completed")
    now = utcnow()

    row = {
        "study_id": st.study_id, "external_id": ids.external_id, "n_trials": 0,
        "next_index": 0, "completion_code": code, "user_agent": ua, "excluded": False,
        "validation_failures": 0, "created_at": now, "last_seen_at": now,
        "platform": ids.platform, "platform_study_id": ids.study,
        "platform_session_id": ids.session, "submit_to": ids.submit_to,
        "viewport_w": vw, "viewport_h": vh, "dpr": dpr,
    }

    def plan(pid: int, counts: dict[int, int]) -> list:
        return plan_trials(
            st.compare_pairs,
            st.validation_pairs,
            counts,
            n_trials=st.spec.trials_per_participant,
            n_validation=st.spec.validation,
            repeat_swapped=st.spec.repeat_swapped,
            rng=random.Random(f"{st.spec.seed}:{pid}"),
            practice=st.spec.practice,
        )

    def trial_rows(pid: int, plans: list) -> list[dict]:
        return [{"participant_id": pid, "index": t.index, "pair_id": t.pair_id,
                 "left_item_id": t.left_item, "right_item_id": t.right_item, "kind": t.kind,
                 "repeat_of": t.repeat_of} for t in plans]

    def create(conn) -> tuple[int, list]:
        # Each new schedule is planned from counts that include every schedule before it.
        if st.db.is_sqlite:
            # One process, and the group-commit writer runs one job at a time: the cached
            # counts plus the schedules added below are exact, with a database scan only
            # when the cache is stale (on this connection, which sees the batch's writes).
            plan_counts = st.pair_counts.snapshot(lambda: pair_counts(conn, st.study_id, window))
        else:  # several processes: fresh counts under the study's row lock
            lock_study(conn, st.study_id)
            plan_counts = pair_counts(conn, st.study_id, window)
        # UNIQUE(study_id, external_id): of concurrent starts with one id, one row wins.
        pid = conn.execute(_part.insert(), row).inserted_primary_key[0]
        plans = plan(pid, plan_counts)
        conn.execute(_trial.insert(), trial_rows(pid, plans))
        conn.execute(update(_part).where(_part.c.id == pid).values(n_trials=len(plans)))
        if st.db.is_sqlite:  # (on PostgreSQL a job may run twice: no effects outside conn)
            st.pair_counts.add(t.pair_id for t in plans if t.kind not in UNCOUNTED_KINDS)
        return pid, plans

    def create_locked(conn):
        """PostgreSQL, as a staged job (``survey_app.db.Ask``) run alone: the study lock
        is held from the first round trip to the commit, three round trips in all.

        0. only when the cached counts are stale: before the lock, the newest person's id
           and the full count up to it (see ``StartStatements``);
        1. lock the study, count the schedules of the people after the cached counts
           (``PairCounts.base``), take the new person's id from its sequence;
        2. insert the person and the trials planned from those counts and that id.

        Ids are handed out only under the lock and each holder commits before releasing
        it, so every id below the new one is settled: the counts up to it are complete.
        (That needs the id sequence's default ``CACHE 1``.)
        """
        sql = st.start_sql
        # In the first round trip: it bounds every wait of the transaction for a lock.
        timeout = ((sql.lock_timeout, sql.lock_timeout_params),)
        counts, upto = st.pair_counts.base()
        full = upto == 0
        if full:
            _, ((upto,),) = yield Ask.rows(*timeout, (sql.newest, {"sid": st.study_id}))
            (rows,) = yield Ask.rows((sql.counts, count_params(st.study_id, window, 0, upto)))
            counts, timeout = dict(rows), ()
        *_, new, ((pid,),) = yield Ask.rows(
            *timeout,
            (sql.lock, {"sid": st.study_id}),
            (sql.counts, count_params(st.study_id, window, upto)),
            (sql.next_id, {}),
        )
        for pair, n in new:
            counts[pair] = counts.get(pair, 0) + n
        st.pair_counts.update(counts, pid - 1, full=full)
        plans = plan(pid, counts)
        # UNIQUE(study_id, external_id): of concurrent starts with one id, one row wins.
        yield Ask.rowcounts((sql.insert_participant, {**row, "id": pid, "n_trials": len(plans)}),
                            (sql.insert_trials, sql.trial_columns(trial_rows(pid, plans))))
        return pid, plans

    try:
        # Alone: it takes the study's row lock (see Database.run_write).
        pid, plans = st.db.run_write(create_locked if st.start_sql else create, alone=True)
    except TimeoutError:
        abort(503, description="the server is overloaded; try again in a moment")
    except IntegrityError:
        return _already_taken_part()  # a concurrent start with the same id won
    except OperationalError as exc:
        orig = exc.orig  # psycopg names the error's code sqlstate, psycopg2 pgcode
        if (getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)) != LOCK_NOT_AVAILABLE:
            raise
        log.error("a new session waited %s s for a lock (START_LOCK_TIMEOUT_S), most likely "
                  "the study's: another server process holds it and does not finish",
                  st.start_sql.lock_timeout_s)
        abort(503, description="new sessions are held up on the server; try again in a moment")
    _start_session(pid)
    return redirect(url_for(".trial"), code=303)


def _shown(pid: int, index: int, side: str, item_id: int) -> dict:
    """What the page may know of one side: an opaque URL and the pixel size."""
    item = state().items[item_id]
    token = make_token(state().token_key, pid, index, side, item_id)
    return {"url": url_for(".image", token=token), "width": item["width"],
            "height": item["height"]}


@participant_bp.get("/trial")
def trial():
    st = state()
    p = _load_participant()
    if p is None:
        return redirect(url_for(".index"))
    if p.outcome is not None or p.next_index >= p.n_trials:
        return redirect(url_for(".done"))
    with st.db.engine.connect() as conn:
        rows = conn.execute(TRIAL_PAGE, {"pid": p.id, "cur": p.next_index,
                                         "nxt": p.next_index + 1}).all()
    by_index = {r.index: r for r in rows}
    t = by_index.get(p.next_index)
    if t is None:  # schedule rows are written with the participant; absence is corruption
        abort(404, description="no such trial")
    shown = session.get("shown")
    if not (isinstance(shown, list) and len(shown) == 2 and shown[0] == t.index):
        session["shown"] = [t.index, _now_ms()]
    practice_first = int(0 in by_index and by_index[0].kind == "practice")
    nxt = by_index.get(p.next_index + 1)
    preload = [] if nxt is None else [
        _shown(p.id, nxt.index, "left", nxt.left_item_id)["url"],
        _shown(p.id, nxt.index, "right", nxt.right_item_id)["url"],
    ]
    hole = st.items[t.left_item_id]["hole"]  # the same for every item of one photo
    left = _shown(p.id, t.index, "left", t.left_item_id)
    if hole is None:  # studies made before the hole was recorded: centre of the image
        crop = {"cx": left["width"] // 2, "cy": left["height"] // 2}
    else:
        crop = {"cx": hole["x"] + hole["w"] // 2, "cy": hole["y"] + hole["h"] // 2}
    return render_template(
        "trial.html",
        spec=st.spec,
        index=t.index,
        n_trials=p.n_trials - practice_first,
        number=None if t.kind == "practice" else t.index + 1 - practice_first,
        left=left,
        right=_shown(p.id, t.index, "right", t.right_item_id),
        hole=hole,
        crop=crop,
        preload=preload,
        practice=t.kind == "practice",
        allow_phone=st.spec.allow_phone,
    )


def _resubmission(found: tuple | None, choice: str) -> None:
    """An answer for an already answered trial (``found``: the stored choice's row, or
    None): same choice -> accepted, else 409. Runs in the database writer thread too."""
    prev = None if found is None else found[0]
    if prev is None:
        abort(409, description="this is not your current trial; reload the page")
    if prev != choice:
        abort(409, description="this trial was already answered differently; reload the page")


def _after_retry(index: int, finished: bool, has_practice: bool) -> str:
    """The page after an accepted resubmission: the practice feedback again for the practice
    trial (trial 0), so a double click does not skip it; else the next trial or the end.
    Runs in the database writer thread too: no Flask context."""
    if index == 0 and has_practice:
        return "practice"
    return "done" if finished else "trial"


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
    dpr = _float_field("dpr", 0.25, 10)
    mode = request.form.get("mode") or None
    if mode is not None and mode not in DISPLAY_MODES:
        abort(400, description=f"field 'mode' must be one of {', '.join(DISPLAY_MODES)}")
    zoom = _float_field("zoom", 0.05, 64)
    flips = _int_field("flips", 0, MAX_FLIPS, required=False)
    hidden_ms = _int_field("hidden_ms", 0, MAX_RT_MS, required=False)
    if not st.vote_limiter.allow(("vote", pid)):
        abort(429, description="answers are coming too fast; wait a moment")
    shown = session.get("shown")
    rt_server = None
    if isinstance(shown, list) and len(shown) == 2 and shown[0] == index:
        if isinstance(shown[1], int):
            rt_server = max(0, min(MAX_RT_MS, _now_ms() - shown[1]))
    now = utcnow()
    tolerance = st.spec.validation_tolerance
    fail_code = outcome_code(st.codes, "failed_screening")

    sql = st.answer_sql

    def store(conn):
        """Check and store the answer; the page to go to next, or None when another
        answer got in first. Runs in the writer, as a staged job (``survey_app.db.Ask``):
        in a PostgreSQL group commit the batch's answers send their statements together,
        a round trip per step for all of them, the last one with the COMMIT. Running it
        again after it was stored gives the same page (it is then a resubmission)."""
        row = yield Ask.first(sql.current, {"pid": pid})
        if row is None or row[0] != st.study_id:
            abort(400, description="unknown participant; start again at /")
        (_, next_index, n_trials, excluded, failures, outcome, trial_id, pair_id, left, right,
         kind, correct_item) = row
        if outcome == "returned":
            abort(409, description="you have withdrawn from this study; see /done")
        if index < next_index:
            _resubmission((yield Ask.first(sql.prev_choice, {"pid": pid, "idx": index})), choice)
            return _after_retry(index, next_index >= n_trials, st.has_practice)
        if index != next_index or index >= n_trials or trial_id is None:
            abort(409, description="this is not your current trial; reload the page")
        chosen = left if choice == "left" else right
        correct = (chosen == correct_item) if kind in ("validation", "practice") else None
        fail = kind == "validation" and correct is False
        failures += fail
        new_excluded = bool(excluded) or failures > tolerance
        finished = index + 1 >= n_trials
        # Failing screening changes the code at the end, never anything before it: the
        # pages must not tell which trial was a validation question.
        new_outcome = ("failed_screening" if new_excluded else "completed") if finished else None
        counts = yield sql.record({
            "participant_id": pid, "trial_index": index, "trial_id": trial_id,
            "pair_id": pair_id, "left_item_id": left, "right_item_id": right,
            "choice": choice, "chosen_item_id": chosen, "correct": correct,
            "rt_ms_client": rt_client, "rt_ms_server": rt_server, "viewport_w": vw,
            "viewport_h": vh, "created_at": now, "dpr": dpr, "display_mode": mode,
            "zoom_max": zoom, "flicker_toggles": flips, "hidden_ms": hidden_ms,
        }, {
            "pid": pid, "idx": index, "new_next": index + 1, "now": now,
            "fail_n": int(fail), "new_excluded": new_excluded,
            "newly_excluded": new_excluded and not excluded,
            "reason": f"failed validation: {failures} wrong, {tolerance} allowed",
            "done": finished, "outcome": new_outcome,
            "set_code": new_outcome == "failed_screening", "code": fail_code,
        })
        if not sql.stored(counts):  # another answer got in first: judge ours as a retry
            if sql.one_statement:
                return None  # nothing of ours was written
            raise IntegrityError("next_index moved", None, Exception("race"))  # undo our vote
        if kind == "practice":
            return "practice"
        return "done" if finished else "trial"

    try:
        page = st.db.run_write(store, lock_order=pid)
    except TimeoutError:
        abort(503, description="the server is overloaded; send your answer again (it is stored "
                               "once, however often it arrives)")
    except IntegrityError:
        page = None
    if page is None:
        # A concurrent request won (the unique constraint, or the guarded update on databases
        # without BEGIN IMMEDIATE, e.g. PostgreSQL): an identical answer, then this one is a
        # retry; or a withdrawal.
        with st.db.engine.connect() as conn:
            found = sql.prev_choice.first(conn, {"pid": pid, "idx": index})
            row = sql.current.first(conn, {"pid": pid})
        if found is None and row is not None and row[5] == "returned":
            abort(409, description="you have withdrawn from this study; see /done")
        _resubmission(found, choice)
        page = _after_retry(index, row is not None and row[1] >= row[2], st.has_practice)
    if "shown" in session:
        session.pop("shown")
    return redirect(url_for("." + page), code=303)


@participant_bp.get("/practice")
def practice():
    """Feedback on the practice answer (shown once it is stored)."""
    st = state()
    p = _load_participant()
    if p is None:
        return redirect(url_for(".index"))
    with st.db.session_scope() as s:
        found = s.execute(
            select(Vote.choice, Vote.correct)
            .join(Trial, Trial.id == Vote.trial_id)
            .where(Vote.participant_id == p.id, Vote.trial_index == 0, Trial.kind == "practice")
        ).first()
    if found is None:
        return redirect(url_for(".trial"))
    choice, correct = found
    other = "right" if choice == "left" else "left"
    return render_template(
        "practice_feedback.html", spec=st.spec, correct=bool(correct), choice=choice,
        expected=choice if correct else other,
        next_url=url_for(".done" if p.next_index >= p.n_trials else ".trial"),
    )


@participant_bp.post("/withdraw")
def withdraw():
    """Stop taking part: the outcome becomes ``returned``; answers so far are kept."""
    st = state()
    p = _load_participant()
    if p is None:
        abort(400, description="no study session (cookies off or expired)")
    sql = st.answer_sql
    params = {"pid": p.id, "code": outcome_code(st.codes, "returned"), "now": utcnow()}

    def returned(conn):
        """A staged job whose write, like an answer's, goes in its second step: in a
        PostgreSQL group commit all the batch's updates of people then go out together,
        in the order of their ids (see ``Database.run_write``'s ``lock_order``)."""
        yield Ask.first(sql.current, {"pid": p.id})
        yield Ask.rowcounts((sql.withdraw, params), last=True)

    st.db.run_write(returned, lock_order=p.id)
    return redirect(url_for(".done"), code=303)


@participant_bp.get("/done")
def done():
    st = state()
    p = _load_participant()
    if p is None:
        return redirect(url_for(".index"))
    if p.outcome is None and p.next_index < p.n_trials:
        return redirect(url_for(".trial"))
    outcome = p.outcome or ("failed_screening" if p.excluded else "completed")
    ids = PlatformIds(p.platform, p.external_id, p.platform_study_id, p.platform_session_id,
                      p.submit_to)
    mturk = mturk_form(ids)
    resp = make_response(render_template(
        "done.html", spec=st.spec, code=p.completion_code, outcome=outcome,
        redirect_url=completion_link(_completion_template(), p.completion_code), mturk=mturk,
    ))
    if mturk:  # the page posts the assignment to MTurk (only its own hosts get here)
        csp = dict((k, v) for _, k, v in current_app.extensions["survey_headers"])
        resp.headers["Content-Security-Policy"] = allow_form_target(
            csp["Content-Security-Policy"], ids.submit_to)
    return resp


@participant_bp.get("/i/<token>")
def image(token: str):
    """A display image by its opaque token; only for the participant it was issued to."""
    st = state()
    pid = _session_participant_id()
    if pid is None:
        abort(404, description="no such image")
    try:
        _, _, item_id = read_token(st.token_key, pid, token)
    except BadToken:
        abort(404, description="no such image")
    png = st.images.get(item_id)
    if png is None:
        abort(404, description="no such image")
    return Response(png.chunks(), mimetype="image/png", direct_passthrough=True,
                    headers={"Content-Length": str(png.length), "Cache-Control": IMAGE_CACHE})
