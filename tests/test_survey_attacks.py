"""Attacks tried against the real server (``hrbench survey serve`` under waitress), where the
Flask test client would hide what the server in front of the app does."""

from __future__ import annotations

import re

import pytest
import requests
from survey_helpers import ServerProcess, make_fake_run

from survey_app.study import create_study

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("attacks")
    run = make_fake_run(root / "run")
    create_study(run, root / "study", resolution=128, trials_per_participant=4, validation=1,
                 progress=False)
    return root / "study"


def _wrong_login(url: str, forwarded_for: str) -> int:
    s = requests.Session()
    page = s.get(url + "/admin/login", headers={"X-Forwarded-For": forwarded_for})
    token = _CSRF.search(page.text).group(1)
    return s.post(url + "/admin/login", data={"csrf_token": token, "token": "guess"},
                  headers={"X-Forwarded-For": forwarded_for}, allow_redirects=False).status_code


@pytest.mark.parametrize("proxies", [1, 0])
def test_forwarded_headers_reach_the_app_only_with_proxies(study_dir, tmp_path, proxies):
    # Waitress strips X-Forwarded-* by default: --proxies once had no effect under serve.
    server = ServerProcess(study_dir, threads=4, extra=("--proxies", str(proxies)),
                           log_path=tmp_path / "serve.log").start()
    try:
        https = requests.get(server.url + "/", headers={"X-Forwarded-Proto": "https"})
        assert ("Secure" in https.headers["Set-Cookie"]) == bool(proxies)
        assert ("Strict-Transport-Security" in https.headers) == bool(proxies)
        # The admin login limit (10 at once) per client address.
        guesser = [_wrong_login(server.url, "198.51.100.7") for _ in range(11)]
        assert guesser[0] == 401 and guesser[-1] == 429
        other = _wrong_login(server.url, "192.0.2.10")
        # Behind a proxy the other client has its own bucket; without --proxies the header
        # is not trusted, so it shares the socket address's (already empty) bucket.
        assert other == (401 if proxies else 429)
    finally:
        server.stop()


def test_a_claimed_slow_answer_is_too_fast_by_the_servers_clock(study_dir, tmp_path):
    import time

    from survey_helpers import csrf_of, start, study_app

    from survey_app.export import TOO_FAST_MS, export_votes

    app = study_app(study_dir, tmp_path / "v.db")
    client = app.test_client()
    assert start(client).status_code == 303
    answered = 0
    while (page := client.get("/trial")).status_code == 200:
        index = int(re.search(r'name="trial" value="([0-9]+)"', page.text).group(1))
        if answered % 2:  # the page was shown long enough ago, by the server's clock
            with client.session_transaction() as sess:
                sess["shown"] = [index, int(time.time() * 1000) - 5 * TOO_FAST_MS]
        # A bot claims a slow answer in the page's field and answers at once.
        assert client.post("/trial", data={"csrf_token": csrf_of(client), "trial": index,
                                           "choice": "left",
                                           "rt_ms": str(60 * TOO_FAST_MS)}).status_code == 303
        answered += 1
    df = export_votes(app.extensions["survey"].db).sort_values("trial")
    assert len(df) >= 2 and (df["rt_ms"] == 60 * TOO_FAST_MS).all()
    quick = df["rt_ms_server"] < TOO_FAST_MS
    assert quick.any() and (~quick).any()
    assert (df["too_fast"] == quick).all()


def test_fit_finds_the_source_run_from_another_directory(tmp_path, monkeypatch):
    import json

    from survey_app.analysis_cli import source_run

    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")  # the README's relative paths
    run = make_fake_run(tmp_path / "work" / "run")
    (run / "metrics.csv").write_text("method,resolution,image,metric,value\n")
    create_study("run", "studies/s1", resolution=128, trials_per_participant=4, validation=1,
                 progress=False)
    study = tmp_path / "work" / "studies" / "s1"
    cfg = json.loads((study / "study.json").read_text())["config"]
    monkeypatch.chdir(tmp_path)
    found, problem = source_run(study, cfg)
    assert problem is None and found.resolve() == (tmp_path / "work" / "run").resolve()


def test_mturk_preview_without_worker_id_cannot_start(study_dir, tmp_path):
    from survey_helpers import rendered, start, study_app

    app = study_app(study_dir, tmp_path / "v.db")
    client = app.test_client()
    # What MTurk sends before a worker accepts the HIT: no workerId.
    query = "assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=3HITID"
    with rendered(app) as seen:
        page = client.get("/?" + query)
    assert page.status_code == 200 and seen[0][1]["preview"] is True
    assert 'id="start-form"' not in page.text
    assert start(client, assignmentId="ASSIGNMENT_ID_NOT_AVAILABLE",
                 hitId="3HITID").status_code == 400


def test_another_platform_id_in_a_used_browser_is_a_new_person(study_dir, tmp_path):
    from survey_helpers import start, study_app

    from survey_app.export import export_participants

    app = study_app(study_dir, tmp_path / "v.db")
    browser = app.test_client()  # a shared computer
    assert start(browser, PROLIFIC_PID="personA").status_code == 303
    assert "Continue where you left off" in browser.get("/?PROLIFIC_PID=personA").text
    # Someone else arrives with their own id: a new schedule, never A's trials or code.
    page = browser.get("/?PROLIFIC_PID=personB")
    assert 'id="start-form"' in page.text and "Continue where" not in page.text
    assert start(browser, PROLIFIC_PID="personB").status_code == 303
    db = app.extensions["survey"].db
    people = export_participants(db).set_index("external_id")
    assert set(people.index) == {"personA", "personB"}
    with browser.session_transaction() as sess:
        assert sess["p"] == people.loc["personB", "participant"]
    # A's id from this browser is now just a known id.
    assert browser.get("/?PROLIFIC_PID=personA").status_code == 409


def test_consent_names_what_is_stored_beside_the_answers(study_dir, tmp_path):
    from survey_helpers import study_app

    app = study_app(study_dir, tmp_path / "v.db")
    plain = app.test_client().get("/").text
    assert "user agent" in plain and "platform" not in plain
    assert "platform's ids" in app.test_client().get("/?PROLIFIC_PID=p1").text


def test_admin_page_links_both_downloads_and_they_need_the_token(study_dir, tmp_path):
    from survey_helpers import ADMIN_TOKEN, study_app

    app = study_app(study_dir, tmp_path / "v.db")
    page = app.test_client().get("/admin/", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    links = re.findall(r'href="(/admin/export/[^"]+)"', page.text)
    assert links == ["/admin/export/votes.csv", "/admin/export/participants.csv"]
    for link in links:
        assert app.test_client().get(link).status_code == 401
        wrong = app.test_client().get(link, headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 401


def test_a_double_click_on_the_practice_answer_still_shows_its_feedback(study_dir, tmp_path):
    from survey_helpers import csrf_of, start, study_app

    from survey_app.export import export_votes

    app = study_app(study_dir, tmp_path / "v.db")
    client = app.test_client()
    assert start(client).status_code == 303
    page = client.get("/trial")
    assert "Practice" in page.text
    form = {"csrf_token": csrf_of(client), "trial": "0", "choice": "left"}
    first, second = client.post("/trial", data=form), client.post("/trial", data=form)
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"] == "/practice"
    # A later trial's double click goes on, and is stored once.
    index = int(re.search(r'name="trial" value="([0-9]+)"', client.get("/trial").text).group(1))
    form = {"csrf_token": csrf_of(client), "trial": str(index), "choice": "right"}
    again = [client.post("/trial", data=form) for _ in range(2)]
    assert [r.headers["Location"] for r in again] == ["/trial", "/trial"]
    assert len(export_votes(app.extensions["survey"].db)) == 1
