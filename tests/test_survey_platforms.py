"""Crowd platforms and deployment: ids as given, per-outcome codes, return links, MTurk,
framing, trusted proxies, secure cookies, the admin login limit."""

from __future__ import annotations

import io
import re

import pandas as pd
import pytest
from survey_helpers import ADMIN_TOKEN, csrf_of, make_fake_run, rendered, start, study_app

from survey_app.export import COLUMNS, PARTICIPANT_COLUMNS
from survey_app.study import create_study

PROLIFIC = {"PROLIFIC_PID": "5f0c1a2b3c4d5e6f7a8b9c0d", "STUDY_ID": "60aa11bb22cc33dd44ee55ff",
            "SESSION_ID": "sess_0123456789"}
MTURK = {"workerId": "A1B2C3D4E5F6G7", "assignmentId": "3XYZASSIGN", "hitId": "3HITID",
         "turkSubmitTo": "https://workersandbox.mturk.com"}


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("platforms")
    run = make_fake_run(root / "run")
    create_study(run, root / "study", resolution=128, trials_per_participant=4, validation=1,
                 progress=False)
    return root / "study"


def _answer_all(client, honest: bool = True) -> None:
    """Answer every trial; validation/practice items are known to the app, not the page."""
    from survey_helpers import item_ids

    kinds = {str(k): v["kind"] for k, v in client.application.extensions["survey"].items.items()}
    while (r := client.get("/trial")).status_code == 200:
        idx = int(re.search(r'name="trial" value="([0-9]+)"', r.text).group(1))
        left, right = item_ids(client, r.text)
        choice = "left"
        if {kinds[left], kinds[right]} == {"reference", "broken"}:
            good = "left" if kinds[left] == "reference" else "right"
            choice = good if honest else ("right" if good == "left" else "left")
        post = client.post("/trial", data={"csrf_token": csrf_of(client), "trial": idx,
                                           "choice": choice})
        assert post.status_code == 303


def _done_context(app, client) -> dict:
    with rendered(app) as seen:
        assert client.get("/done").status_code == 200
    return seen[-1][1]


def test_prolific_ids_fixed_codes_and_return_link(study_dir, tmp_path):
    url = "https://app.prolific.com/submissions/complete?cc={code}"
    app = study_app(study_dir, tmp_path / "v.db", COMPLETION_URL=url, COMPLETION_CODES={
        "completed": "C1OK2345", "failed_screening": "CFAIL999", "returned": "CRET0000"})
    query = "&".join(f"{k}={v}" for k, v in PROLIFIC.items())
    honest = app.test_client()
    with rendered(app) as seen:
        assert honest.get("/?" + query).status_code == 200
    assert seen[0][1]["platform_fields"] == list(PROLIFIC.items())
    assert start(honest, **PROLIFIC).status_code == 303
    _answer_all(honest, honest=True)
    ctx = _done_context(app, honest)
    assert (ctx["outcome"], ctx["code"]) == ("completed", "C1OK2345")
    assert ctx["redirect_url"] == url.replace("{code}", "C1OK2345")

    careless = app.test_client()
    assert start(careless, PROLIFIC_PID="aaaaaaaaaaaaaaaaaaaaaaaa").status_code == 303
    _answer_all(careless, honest=False)
    ctx = _done_context(app, careless)
    assert (ctx["outcome"], ctx["code"]) == ("failed_screening", "CFAIL999")
    assert "cc=CFAIL999" in ctx["redirect_url"]

    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    df = pd.read_csv(io.StringIO(honest.get("/admin/export/votes.csv", headers=auth).text),
                     dtype=str)
    assert list(df.columns) == COLUMNS
    mine = df[df["external_id"] == PROLIFIC["PROLIFIC_PID"]]
    assert len(mine) == 4
    assert set(mine["platform"]) == {"prolific"}
    assert set(mine["platform_study_id"]) == {PROLIFIC["STUDY_ID"]}
    assert set(mine["platform_session_id"]) == {PROLIFIC["SESSION_ID"]}
    assert set(mine["outcome"]) == {"completed"} and set(mine["completion_code"]) == {"C1OK2345"}
    theirs = df[df["external_id"] == "aaaaaaaaaaaaaaaaaaaaaaaa"]
    assert set(theirs["outcome"]) == {"failed_screening"} and set(theirs["excluded"]) == {"True"}
    with rendered(app) as seen:
        assert honest.get("/admin/", headers=auth).status_code == 200
    people = {p["external_id"]: p for p in seen[0][1]["participants"]}
    assert people[PROLIFIC["PROLIFIC_PID"]]["code"] == "C1OK2345"
    assert people[PROLIFIC["PROLIFIC_PID"]]["platform_study"] == PROLIFIC["STUDY_ID"]
    assert people["aaaaaaaaaaaaaaaaaaaaaaaa"]["outcome"] == "failed_screening"


def test_bad_codes_and_return_urls_are_user_errors(study_dir, tmp_path):
    from bench.errors import UserError

    with pytest.raises(UserError, match="--code-failed-screening"):
        study_app(study_dir, tmp_path / "a.db", COMPLETION_CODES={"failed_screening": "a b"})
    with pytest.raises(UserError, match="--completion-url"):
        study_app(study_dir, tmp_path / "b.db", COMPLETION_URL="javascript:alert(1)")


def test_per_person_codes_differ_by_person_and_outcome(study_dir, tmp_path):
    app = study_app(study_dir, tmp_path / "v.db")
    codes = []
    for honest in (True, True, False):
        client = app.test_client()
        assert start(client).status_code == 303
        _answer_all(client, honest=honest)
        ctx = _done_context(app, client)
        assert ctx["outcome"] == ("completed" if honest else "failed_screening")
        codes.append(ctx["code"])
    assert len(set(codes)) == 3 and all(re.fullmatch(r"[0-9A-F]{10}", c) for c in codes)


def test_withdraw_gives_the_returned_outcome_and_keeps_answers(study_dir, tmp_path):
    app = study_app(study_dir, tmp_path / "v.db", COMPLETION_CODES={"returned": "RET1"})
    client = app.test_client()
    assert start(client, pid="quitter").status_code == 303
    assert client.post("/trial", data={"csrf_token": csrf_of(client), "trial": 0,
                                       "choice": "left"}).status_code == 303
    r = client.post("/withdraw", data={"csrf_token": csrf_of(client)})
    assert r.status_code == 303 and r.headers["Location"].endswith("/done")
    ctx = _done_context(app, client)
    assert (ctx["outcome"], ctx["code"]) == ("returned", "RET1")
    assert client.get("/trial").headers["Location"].endswith("/done")
    answer = client.post("/trial", data={"csrf_token": csrf_of(client), "trial": 1,
                                         "choice": "left"})
    assert answer.status_code == 409
    # Not in the votes (the practice answer is no vote), but in the participants table.
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    people = pd.read_csv(io.StringIO(
        client.get("/admin/export/participants.csv", headers=auth).text), dtype=str)
    assert list(people.columns) == PARTICIPANT_COLUMNS
    row = people.set_index("external_id").loc["quitter"]
    assert (row["outcome"], row["completion_code"], row["answers"]) == ("returned", "RET1", "0")
    assert pd.notna(row["finished"])


def test_mturk_ids_preview_and_submit_form(study_dir, tmp_path):
    app = study_app(study_dir, tmp_path / "v.db")
    preview = app.test_client()
    with rendered(app) as seen:
        page = preview.get("/?workerId=A1&assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=H")
    assert page.status_code == 200 and seen[0][1]["preview"] is True
    assert start(preview, workerId="A1", assignmentId="ASSIGNMENT_ID_NOT_AVAILABLE",
                 hitId="H").status_code == 400
    bad = app.test_client().get("/?workerId=A2&assignmentId=X&turkSubmitTo=https://evil.example")
    assert bad.status_code == 400 and "turkSubmitTo" in bad.text

    client = app.test_client()
    assert start(client, **MTURK).status_code == 303
    _answer_all(client)
    ctx = _done_context(app, client)
    assert ctx["mturk"] == {"action": "https://workersandbox.mturk.com/mturk/externalSubmit",
                            "assignmentId": MTURK["assignmentId"]}
    csp = client.get("/done").headers["Content-Security-Policy"]
    assert "form-action 'self' https://workersandbox.mturk.com;" in csp  # the form may post
    assert "form-action 'self';" in app.test_client().get("/").headers["Content-Security-Policy"]
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    df = pd.read_csv(io.StringIO(client.get("/admin/export/votes.csv", headers=auth).text))
    row = df.iloc[0]
    assert (row["platform"], row["external_id"], row["platform_study_id"],
            row["platform_session_id"]) == ("mturk", MTURK["workerId"], MTURK["hitId"],
                                            MTURK["assignmentId"])


def test_framing_only_with_the_flag(study_dir, tmp_path):
    plain = study_app(study_dir, tmp_path / "a.db").test_client().get("/")
    assert plain.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in plain.headers["Content-Security-Policy"]
    framed_app = study_app(study_dir, tmp_path / "b.db", FRAME_ANCESTORS=[
        "https://www.mturk.com", "https://workersandbox.mturk.com"])
    framed = framed_app.test_client().get("/", base_url="https://survey.example")
    csp = framed.headers["Content-Security-Policy"]
    assert "frame-ancestors https://www.mturk.com https://workersandbox.mturk.com" in csp
    assert "X-Frame-Options" not in framed.headers
    cookie = framed.headers["Set-Cookie"]
    assert "SameSite=None" in cookie and "Secure" in cookie  # sent inside a third-party frame
    from bench.errors import UserError

    with pytest.raises(UserError, match="allow-framing"):
        study_app(study_dir, tmp_path / "c.db", FRAME_ANCESTORS=["https://x.example; script-src *"])


def test_proxies_give_each_client_its_own_rate_limit(study_dir, tmp_path):
    def starts(app, addresses):
        out = []
        for addr in addresses:
            client = app.test_client()
            client.get("/")
            out.append(client.post("/start", data={"csrf_token": csrf_of(client),
                                                   "consent": "yes"},
                                   headers={"X-Forwarded-For": addr}).status_code)
        return out

    one_each = (1, 0.0001)  # one start per address, no refill during the test
    behind = study_app(study_dir, tmp_path / "a.db", PROXIES=1, START_RATE=one_each)
    assert starts(behind, ["203.0.113.1", "203.0.113.2", "203.0.113.1"]) == [303, 303, 429]
    # Without --proxies the header is not trusted: everybody is the proxy's address.
    direct = study_app(study_dir, tmp_path / "b.db", START_RATE=one_each)
    assert starts(direct, ["203.0.113.1", "203.0.113.2"]) == [303, 429]


def test_secure_cookies_automatic_on_https_and_forced_by_flag(study_dir, tmp_path):
    app = study_app(study_dir, tmp_path / "a.db", PROXIES=1)
    plain = app.test_client().get("/")
    assert "Secure" not in plain.headers["Set-Cookie"]
    assert "Strict-Transport-Security" not in plain.headers
    proxied = app.test_client().get("/", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in proxied.headers["Set-Cookie"]
    assert "Strict-Transport-Security" in proxied.headers
    forced = study_app(study_dir, tmp_path / "b.db", SESSION_COOKIE_SECURE=True)
    assert "Secure" in forced.test_client().get("/").headers["Set-Cookie"]


def test_admin_login_cannot_be_locked_by_others(study_dir, tmp_path):
    app = study_app(study_dir, tmp_path / "a.db", PROXIES=1)

    def login(client, token, addr):
        client.get("/admin/login", headers={"X-Forwarded-For": addr})
        return client.post("/admin/login", data={"csrf_token": csrf_of(client), "token": token},
                           headers={"X-Forwarded-For": addr}).status_code

    attacker = app.test_client()
    codes = [login(attacker, "guess", "198.51.100.7") for _ in range(12)]
    assert codes[0] == 401 and codes[-1] == 429  # guessing is slowed down ...
    assert login(app.test_client(), ADMIN_TOKEN, "192.0.2.10") == 303  # ... nobody else is
    # The right token gets in even from the limited address, and the header always works.
    assert login(attacker, ADMIN_TOKEN, "198.51.100.7") == 303
    bearer = app.test_client().get("/admin/", headers={
        "Authorization": f"Bearer {ADMIN_TOKEN}", "X-Forwarded-For": "198.51.100.7"})
    assert bearer.status_code == 200
