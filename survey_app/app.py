"""The application factory of the voting site: ``create_app(config)``.

Configuration (a mapping passed to :func:`create_app`; the environment fills what is absent):

============================  ==================================================================
``STUDY_DIR``                 the study folder (``HRBENCH_STUDY``); required
``DATABASE_URL``              SQLAlchemy URL (``HRBENCH_DATABASE_URL``); default
                              ``sqlite:///STUDY/instance/survey.db``
``SECRET_KEY``                session signing key (``HRBENCH_SECRET_KEY`` or
                              ``STUDY/instance/secret_key``); no default: refused without one
``ADMIN_TOKEN``               admin bearer token (``HRBENCH_ADMIN_TOKEN`` or
                              ``STUDY/instance/admin_token``); without one the admin pages are
                              closed (always 401)
``SQLITE_SYNCHRONOUS``        ``FULL`` (default: durable across power loss) or ``NORMAL``
``VOTE_RATE``                 ``(burst, per_second)`` answers per participant; default (30, 3)
``START_RATE``                ``(burst, per_second)`` new participants per client address;
                              default (30, 0.5); ``per_second <= 0`` disables
``ACTIVE_WINDOW_S``           a started, unfinished schedule counts towards pair balance for
                              this long after the participant's last answer (default 3600)
``PAIR_COUNTS_TTL_S``         how long the pair-balance counts read in full from the database
                              are reused, plus the schedules planned since (on PostgreSQL
                              those of every process, read under the study lock); default 2 s
``START_LOCK_TIMEOUT_S``      PostgreSQL: how long a new session waits for the study lock
                              (held by another process's new session) before a 503; default 10
``COMPLETION_URL``            overrides the study's redirect URL (``{code}`` is replaced)
``COMPLETION_CODES``          ``{outcome: code}`` fixed per study (Prolific); outcomes
                              ``completed``, ``failed_screening``, ``returned``; a missing
                              one is random per person
``PROXIES``                   number of trusted reverse proxies in front (default 0): the
                              client address (rate limits) and scheme come from their
                              ``X-Forwarded-For``/``-Proto`` headers
``FRAME_ANCESTORS``           origins allowed to frame the site (e.g. MTurk's); default none:
                              ``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``
``SESSION_COOKIE_SECURE``     True: cookies only over HTTPS; otherwise they are marked secure
                              whenever the request came over HTTPS (behind a proxy: with
                              ``PROXIES`` set)
============================  ==================================================================
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from flask import Flask, Response, current_app, render_template, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from bench.errors import UserError

from .admin import admin_bp, export_bp, unauthorised
from .assign import plan_trials
from .db import Database, default_db_url, open_database, shown_url
from .images import equal_size_plan, token_key
from .participant import participant_bp
from .platforms import RETURN_URL_RE, check_codes
from .queries import AnswerStatements, PairCounts, StartStatements
from .security import (
    ADMIN_ENV,
    ADMIN_FILE,
    SECRET_ENV,
    SECRET_FILE,
    CachedSerializerSessionInterface,
    RateLimiter,
    check_csrf,
    csrf_token,
    load_secret,
    security_headers,
)
from .state import SurveyState
from .study import StudySpec, load_study, sync_study

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "SQLITE_SYNCHRONOUS": "FULL",
    "VOTE_RATE": (30, 3.0),
    "START_RATE": (30, 0.5),
    "ACTIVE_WINDOW_S": 3600,
    "PAIR_COUNTS_TTL_S": 2.0,
    "START_LOCK_TIMEOUT_S": 10.0,
    "DB_POOL_SIZE": 16,
    "MAX_CONTENT_LENGTH": 64 * 1024,
    "MAX_FORM_PARTS": 50,
    "SESSION_COOKIE_NAME": "hrbench_survey",
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_SECURE": False,
    "PERMANENT_SESSION_LIFETIME": timedelta(days=7),
    # Re-signing an unchanged cookie on every answer costs CPU and gains nothing here.
    "SESSION_REFRESH_EACH_REQUEST": False,
}


def _item_table(db: Database, spec: StudySpec, study_id: int) -> dict[int, dict]:
    """Item id -> display facts. Paths come from study.json, never from a request."""
    from sqlalchemy import select

    from .models import Item

    by_key = {it["key"]: it for it in spec.items}
    out: dict[int, dict] = {}
    with db.session_scope() as s:
        for row in s.scalars(select(Item).where(Item.study_id == study_id)):
            it = by_key.get(row.key)
            if it is None:
                continue
            out[row.id] = {
                "path": spec.image_path(it["file"]),
                "width": row.width,
                "height": row.height,
                "method": row.method,
                "image": row.image,
                "kind": row.kind,
                "hole": dict(zip("xywh", it["hole"], strict=True)) if it.get("hole") else None,
            }
    return out


def _pair_refs(db: Database, study_id: int) -> tuple[list, list]:
    """The study's compare and validation pairs as ``assign.PairRef`` lists (by id)."""
    from sqlalchemy import select

    from .assign import PairRef
    from .models import Item, Pair

    with db.session_scope() as s:
        rows = s.execute(
            select(Pair.id, Pair.item_a_id, Pair.item_b_id, Pair.kind, Item.image)
            .join(Item, Item.id == Pair.item_a_id)
            .where(Pair.study_id == study_id)
            .order_by(Pair.id)
        ).all()
    compare = [PairRef(i, a, b, g) for i, a, b, k, g in rows if k == "compare"]
    validation = [PairRef(i, a, b, g) for i, a, b, k, g in rows if k == "validation"]
    return compare, validation


def _error_page(exc: HTTPException):
    if exc.code == 401:
        return unauthorised()
    body = render_template("error.html", code=exc.code, name=exc.name,
                           description=exc.description)
    return Response(body, status=exc.code)


def _before_request():
    if request.method == "POST":
        check_csrf()


def _after_request(resp: Response) -> Response:
    # One pass over the response's headers instead of a scan per setdefault() call.
    present = {k.lower() for k in resp.headers.keys()}
    headers = current_app.extensions["survey_headers"]
    resp.headers.extend([(k, v) for low, k, v in headers if low not in present])
    if request.is_secure:
        resp.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if resp.mimetype == "text/html" or resp.mimetype == "text/csv":
        resp.headers["Cache-Control"] = "no-store"
    return resp


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the survey app for one study (see the module docstring for ``config``)."""
    cfg = dict(config or {})
    study_dir = cfg.get("STUDY_DIR") or os.environ.get("HRBENCH_STUDY")
    if not study_dir:
        raise UserError("STUDY_DIR: no study folder given; pass it or set HRBENCH_STUDY")
    spec = load_study(study_dir)
    instance = spec.folder / "instance"
    app = Flask(__name__, instance_path=str(instance))
    app.session_interface = CachedSerializerSessionInterface()
    app.config.from_mapping(DEFAULTS)
    app.config.update(cfg)
    app.config["STUDY_DIR"] = str(spec.folder)
    try:
        lock_wait = float(app.config["START_LOCK_TIMEOUT_S"])
    except (TypeError, ValueError):
        lock_wait = float("nan")
    if not 0 < lock_wait <= 86400:
        raise UserError(f"START_LOCK_TIMEOUT_S: {app.config['START_LOCK_TIMEOUT_S']!r}; use "
                        "seconds, more than 0 and at most 86400")
    proxies = int(app.config.get("PROXIES") or 0)
    if proxies < 0:
        raise UserError("--proxies: must be 0 or more")
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)
    frame_ancestors = list(app.config.get("FRAME_ANCESTORS") or ())
    try:
        headers = security_headers(frame_ancestors)
        codes = check_codes(app.config.get("COMPLETION_CODES") or {})
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return_url = app.config.get("COMPLETION_URL")
    if return_url and not RETURN_URL_RE.match(return_url):
        raise UserError("--completion-url: must be an http(s):// URL without spaces or quotes")
    app.extensions["survey_headers"] = [(k.lower(), k, v) for k, v in headers.items()]
    if frame_ancestors:
        # A framed page is a third-party context: browsers send its cookie only with
        # SameSite=None, which they accept only on secure cookies.
        app.config.update(SESSION_COOKIE_SAMESITE="None", SESSION_COOKIE_SECURE=True)

    secret = app.config.get("SECRET_KEY") or load_secret(instance, SECRET_ENV, SECRET_FILE)
    if not secret:
        raise UserError(
            f"{instance / SECRET_FILE}: no session secret; set {SECRET_ENV} or run "
            "`hrbench survey serve` once, which creates it"
        )
    app.config["SECRET_KEY"] = secret
    admin_token = app.config.get("ADMIN_TOKEN") or load_secret(instance, ADMIN_ENV, ADMIN_FILE)
    if not admin_token:
        log.warning("no admin token (%s or %s); admin pages are closed", ADMIN_ENV,
                    instance / ADMIN_FILE)

    url = (
        app.config.get("DATABASE_URL")
        or os.environ.get("HRBENCH_DATABASE_URL")
        or default_db_url(spec.folder)
    )
    app.config["DATABASE_URL"] = url
    db_flag = "" if url == default_db_url(spec.folder) else " --db URL"
    db = open_database(
        url,
        study_uid=spec.uid,
        synchronous=str(app.config["SQLITE_SYNCHRONOUS"]),
        pool_size=int(app.config["DB_POOL_SIZE"]),
        upgrade_hint=f"hrbench survey db upgrade {spec.folder}{db_flag}",
    )
    study_id = sync_study(db, spec)
    start_sql = None
    if db.engine.dialect.name == "postgresql":
        start_sql = StartStatements(db.engine, lock_wait)
        try:
            with db.engine.connect() as conn:
                start_sql.check(conn)
        except ValueError as exc:
            db.dispose()
            raise UserError(f"--db {shown_url(url)}: {exc}") from None

    compare, validation = _pair_refs(db, study_id)
    items = _item_table(db, spec, study_id)
    by_photo: dict[str, list] = {}
    for item in items.values():
        by_photo.setdefault(item["image"], []).append(item["path"])
    try:
        images = equal_size_plan(by_photo)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    # The schedule's length is fixed by the study's pairs: plan one to announce it.
    n_scored = len(plan_trials(compare, validation, {}, n_trials=spec.trials_per_participant,
                               n_validation=spec.validation, repeat_swapped=spec.repeat_swapped,
                               rng=random.Random(0)))
    app.extensions["survey"] = SurveyState(
        spec=spec,
        db=db,
        study_id=study_id,
        items=items,
        admin_token=admin_token,
        vote_limiter=RateLimiter(*app.config["VOTE_RATE"]),
        start_limiter=RateLimiter(*app.config["START_RATE"]),
        login_limiter=RateLimiter(10, 0.2),
        compare_pairs=compare,
        validation_pairs=validation,
        answer_sql=AnswerStatements(db.engine),
        start_sql=start_sql,
        pair_counts=PairCounts(float(app.config["PAIR_COUNTS_TTL_S"])),
        token_key=token_key(secret),
        images={item_id: images[item["path"]] for item_id, item in items.items()},
        codes=codes,
        n_scored=n_scored,
        has_practice=spec.practice and bool(validation),
    )
    app.register_blueprint(participant_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(export_bp)
    app.before_request(_before_request)
    app.after_request(_after_request)
    app.register_error_handler(HTTPException, _error_page)
    app.jinja_env.globals["csrf_token"] = csrf_token
    return app


__all__ = ["create_app", "SurveyState"]
