"""CSRF tokens, rate limits, security headers and secrets, written here (no extra package).

- CSRF: one random token per session (kept in the signed session cookie); every POST must
  send it back as form field ``csrf_token`` (or header ``X-CSRF-Token``) and is refused
  with 400 otherwise. Compared in constant time.
- Rate limits: in-process token buckets (waitress serves from one process with threads, so
  one dict seen by all threads is the whole state). Keys are a participant id for answers
  and the client address for starting a study.
- Secrets: the session key and the admin token come from the environment
  (``HRBENCH_SECRET_KEY``, ``HRBENCH_ADMIN_TOKEN``) or from files in the study's
  ``instance/`` folder; there is no default in code. ``serve`` creates the files (mode
  0600) on first start.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
import threading
import time
from pathlib import Path

from flask import Flask, abort, request, session
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer

log = logging.getLogger(__name__)

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SECRET_ENV = "HRBENCH_SECRET_KEY"
ADMIN_ENV = "HRBENCH_ADMIN_TOKEN"
SECRET_FILE = "secret_key"
ADMIN_FILE = "admin_token"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; script-src 'self'; style-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # The completion code must not leak to a crowd platform through the Referer header.
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


_ORIGIN_RE = re.compile(r"^https?://(\*\.)?[A-Za-z0-9.\-]+(:[0-9]{1,5})?$")


def security_headers(frame_ancestors: list[str]) -> dict[str, str]:
    """:data:`SECURITY_HEADERS`, with ``frame-ancestors`` opened to the given origins.

    Without origins the site cannot be framed at all. With them (an MTurk ExternalQuestion
    shows the study in an iframe) the CSP lists them and ``X-Frame-Options``, which cannot
    name an origin, is left out. ``ValueError`` names an origin that is not ``scheme://host``.
    """
    if not frame_ancestors:
        return dict(SECURITY_HEADERS)
    for origin in frame_ancestors:
        if not _ORIGIN_RE.fullmatch(origin):
            raise ValueError(f"--allow-framing: {origin!r} is not an origin like "
                             "https://www.mturk.com")
    out = {k: v for k, v in SECURITY_HEADERS.items() if k != "X-Frame-Options"}
    out["Content-Security-Policy"] = out["Content-Security-Policy"].replace(
        "frame-ancestors 'none'", "frame-ancestors " + " ".join(frame_ancestors))
    return out


def allow_form_target(csp: str, origin: str) -> str:
    """``csp`` with ``form-action`` also allowing ``origin`` (the MTurk submit form)."""
    return csp.replace("form-action 'self'", f"form-action 'self' {origin}")


def csrf_token() -> str:
    """The session's CSRF token, created on first use (templates call this)."""
    tok = session.get("csrf")
    if not isinstance(tok, str) or len(tok) < 32:
        tok = secrets.token_urlsafe(32)
        session["csrf"] = tok
    return tok


def check_csrf() -> None:
    """Abort with 400 unless the request carries the session's CSRF token."""
    expected = session.get("csrf")
    sent = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if (
        not isinstance(expected, str)
        or not sent
        or not hmac.compare_digest(sent.encode("utf-8", "replace"), expected.encode())
    ):
        abort(400, description="missing or invalid CSRF token; reload the page and try again")


class RateLimiter:
    """Token buckets: ``burst`` requests at once, refilled at ``rate`` per second per key.

    ``rate <= 0`` disables the limiter. Old keys are dropped when the table grows past
    ``max_keys`` so a flood of new keys cannot exhaust memory.
    """

    def __init__(self, burst: float, rate: float, max_keys: int = 100_000):
        self.burst, self.rate, self.max_keys = float(burst), float(rate), max_keys
        self._buckets: dict[object, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: object, now: float | None = None) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            ok = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if ok else tokens, now)
            if len(self._buckets) > self.max_keys:
                full_after = self.burst / self.rate
                self._buckets = {
                    k: v for k, v in self._buckets.items() if now - v[1] < full_after
                }
            return ok


def constant_time_equal(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


def _read_secret(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def load_secret(instance: Path, env: str, file: str) -> str | None:
    """The secret from the environment, else from ``instance/file``, else None."""
    return os.environ.get(env) or _read_secret(instance / file)


def ensure_secret(instance: Path, env: str, file: str, what: str) -> tuple[str, bool]:
    """Like :func:`load_secret`, but create ``instance/file`` (0600) when there is none.

    Returns ``(secret, created)``.
    """
    found = load_secret(instance, env, file)
    if found:
        return found, False
    instance.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    path = instance / file
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race; use its secret
        return _read_secret(path) or value, False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(value + "\n")
    log.warning("generated a new %s in %s (set %s to override)", what, path, env)
    return value, True


class CachedSerializerSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the signing serializer built once per key set.

    Why: Flask builds a new ``URLSafeTimedSerializer`` twice per request (open and save),
    about 5 % of the server's CPU per answer. The serializer holds only the keys and
    settings, so reusing it changes nothing in what is signed or accepted; a changed
    ``SECRET_KEY`` or ``SECRET_KEY_FALLBACKS`` builds a new one.
    """

    def __init__(self) -> None:
        self._cached: tuple[tuple, URLSafeTimedSerializer | None] | None = None
        self._lock = threading.Lock()

    def get_cookie_secure(self, app: Flask) -> bool:
        # Configured, or automatic: a request that came over HTTPS gets a secure cookie.
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        fallbacks = app.config.get("SECRET_KEY_FALLBACKS") or ()
        key = (app.secret_key, tuple(fallbacks))
        cached = self._cached
        if cached is not None and cached[0] == key:
            return cached[1]
        with self._lock:
            ser = super().get_signing_serializer(app)
            self._cached = (key, ser)
        return ser
