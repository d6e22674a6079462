"""Malformed, oversized and random requests never produce a 5xx (hypothesis)."""

from __future__ import annotations

import re
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from survey_helpers import make_fake_run

from survey_app import create_app
from survey_app.study import create_study

TOKEN = "robust-admin-token-0123456789abcdef"
ENDPOINTS = ["/", "/start", "/trial", "/done", "/healthz", "/admin/", "/admin/login",
             "/admin/logout", "/admin/export/votes.csv", "/admin/export/participants.csv",
             "/image/1", "/i/", "/i/" + "A" * 34, "/practice", "/withdraw",
             "/static/survey.js", "/static/survey.css"]
FIELDS = ["csrf_token", "consent", "pid", "PROLIFIC_PID", "STUDY_ID", "SESSION_ID",
          "workerId", "assignmentId", "hitId", "turkSubmitTo", "trial", "choice", "rt_ms",
          "vw", "vh", "dpr", "mode", "zoom", "flips", "hidden_ms", "token"]
TRAVERSAL = ["/image/../study.json", "/image/..%2f..%2fstudy.json", "/static/../study.json",
             "/static/..%2f..%2fstudy.json", "/static/%2e%2e/%2e%2e/etc/passwd",
             "/images/0000.png", "/instance/secret_key", "/study.json",
             "/static/../../instance/secret_key", "/image/%2e%2e", "/../../etc/passwd",
             "/static//etc/passwd", "/image/1/../../study.json"]


@pytest.fixture(scope="module")
def app(tmp_path_factory, module_db_url):
    """One app per database kind (SQLite, PostgreSQL): every test here runs on both."""
    root = tmp_path_factory.mktemp("robust")
    run = make_fake_run(root / "run", images=("alpha", "beta"))
    create_study(run, root / "study", resolution=128, trials_per_participant=6, validation=1,
                 progress=False)
    app = create_app({"STUDY_DIR": str(root / "study"), "SECRET_KEY": "r" * 40,
                      "ADMIN_TOKEN": TOKEN, "VOTE_RATE": (1000, 1000.0),
                      "START_RATE": (1000, 1000.0), "DATABASE_URL": module_db_url})
    yield app
    app.extensions["survey"].db.dispose()


@pytest.fixture(scope="module")
def started(app):
    """A client with a participant session and its CSRF token."""
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text).group(1)
    assert client.post("/start", data={"csrf_token": token, "consent": "yes"}).status_code == 303
    return client, token


text = st.text(max_size=80)
# What an HTTP header can carry at all (no control characters, latin-1).
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255,
                                             exclude_characters="\x7f"), max_size=80)
path_segment = st.text(alphabet="abcz019._-~%/:;@!$&'()*+,=é \\", max_size=30)
values = st.one_of(text, st.integers(-10**20, 10**20).map(str), st.just(""),
                   st.text(min_size=1000, max_size=5000))
forms = st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=10)), values,
                        max_size=8)

_REQUESTS = dict(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]),
    base=st.sampled_from(ENDPOINTS),
    suffix=st.one_of(st.just(""), path_segment),
    query=st.dictionaries(st.sampled_from(["pid", "PROLIFIC_PID", "STUDY_ID", "workerId",
                                           "assignmentId", "turkSubmitTo", "token", "x"]),
                          text, max_size=3),
    form=forms,
    use_session=st.booleans(),
    good_csrf=st.booleans(),
    auth=st.one_of(st.none(), header_text, header_text.map("Bearer ".__add__),
                   st.just(f"Bearer {TOKEN}")),
    content_type=st.sampled_from([None, "application/x-www-form-urlencoded",
                                  "multipart/form-data", "application/json", "text/plain",
                                  "multipart/form-data; boundary=x"]),
    raw=st.one_of(st.none(), st.binary(max_size=2000)),
)
_SLOW_CHECKS = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]


def _one_request(app, started, method, base, suffix, query, form, use_session, good_csrf,
                 auth, content_type, raw):
    client, token = started if use_session else (app.test_client(), None)
    path = urllib.parse.quote(base + suffix, safe="/%")
    if query:
        path += "?" + urllib.parse.urlencode(query)
    headers = {}
    if auth is not None:
        headers["Authorization"] = auth
    if good_csrf and token:
        form = {**form, "csrf_token": token}
    kwargs = {"headers": headers}
    if raw is not None and method in ("POST", "PUT", "PATCH"):
        kwargs["data"] = raw
        if content_type:
            headers["Content-Type"] = content_type
    elif method in ("POST", "PUT", "PATCH"):
        kwargs["data"] = form
    with client.open(path, method=method, **kwargs) as resp:
        assert resp.status_code < 500, (method, path, resp.status_code)


@settings(max_examples=60, deadline=None, suppress_health_check=_SLOW_CHECKS)
@given(**_REQUESTS)
def test_random_requests_never_5xx(app, started, **kw):
    _one_request(app, started, **kw)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=_SLOW_CHECKS)
@given(**_REQUESTS)
def test_many_random_requests_never_5xx(app, started, **kw):
    _one_request(app, started, **kw)


def test_oversized_body_is_refused(app, started):
    client, token = started
    big = {"csrf_token": token, "trial": "0", "choice": "left", "pad": "x" * (200 * 1024)}
    assert client.post("/trial", data=big).status_code == 413


@pytest.mark.parametrize("path", TRAVERSAL)
def test_path_traversal_is_404(app, path):
    # Werkzeug may first redirect (308) a '//' path to its merged form; that must 404 too.
    assert app.test_client().get(path, follow_redirects=True).status_code == 404


def test_admin_without_token_is_401(app):
    client = app.test_client()
    for path in ("/admin/", "/admin/export/votes.csv"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer x"}).status_code == 401
        assert client.get(path, headers={"Authorization": TOKEN}).status_code == 401
        assert client.get(path + f"?token={TOKEN}").status_code == 401  # no tokens in URLs
    assert client.post("/admin/logout").status_code == 400  # CSRF before anything else


def test_post_without_csrf_is_rejected_everywhere(app, started):
    client, _ = started
    for path in ("/start", "/trial", "/admin/login", "/admin/logout"):
        assert client.post(path, data={"consent": "yes", "trial": "0",
                                       "choice": "left"}).status_code == 400
