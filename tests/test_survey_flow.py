"""The participant flow, exclusion, idempotence, admin and export, through Flask's test client."""

from __future__ import annotations

import io
import re
import threading
import time
from contextlib import contextmanager

import pandas as pd
import pytest
from sqlalchemy import create_engine, make_url, text
from survey_helpers import db_app, item_ids, make_fake_run, study_app

from bench.cli import main as cli_main
from bench.errors import UserError
from survey_app import create_app
from survey_app.export import COLUMNS, export_votes
from survey_app.queries import MAX_ID, count_params, pair_counts
from survey_app.study import create_study

TOKEN = "admin-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("survey_flow")
    run = make_fake_run(root / "run")
    create_study(run, root / "study", resolution=128, trials_per_participant=8, validation=2,
                 repeat_swapped=True, completion_url="https://example.org/done?c={code}",
                 progress=False)
    return root / "study"


@pytest.fixture()
def app(study_dir, db_url):
    """The app on an empty database: every test here runs on SQLite and on PostgreSQL."""
    app = create_app({
        "STUDY_DIR": str(study_dir),
        "SECRET_KEY": "k" * 40,
        "ADMIN_TOKEN": TOKEN,
        "DATABASE_URL": db_url,
    })
    yield app
    app.extensions["survey"].db.dispose()


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _start(client, pid: str | None = None) -> str:
    page = client.get("/" + (f"?pid={pid}" if pid else ""))
    assert page.status_code == 200
    token = _csrf(page.text)
    form = {"csrf_token": token, "consent": "yes"}
    if pid:
        form["pid"] = pid
    r = client.post("/start", data=form)
    assert r.status_code == 303 and r.headers["Location"].endswith("/trial")
    return token


def _current(client) -> tuple[int, int | None, str, str] | None:
    """(index, scored trials, left item id, right item id) of the current trial page, None
    when done. Item ids are read from the opaque image tokens with the server's key."""
    r = client.get("/trial")
    if r.status_code == 302:
        assert r.headers["Location"].endswith("/done")
        return None
    assert r.status_code == 200
    idx = int(re.search(r'name="trial" value="(\d+)"', r.text).group(1))
    progress = re.search(r'id="progress">(?:(\d+) of (\d+)|Practice)<', r.text)
    n = int(progress.group(2)) if progress.group(2) else None
    assert (progress.group(1) is None) == (idx == 0)  # the practice trial comes first
    left, right = item_ids(client, r.text)
    return idx, n, left, right


def _item_kinds(app) -> dict[str, str]:
    return {str(k): v["kind"] for k, v in app.extensions["survey"].items.items()}


def _answer_all(app, client, token: str, honest: bool) -> list[int]:
    """Answer every trial; in validation trials pick the reference (honest) or the broken one."""
    kinds = _item_kinds(app)
    seen = []
    while (cur := _current(client)) is not None:
        idx, n, left, right = cur
        seen.append(idx)
        choice = "left"
        if {kinds[left], kinds[right]} == {"reference", "broken"}:
            good = "left" if kinds[left] == "reference" else "right"
            choice = good if honest else ("right" if good == "left" else "left")
        r = client.post("/trial", data={"csrf_token": token, "trial": idx, "choice": choice,
                                        "rt_ms": 1234, "vw": 1280, "vh": 720})
        assert r.status_code == 303
        assert n is None or len(seen) <= n + 1  # the practice trial comes on top
    return seen


def test_full_session_honest_participant(app):
    client = app.test_client()
    token = _start(client, pid="worker_1")
    seen = _answer_all(app, client, token, honest=True)
    assert seen == list(range(9))  # practice + 8 scored
    done = client.get("/done")
    assert done.status_code == 200
    code = re.search(r'id="completion-code">([^<]+)<', done.text).group(1)
    assert re.fullmatch(r"[0-9A-F]{10}", code)
    assert f"https://example.org/done?c={code}" in done.text
    df = export_votes(app.extensions["survey"].db, study_uid=app.extensions["survey"].spec.uid)
    assert list(df.columns) == COLUMNS
    assert len(df) == 8 and df["trial"].tolist() == list(range(1, 9))  # practice left out
    assert not df["excluded"].any() and (df["outcome"] == "completed").all()
    assert (df["completion_code"] == code).all()
    # Two checks (three when the swapped repeat falls on one), all answered correctly.
    assert df["is_validation"].sum() in (2, 3) and df.loc[df["is_validation"], "correct"].all()
    assert df["repeat_of"].notna().sum() == 1
    rep = df[df["repeat_of"].notna()].iloc[0]
    orig = df[df["trial"] == rep["repeat_of"]].iloc[0]
    assert (rep["left"], rep["right"]) == (orig["right"], orig["left"])
    assert (df["rt_ms"] == 1234).all() and (df["viewport"] == "1280x720").all()
    assert (df["external_id"] == "worker_1").all()
    assert df["rt_ms_server"].notna().all()
    # Left/right item names are "method/image" and match the item ids.
    assert all(lm == lft.split("/")[0] for lm, lft in zip(df["left_method"], df["left"],
                                                           strict=True))


def test_failed_validation_excludes_but_keeps_votes(app):
    client = app.test_client()
    token = _start(client)
    seen = _answer_all(app, client, token, honest=False)
    assert len(seen) == 9
    done = client.get("/done")
    assert done.status_code == 200  # still gets a code: the one for failed screening
    df = export_votes(app.extensions["survey"].db)
    assert len(df) == 8 and df["excluded"].all()
    assert df["exclusion_reason"].str.startswith("failed validation").all()
    assert (df["outcome"] == "failed_screening").all()
    assert df["completion_code"].iloc[0] in done.text
    assert (~df.loc[df["is_validation"], "correct"]).all()


def test_resubmission_is_idempotent_and_other_trials_are_refused(app):
    client = app.test_client()
    token = _start(client)
    idx, _, _, _ = _current(client)
    assert idx == 0
    form = {"csrf_token": token, "trial": 0, "choice": "right"}
    assert client.post("/trial", data=form).status_code == 303
    assert client.post("/trial", data=form).status_code == 303  # same answer again: accepted
    assert client.post("/trial", data=form | {"choice": "left"}).status_code == 409
    assert client.post("/trial", data=form | {"trial": 5}).status_code == 409  # future trial
    assert client.post("/trial", data=form | {"trial": 999}).status_code == 409
    df = export_votes(app.extensions["survey"].db, include_practice=True)
    assert len(df) == 1 and df["choice"].iloc[0] == "right" and df["kind"].iloc[0] == "practice"
    assert df["rt_ms_client"].isna().all() and df["viewport"].isna().all()  # no-JS answer
    assert df["rt_ms"].notna().all()  # falls back to the server-side measurement


def test_bad_input_is_400_not_500(app):
    client = app.test_client()
    token = _start(client)
    for form in (
        {"trial": "0", "choice": "up"},
        {"trial": "zero", "choice": "left"},
        {"trial": "-1", "choice": "left"},
        {"trial": "0"},
        {"trial": "0", "choice": "left", "rt_ms": "fast"},
        {"trial": "0", "choice": "left", "vw": "0"},
        {"trial": "1" * 40, "choice": "left"},
        {"trial": "0", "choice": "left", "dpr": "abc"},
        {"trial": "0", "choice": "left", "dpr": "20"},
        {"trial": "0", "choice": "left", "mode": "zoomy"},
        {"trial": "0", "choice": "left", "zoom": "100"},
        {"trial": "0", "choice": "left", "flips": "-1"},
        {"trial": "0", "choice": "left", "hidden_ms": "1e9"},
    ):
        r = client.post("/trial", data={"csrf_token": token, **form})
        assert r.status_code == 400, form
    assert client.get("/?pid=../../etc").status_code == 400
    assert client.get("/?pid=abc%0A").status_code == 400  # no trailing newline sneaks in
    assert client.post("/start", data={"csrf_token": token}).status_code in (303, 400)


def test_csrf_required_on_every_post(app):
    client = app.test_client()
    _start(client)
    assert client.post("/trial", data={"trial": 0, "choice": "left"}).status_code == 400
    assert client.post("/trial", data={"csrf_token": "x" * 43, "trial": 0,
                                       "choice": "left"}).status_code == 400
    fresh = app.test_client()
    assert fresh.post("/start", data={"consent": "yes"}).status_code == 400
    assert fresh.post("/admin/login", data={"token": TOKEN}).status_code == 400


def test_no_session_redirects_and_rejects(app):
    client = app.test_client()
    assert client.get("/trial").status_code == 302
    assert client.get("/done").status_code == 302
    page = client.get("/")
    r = client.post("/trial", data={"csrf_token": _csrf(page.text), "trial": 0, "choice": "left"})
    assert r.status_code == 400


def test_view_fields_are_stored_on_the_vote(app):
    client = app.test_client()
    token = _start(client)
    r = client.post("/trial", data={"csrf_token": token, "trial": 0, "choice": "left",
                                    "dpr": "2.5", "mode": "flicker", "zoom": "4",
                                    "flips": "7", "hidden_ms": "1500"})
    assert r.status_code == 303 and r.headers["Location"].endswith("/practice")
    df = export_votes(app.extensions["survey"].db, include_practice=True)
    row = df.iloc[0]
    assert (row["dpr"], row["display_mode"], row["zoom_max"]) == (2.5, "flicker", 4.0)
    assert (row["flicker_toggles"], row["hidden_ms"]) == (7, 1500)


def test_admin_requires_token(app):
    client = app.test_client()
    assert client.get("/admin/").status_code == 401
    assert client.get("/admin/export/votes.csv").status_code == 401
    bad = client.get("/admin/", headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401 and "Bearer" in bad.headers["WWW-Authenticate"]
    ok = client.get("/admin/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and "Ranking" in ok.text
    # Login form sets a session flag.
    page = client.get("/admin/login")
    assert page.status_code == 401
    r = client.post("/admin/login", data={"csrf_token": _csrf(page.text), "token": "nope"})
    assert r.status_code == 401
    r = client.post("/admin/login", data={"csrf_token": _csrf(page.text), "token": TOKEN})
    assert r.status_code == 303
    assert client.get("/admin/").status_code == 200


def test_admin_ranking_and_csv_download(app):
    client = app.test_client()
    token = _start(client)
    _answer_all(app, client, token, honest=True)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    page = client.get("/admin/", headers=auth).text
    assert re.search(r"participants started</th><td>1<", page)
    for method in ("good", "blurry", "flat"):
        assert f"<td>{method}</td>" in page
    assert "Bradley–Terry log-strength" in page
    csv = client.get("/admin/export/votes.csv", headers=auth)
    assert csv.status_code == 200 and csv.mimetype == "text/csv"
    df = pd.read_csv(io.StringIO(csv.text))
    assert list(df.columns) == COLUMNS and len(df) == 8


def test_security_headers_and_cookie_flags(app):
    client = app.test_client()
    r = client.get("/")
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_no_image_by_id_or_path(app):
    client = app.test_client()
    _start(client)
    item_id = next(iter(app.extensions["survey"].items))
    for path in (f"/image/{item_id}", "/image/999999", "/image/0000.png", "/i/0000.png",
                 "/i/../study.json", "/images/0000.png", "/static/../study.json",
                 "/static/%2e%2e/study.json", "/i/" + "A" * 34):
        assert client.get(path).status_code == 404, path


def test_vote_rate_limit(study_dir, tmp_path):
    app = create_app({"STUDY_DIR": str(study_dir), "SECRET_KEY": "k" * 40,
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'rl.db'}", "VOTE_RATE": (3, 0.01)})
    client = app.test_client()
    token = _start(client)
    codes = [client.post("/trial", data={"csrf_token": token, "trial": i,
                                         "choice": "left"}).status_code for i in range(5)]
    assert codes[:3] == [303, 303, 303] and codes[3:] == [429, 429]


def test_missing_secret_is_a_user_error(study_dir, monkeypatch):
    monkeypatch.delenv("HRBENCH_SECRET_KEY", raising=False)
    if (study_dir / "instance" / "secret_key").exists():
        pytest.skip("a secret file exists in the shared study folder")
    with pytest.raises(UserError, match="secret"):
        create_app({"STUDY_DIR": str(study_dir)})


def test_balanced_assignment_over_participants(app):
    """With everybody answering, pair vote counts stay within two of each other (a check
    takes the place of a chosen compare pair, which waits for the next person)."""
    for _ in range(6):
        client = app.test_client()
        token = _start(client)
        _answer_all(app, client, token, honest=True)
    df = export_votes(app.extensions["survey"].db)
    cmp = df[df["kind"] == "compare"]
    counts = cmp.groupby("pair").size()
    assert len(counts) == 9  # 3 images x 3 method pairs, all used
    assert counts.max() - counts.min() <= 2
    firsts = df[df["repeat_of"].isna()]  # the swapped repeat is the one pair shown twice
    assert not firsts.groupby(["participant", "pair"]).size().gt(1).any()


@contextmanager
def _next_start_held(app):
    """Start a person on ``app`` in a thread whose transaction stops before its commit,
    holding the study lock with the person inserted; yields (release, thread). On leaving,
    the start is let go (after a failed assertion too, so teardown finds no open work)."""
    db = app.extensions["survey"].db
    entered, release = threading.Event(), threading.Event()
    run_write = db.run_write

    def held(job, alone=False):
        def paused(conn):
            out = yield from job(conn)
            entered.set()
            release.wait(30)
            return out
        return run_write(paused, alone=alone)

    db.run_write = held
    thread = threading.Thread(target=_start, args=(app.test_client(),))
    thread.start()
    try:
        assert entered.wait(30)
        yield release, thread
    finally:
        release.set()
        thread.join(30)


def _two_pg_apps(study_dir, pg_url, **config) -> list:
    """Two apps on one database, as two server processes, counts kept between full reads."""
    return [db_app(study_dir, pg_url, PAIR_COUNTS_TTL_S=3600, START_RATE=(1, 0), **config)
            for _ in range(2)]


def _planned_from_everyone(app, used: dict) -> tuple[list, dict]:
    """Check that ``used`` (the counts the newest person's schedule was planned from) plus
    that person's schedule are a full count of every committed schedule; (ids, full count)."""
    st, window = app.extensions["survey"], app.config["ACTIVE_WINDOW_S"]
    with st.db.engine.connect() as conn:
        ids = conn.execute(text("SELECT id FROM participant ORDER BY id")).scalars().all()
        everyone = pair_counts(conn, st.study_id, window)
        mine = pair_counts(conn, st.study_id, window, after=ids[-1] - 1)
    for pair in everyone:
        assert used.get(pair, 0) + mine.get(pair, 0) == everyone[pair]
    return ids, everyone


@pytest.mark.postgres
def test_new_schedules_count_every_process_schedules(study_dir, pg_url):
    """Two apps on one PostgreSQL database, as two server processes, counts kept between
    full reads: each new schedule is planned from counts equal to a full count of every
    schedule committed before it, whichever process planned it."""
    apps = _two_pg_apps(study_dir, pg_url)
    try:
        reads = []
        for i, app in enumerate([apps[0], apps[1], apps[1], apps[0], apps[1], apps[0]]):
            cache = app.extensions["survey"].pair_counts
            client = app.test_client()
            token = _start(client)
            if i == 2:  # answers move schedules from open to answered: counts unchanged
                _answer_all(app, client, token, honest=True)
            used, upto = cache.base()  # what this start planned from, and up to which id
            ids, everyone = _planned_from_everyone(app, used)
            assert upto == ids[-1] - 1
            assert sum(everyone.values()) > sum(used.values()) > 0 or i == 0
            reads.append(sum(used.values()))
        assert reads == sorted(reads) and len(set(reads)) == len(reads)
    finally:
        for app in apps:
            app.extensions["survey"].db.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("server_default", ["read committed", "repeatable read"])
def test_a_stale_full_count_is_read_before_the_study_lock_and_misses_no_one(
        study_dir, pg_url, monkeypatch, server_default):
    """Process A's counts are stale while process B holds the study lock with a new person
    not yet committed: A reads the full count without waiting, up to the newest committed
    person, then waits for the lock and adds B's person with the incremental read (which
    must see B's commit: READ COMMITTED, whatever the database's default)."""
    import survey_app.participant as participant

    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"ALTER DATABASE {make_url(pg_url).database} "
                          f"SET default_transaction_isolation = '{server_default}'"))
    admin.dispose()
    a, b = _two_pg_apps(study_dir, pg_url)
    st = a.extensions["survey"]
    try:
        for app in (a, b, a):
            _start(app.test_client())
        with _next_start_held(b) as (release, held):
            reads = []  # A's count reads from here on
            monkeypatch.setattr(participant, "count_params", lambda sid, w, after, upto=MAX_ID: (
                reads.append((after, upto)) or count_params(sid, w, after, upto)))
            with st.db.engine.connect() as conn:
                committed = conn.execute(text("SELECT max(id) FROM participant")).scalar()
            cache = st.pair_counts
            cache.ttl_s = 0  # stale: the next start reads in full
            waiting = threading.Thread(target=_start, args=(a.test_client(),))
            waiting.start()
            for _ in range(100):  # A got to the lock and waits there
                with st.db.engine.connect() as conn:  # (the view is a snapshot per transaction)
                    if conn.execute(text(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                            "'Lock' AND datname = current_database() "
                            "AND query LIKE '%FOR NO KEY UPDATE%'")).scalar():
                        break
                time.sleep(0.05)
            else:
                pytest.fail("the second start never waited for the study lock")
            # The full count up to the newest committed person (B's is not), read before the
            # lock; then the people after it, under the lock (sent, waiting for it).
            assert reads == [(0, committed), (committed, MAX_ID)]
            release.set()
            held.join()
        waiting.join()
        cache.ttl_s = 3600
        used, upto = cache.base()
        ids, _ = _planned_from_everyone(a, used)
        assert len(ids) == 5 and upto == ids[-2] == committed + 1  # B's person, then A's
        with st.db._write_engine.connect() as conn:  # the start's connection, back in the pool
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "0"  # not kept
    finally:
        for app in (a, b):
            app.extensions["survey"].db.dispose()


@pytest.mark.parametrize("bad", [0, -1, float("inf"), "soon", 10**6])
def test_a_bad_start_lock_timeout_is_refused(study_dir, tmp_path, bad):
    with pytest.raises(UserError, match="START_LOCK_TIMEOUT_S"):
        study_app(study_dir, tmp_path / "v.db", START_LOCK_TIMEOUT_S=bad)


@pytest.mark.postgres
def test_a_start_waits_for_the_study_lock_only_so_long(study_dir, pg_url, caplog):
    """A new session held up by another process that keeps the study lock: 503 after
    START_LOCK_TIMEOUT_S, nothing written; the next start after the lock is free works."""
    a, b = _two_pg_apps(study_dir, pg_url, START_LOCK_TIMEOUT_S=0.3)
    st = a.extensions["survey"]
    try:
        with _next_start_held(b) as (release, held):
            client = a.test_client()
            token = _csrf(client.get("/").text)
            t0 = time.monotonic()
            r = client.post("/start", data={"csrf_token": token, "consent": "yes"})
            assert r.status_code == 503 and "held up" in r.text
            assert time.monotonic() - t0 < 5
            assert "START_LOCK_TIMEOUT_S" in caplog.text
            release.set()
            held.join()
        _start(a.test_client())
        with st.db.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM participant")).scalar() == 2
    finally:
        for app in (a, b):
            app.extensions["survey"].db.dispose()


@pytest.mark.postgres
def test_serving_refuses_an_id_sequence_that_hands_out_ids_in_blocks(study_dir, pg_url):
    """New schedules' counts rely on ids handed out one at a time (CACHE 1): a database
    whose sequence caches ids is refused with one line naming the fix."""
    db_app(study_dir, pg_url).extensions["survey"].db.dispose()  # makes the schema
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER SEQUENCE participant_id_seq CACHE 20"))
    with pytest.raises(UserError, match=r"CACHE 20; .*ALTER SEQUENCE participant_id_seq CACHE 1"):
        db_app(study_dir, pg_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER SEQUENCE participant_id_seq CACHE 1"))
    engine.dispose()
    db_app(study_dir, pg_url).extensions["survey"].db.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("last", [False, True])
def test_a_withdrawal_committed_after_an_answers_look_up_wins(study_dir, pg_url, last):
    """Another process withdraws the person between the answer's look-up and its write (on
    PostgreSQL nothing locks the person in between): the answer is refused with 409 and
    stores nothing, and on the last trial "returned" does not turn into "completed"."""
    app = db_app(study_dir, pg_url)
    st = app.extensions["survey"]
    other = create_engine(pg_url)  # the other process's connection
    try:
        client = app.test_client()
        token = _start(client)
        while last and (cur := _current(client)) is not None and cur[0] < 8:
            form = {"csrf_token": token, "trial": cur[0], "choice": "left"}
            assert client.post("/trial", data=form).status_code == 303
        idx = _current(client)[0]
        assert idx == (8 if last else 0)
        with st.db.engine.connect() as conn:
            pid = conn.execute(text("SELECT max(id) FROM participant")).scalar()
        record, withdrawn = st.answer_sql.record, []

        def withdraw_then_record(vote, advance):  # in the writer, after the look-up
            with other.begin() as conn:
                conn.execute(text("UPDATE participant SET outcome = 'returned' WHERE id = :p"),
                             {"p": pid})
            withdrawn.append(pid)
            return record(vote, advance)

        st.answer_sql.record = withdraw_then_record
        r = client.post("/trial", data={"csrf_token": token, "trial": idx, "choice": "left"})
        assert withdrawn == [pid]
        assert r.status_code == 409 and "withdrawn" in r.text
        with st.db.engine.connect() as conn:
            outcome, next_index = conn.execute(text(
                "SELECT outcome, next_index FROM participant WHERE id = :p"), {"p": pid}).one()
            votes = conn.execute(text("SELECT count(*) FROM vote WHERE participant_id = :p "
                                      "AND trial_index = :i"), {"p": pid, "i": idx}).scalar()
        assert (outcome, next_index, votes) == ("returned", idx, 0)
    finally:
        other.dispose()
        st.db.dispose()


def test_cli_create_serve_args_and_export(tmp_path, monkeypatch):
    run = make_fake_run(tmp_path / "run", methods=("good", "flat"), images=("alpha", "beta"))
    study = tmp_path / "study"
    rc = cli_main(["survey", "create", "--run", str(run), "--resolution", "128",
                   "--methods", "good,flat", "--trials-per-participant", "3", "--validation",
                   "1", "--display", "crop", "--crop-size", "64", "--out", str(study)])
    assert rc == 0 and (study / "study.json").is_file()
    assert cli_main(["survey", "create", "--run", str(run), "--resolution", "128",
                     "--out", str(study)]) == 2  # exists
    assert cli_main(["survey", "export", str(study), "--out", str(tmp_path / "v.csv")]) == 2
    assert cli_main(["survey", "serve", str(tmp_path / "missing")]) == 2
    assert cli_main(["survey", "serve", str(study), "--db", "nosuchdb://x"]) == 2
    app = create_app({"STUDY_DIR": str(study), "SECRET_KEY": "s" * 40})
    client = app.test_client()
    token = _start(client)
    _answer_all(app, client, token, honest=True)
    assert cli_main(["survey", "export", str(study), "--out", str(tmp_path / "v.csv"),
                     "--participants", str(tmp_path / "p.csv")]) == 0
    df = pd.read_csv(tmp_path / "v.csv")
    assert len(df) == 3 and set(df.columns) == set(COLUMNS)
    people = pd.read_csv(tmp_path / "p.csv")
    assert len(people) == 1 and people["outcome"].tolist() == ["completed"]
    assert people["answers"].tolist() == [3]


@contextmanager
def _writer_held(app, release: threading.Event):
    """Keep ``app``'s writer busy until ``release`` is set (on leaving, at the latest):
    writes sent meanwhile wait for it together and form one batch."""
    db, busy = app.extensions["survey"].db, threading.Event()

    def hold(conn):
        busy.set()
        release.wait(30)

    holder = threading.Thread(target=db.run_write, args=(hold,))
    holder.start()
    try:
        assert busy.wait(30)
        yield
    finally:
        release.set()
        holder.join(30)


def _post_queued(app, cookie: str, path: str, form: dict, status: dict, key) -> threading.Thread:
    """POST ``form`` to ``path`` as the person with session ``cookie`` in a thread (its
    status goes to ``status[key]``); returns once one more write waits for the writer."""
    db = app.extensions["survey"].db
    waiting = db._committer._queue.qsize()

    def send() -> None:
        client = app.test_client()  # one per request: one person may send twice at once
        client.set_cookie("hrbench_survey", cookie)
        status[key] = client.post(path, data=form).status_code

    thread = threading.Thread(target=send)
    thread.start()
    deadline = time.monotonic() + 30
    while db._committer._queue.qsize() <= waiting:
        assert time.monotonic() < deadline, "the request never reached the writer"
        time.sleep(0.005)
    return thread


def _answer_queued(app, cookie: str, token: str, choice: str, status: dict, key) -> threading.Thread:
    """:func:`_post_queued` of an answer to trial 0."""
    return _post_queued(app, cookie, "/trial", {"csrf_token": token, "trial": 0,
                                                "choice": choice}, status, key)


def _joined(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "a request did not finish"


def _people(app, n: int) -> list[tuple[str, str]]:
    """``n`` people started on ``app``: (session cookie, CSRF token) each."""
    out = []
    for _ in range(n):
        client = app.test_client()
        token = _start(client)
        out.append((client.get_cookie("hrbench_survey").value, token))
    return out


@pytest.mark.postgres
def test_answers_in_one_group_commit_each_get_their_own_outcome(study_dir, pg_url,
                                                                 monkeypatch):
    """Answers that wait for the writer together go to PostgreSQL in one batch, two round
    trips, and each still gets its own outcome: plain answers stored, an answer sent twice
    stored once (both acknowledged), two different answers to one trial: one stored, the
    other 409, and a withdrawn person's answer 409; nothing clashed (no replay)."""
    from survey_app import db as db_module

    app = db_app(study_dir, pg_url)
    st = app.extensions["survey"]
    people = dict(zip("abcd", _people(app, 4), strict=True))
    withdrawing = app.test_client()
    withdrawing.set_cookie("hrbench_survey", people["d"][0])
    withdrawing.post("/withdraw", data={"csrf_token": people["d"][1]})
    sends = [("a", "left"), ("b", "right"), ("b", "right"), ("c", "left"), ("c", "right"),
             ("d", "left")]
    trips, send_together = [], db_module._send_together
    monkeypatch.setattr(db_module, "_send_together",
                        lambda raw, groups, **k: trips.append(len(groups))
                        or send_together(raw, groups, **k))
    status = {}
    try:
        with _writer_held(app, threading.Event()):
            threads = [_answer_queued(app, *people[name], choice, status, k)
                       for k, (name, choice) in enumerate(sends)]
        _joined(threads)
        # One batch, two round trips: the six look-ups, then the writes of the five that
        # passed theirs (not the withdrawn person's), which clashed on nothing (a replay one
        # at a time would add a round trip per answer).
        assert trips == [6, 5]
        assert [status[k] for k in range(3)] == [303, 303, 303]
        assert sorted([status[3], status[4]]) == [303, 409] and status[5] == 409
        with st.db.engine.connect() as conn:
            stored = conn.execute(text("SELECT choice FROM vote ORDER BY participant_id")).scalars()
            assert stored.all() == ["left", "right", "left" if status[3] == 303 else "right"]
    finally:
        st.db.dispose()


@pytest.mark.postgres
def test_two_processes_batches_lock_the_same_people_in_one_order(study_dir, pg_url,
                                                                   monkeypatch):
    """The batches of two processes hold writes to the same 12 people (each person's
    answer sent to both, as a retry over a second connection may be; in one of them half
    the people also withdraw), queued in opposite orders. Run as queued, each batch would
    lock its first people, then wait for the other's until PostgreSQL's deadlock check
    (1 s) failed one, which then ran again one job at a time. Every batch updates its
    people in the order of their ids, all in one step: no batch fails, each answer is
    stored once and every send is acknowledged."""
    from survey_app import db as db_module
    from survey_app.db import GroupCommitter

    apps = _two_pg_apps(study_dir, pg_url)
    replays, one_by_one = [], GroupCommitter._one_by_one
    monkeypatch.setattr(GroupCommitter, "_one_by_one",
                        lambda self, conn, batch: replays.append(len(batch))
                        or one_by_one(self, conn, batch))
    updated, send_together = [], db_module._send_together

    def spy(raw, groups, **k):  # the people each round trip updates, in the order sent
        pids = [params["pid"] for steps in groups for prepared, params in steps
                if prepared.writes]
        if pids:
            updated.append(pids)
        return send_together(raw, groups, **k)

    people = _people(apps[0], 12)
    monkeypatch.setattr(db_module, "_send_together", spy)
    release, status, threads = threading.Event(), {}, []
    try:
        with _writer_held(apps[0], release), _writer_held(apps[1], release):
            for k, person in enumerate(people[::-1]):
                threads.append(_answer_queued(apps[1], *person, "left", status, (1, k)))
            for k, (cookie, token) in enumerate(people):
                if k >= 6:
                    threads.append(_post_queued(apps[0], cookie, "/withdraw",
                                                {"csrf_token": token}, status, (0, k)))
                else:
                    threads.append(_answer_queued(apps[0], cookie, token, "left", status, (0, k)))
        _joined(threads)
        assert replays == [] and len(updated) == 2
        assert all(u == sorted(u) for u in updated)
        # Everything acknowledged, but an answer that met its person's withdrawal (either
        # way round: its look-up saw it, or its guarded write did), which is refused.
        answers = {11 - k: status[(1, k)] for k in range(12)}
        assert [status[(0, k)] for k in range(12)] == [303] * 12
        assert [answers[k] for k in range(6)] == [303] * 6
        assert all(answers[k] in (303, 409) for k in range(6, 12))
        with apps[0].extensions["survey"].db.engine.connect() as conn:
            votes = conn.execute(text("SELECT count(*), count(DISTINCT participant_id) "
                                      "FROM vote")).one()
        stored = 6 + sum(answers[k] == 303 for k in range(6, 12))
        assert tuple(votes) == (stored, stored)
    finally:
        for app in apps:
            app.extensions["survey"].db.dispose()
