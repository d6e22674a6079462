"""Identity: one participant per (study, platform id), sessions only from their own cookie."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select
from survey_helpers import csrf_of, item_ids, make_fake_run, start, study_app

from survey_app import participant
from survey_app.models import Participant
from survey_app.study import create_study


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("identity")
    run = make_fake_run(root / "run")
    create_study(run, root / "study", resolution=128, trials_per_participant=4, validation=1,
                 progress=False)
    return root / "study"


@pytest.fixture()
def app(study_dir, tmp_path, db_url):
    """The app on an empty database, once on SQLite and once on PostgreSQL."""
    app = study_app(study_dir, tmp_path / "unused.db", DATABASE_URL=db_url)
    yield app
    app.extensions["survey"].db.dispose()


def _finish(client) -> str:
    """Answer every trial (left); return the completion code shown on /done."""
    while (r := client.get("/trial")).status_code == 200:
        idx = int(r.text.split('name="trial" value="', 1)[1].split('"', 1)[0])
        post = client.post("/trial", data={"csrf_token": csrf_of(client), "trial": idx,
                                           "choice": "left"})
        assert post.status_code == 303
    done = client.get("/done")
    assert done.status_code == 200
    return done.text.split('id="completion-code">', 1)[1].split("<", 1)[0]


def _rows(app, external_id: str) -> int:
    with app.extensions["survey"].db.session_scope() as s:
        return s.scalar(select(func.count()).select_from(Participant)
                        .where(Participant.external_id == external_id))


def test_known_platform_id_alone_never_resumes_or_shows_a_code(app):
    victim = app.test_client()
    assert start(victim, PROLIFIC_PID="victim123").status_code == 303
    victim_trial = victim.get("/trial").text
    code = _finish(victim)

    attacker = app.test_client()
    page = attacker.get("/?PROLIFIC_PID=victim123")
    assert page.status_code == 409 and "already taken part" in page.text
    r = start(attacker, PROLIFIC_PID="victim123")
    assert r.status_code == 409 and "already taken part" in r.text
    seen = [page.text, r.text]
    for path in ("/trial", "/done", "/practice"):
        resp = attacker.get(path)
        assert resp.status_code == 302 and resp.headers["Location"].endswith("/")
        seen.append(resp.text)
    assert not any(code in text for text in seen)
    # Nothing of the victim's schedule reaches the attacker either.
    tokens = set(victim_trial.split('href="/i/')[1:])
    assert not any(t.split('"', 1)[0] in text for t in tokens for text in seen)
    with attacker.session_transaction() as sess:
        assert "p" not in sess
    assert _rows(app, "victim123") == 1


def test_own_cookie_resumes(app):
    client = app.test_client()
    assert start(client, pid="me_1").status_code == 303
    first = item_ids(client, client.get("/trial").text)
    index_page = client.get("/?pid=me_1")
    assert index_page.status_code == 200  # the owner sees the consent page with "continue"
    again = start(client, pid="me_1")
    assert again.status_code == 303 and again.headers["Location"].endswith("/trial")
    assert item_ids(client, client.get("/trial").text) == first


def test_a_session_signed_with_another_key_is_ignored(app, study_dir, tmp_path):
    client = app.test_client()
    assert start(client, pid="owner_1").status_code == 303
    other = study_app(study_dir, tmp_path / "unused.db", SECRET_KEY="z" * 40,
                      DATABASE_URL=app.config["DATABASE_URL"])
    forged = other.test_client()
    cookie = client.get_cookie("hrbench_survey")
    forged.set_cookie("hrbench_survey", cookie.value)
    assert forged.get("/trial").status_code == 302
    other.extensions["survey"].db.dispose()


def test_eight_concurrent_starts_with_one_id_make_one_row(app):
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def go() -> None:
        client = app.test_client()
        page = client.get("/")
        token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        barrier.wait()
        r = client.post("/start", data={"csrf_token": token, "consent": "yes",
                                         "workerId": "W8CONCURRENT", "assignmentId": "A1",
                                         "hitId": "H1"})
        statuses.append(r.status_code)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [303] + [409] * 7
    assert _rows(app, "W8CONCURRENT") == 1


def test_the_database_constraint_decides_when_the_check_is_raced(app, monkeypatch):
    """Two starts that both pass the read-only check: the unique constraint lets one in."""
    monkeypatch.setattr(participant, "_taken", lambda external_id: False)
    a, b = app.test_client(), app.test_client()
    assert start(a, pid="raced_1").status_code == 303
    r = start(b, pid="raced_1")
    assert r.status_code == 409 and "already taken part" in r.text
    assert _rows(app, "raced_1") == 1
    with b.session_transaction() as sess:
        assert "p" not in sess


def test_people_without_platform_id_are_separate(app):
    for _ in range(3):
        assert start(app.test_client()).status_code == 303
    with app.extensions["survey"].db.session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Participant)
                        .where(Participant.external_id.is_(None))) == 3
