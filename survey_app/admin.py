"""The admin pages (progress, exclusions, pair coverage, a live ranking) and the vote
download, behind the admin token (``Authorization: Bearer TOKEN`` or a login form that
stores a digest of the token in the signed session).
"""

from __future__ import annotations

import hashlib
import io
import logging
from datetime import datetime

import pandas as pd
from flask import Blueprint, Response, abort, redirect, render_template, request, session, url_for
from sqlalchemy import and_, case, func, select

from .models import Pair, Participant, Screening, Vote
from .security import constant_time_equal
from .state import state

log = logging.getLogger(__name__)

admin_bp = Blueprint("admin", __name__, url_prefix="/admin")
export_bp = Blueprint("export", __name__, url_prefix="/admin/export")


def live_ranking(votes: pd.DataFrame) -> tuple[list[dict], str]:
    """Per-method wins, win rate and the Bradley–Terry log-strength (``bench.ranking``;
    point fit only: the admin page must stay fast).

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
    try:
        from bench.ranking import bt_point_scores

        scores = bt_point_scores(v[["participant", "left", "right", "choice"]])
        kind = "Bradley–Terry log-strength (point fit, no intervals; use `hrbench survey fit`)"
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


def unauthorised(message: str = "admin token required"):
    body = render_template("admin_login.html", message=message)
    return Response(body, status=401, headers={"WWW-Authenticate": 'Bearer realm="hrbench"'})


def _require_admin():
    if request.endpoint in ("admin.login", "admin.login_post"):
        return None
    if not admin_authorised():
        return unauthorised()
    return None


admin_bp.before_request(_require_admin)
export_bp.before_request(_require_admin)


@admin_bp.get("/login")
def login():
    return unauthorised("enter the admin token")


@admin_bp.post("/login")
def login_post():
    st = state()
    token = request.form.get("token", "")
    # The right token always gets in: the limit (per client address, the real one behind
    # --proxies) only slows down guessing, so nobody else's wrong guesses lock the admin out.
    if st.admin_token and constant_time_equal(token.strip(), st.admin_token):
        session["admin"] = _admin_marker(st.admin_token)
        return redirect(url_for(".dashboard"), code=303)
    if not st.login_limiter.allow(("login", request.remote_addr)):
        abort(429, description="too many attempts; wait a minute")
    return unauthorised("wrong token")


@admin_bp.post("/logout")
def logout():
    session.pop("admin", None)
    return redirect(url_for(".login"), code=303)


def _when(iso: str | None) -> datetime | None:
    """An export time stamp (ISO text, or missing) as a datetime for the page."""
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ") if isinstance(iso, str) else None


@admin_bp.get("/")
def dashboard():
    from .export import export_participants, export_votes

    st = state()
    with st.db.session_scope() as s:
        n_screened = s.scalar(
            select(func.count()).select_from(Screening).where(Screening.study_id == st.study_id)
        )
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
    roster = export_participants(st.db, study_uid=st.spec.uid)
    participants = [
        {"id": r.participant, "external_id": r.external_id, "platform": r.platform,
         "platform_study": r.platform_study_id, "platform_session": r.platform_session_id,
         "outcome": r.outcome, "code": r.completion_code, "excluded": r.excluded,
         "reason": r.exclusion_reason, "n_answers": r.answers, "flags": r.flags,
         "started": _when(r.started), "finished": _when(r.finished)}
        for r in roster.itertuples()
    ]
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
        participants=participants,
        n_screened=n_screened,
        pairs=pairs,
        ranking=ranking,
        ranking_kind=ranking_kind,
    )


@export_bp.get("/participants.csv")
def participants_csv():
    from .export import export_participants

    st = state()
    return _csv(export_participants(st.db, study_uid=st.spec.uid), "participants")


@export_bp.get("/votes.csv")
def votes_csv():
    from .export import export_votes

    st = state()
    return _csv(export_votes(st.db, study_uid=st.spec.uid), "votes")


def _csv(df: pd.DataFrame, name: str) -> Response:
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return Response(
        buf.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition":
                 f'attachment; filename="{name}-{state().spec.uid}.csv"'},
    )

