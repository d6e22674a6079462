"""Operations: several server processes, exports of a live study, backups with pg_dump.

- ``--workers`` > 1 is refused on SQLite (one line, exit 2);
- with ``--workers 4`` on PostgreSQL, the same answer sent at once over many connections
  (so to several processes) is stored once and acknowledged to every sender; conflicting
  answers sent at once store one of them and refuse the others;
- kept-alive connections spread evenly over the worker processes (least connections first);
- an export taken while people vote is one consistent state (SQLite and PostgreSQL);
- ``pg_dump`` of a study's database restores with ``pg_restore`` into a new database that
  exports the same answers and serves the study (the README's backup recipe, tested).
"""

from __future__ import annotations

import http.client
import os
import random
import re
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, text
from survey_helpers import Participant, ServerProcess, make_fake_run

from bench.cli import main as cli_main
from survey_app import create_app
from survey_app.export import export_votes
from survey_app.study import create_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("pg_ops")
    run = make_fake_run(root / "run", images=("alpha", "beta"))
    create_study(run, root / "study", resolution=128, trials_per_participant=6, validation=1,
                 progress=False)
    return root / "study"


def test_several_workers_refused_on_sqlite(study, capsys):
    assert cli_main(["survey", "serve", str(study), "--workers", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--workers 2: SQLite is served by one process" in err[0]


def _established(pid: int, port: int) -> int:
    """Established TCP connections on local ``port`` held by process ``pid`` (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                inodes.add(fields[9])
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        held += target.startswith("socket:[") and target[8:-1] in inodes
    return held


def _wait_until_serving(log: Path, workers: int) -> None:
    """Until each worker process has said "Serving on" in the server's log."""
    deadline = time.monotonic() + 30
    while log.read_text().count("Serving on") < workers:
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.1)


def _keep_alive(port: int, conns: list) -> None:
    """Open a connection, GET /healthz on it, and keep it open (in ``conns``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/healthz")
    response = conn.getresponse()
    response.read()
    assert response.status == 200
    conns.append(conn)


@pytest.mark.postgres
def test_kept_alive_connections_spread_evenly_over_workers(study, pg_url, tmp_path):
    """Twelve participants' kept-alive connections, opened one after another, end up 4/4/4
    on three worker processes: each listens only while it holds no more than the least
    loaded one (left to the kernel, whichever process wakes first takes it)."""
    server = ServerProcess(study, threads=4, workers=3, db_url=pg_url,
                           log_path=tmp_path / "server.log").start()
    conns = []
    try:
        pids = server.worker_pids()
        _wait_until_serving(tmp_path / "server.log", 3)
        time.sleep(0.5)  # each worker's event loop has reported its (zero) connections
        for _ in range(12):
            _keep_alive(server.port, conns)
        held = sorted(_established(pid, server.port) for pid in pids)
        assert held == [4, 4, 4]
    finally:
        for conn in conns:
            conn.close()
        server.stop()


@pytest.mark.postgres
def test_a_new_connection_is_taken_at_once_while_other_workers_sleep(study, pg_url, tmp_path):
    """Workers decide whether to listen when their event loop wakes. With kept-alive but
    idle connections the loops sleep (up to 1 s); a worker that stops listening because it
    overtook a sleeping one must wake it, or no one accepts until the sleeper's timeout."""
    server = ServerProcess(study, threads=4, workers=2, db_url=pg_url,
                           log_path=tmp_path / "server.log").start()
    conns = []

    def connect() -> float:
        t0 = time.monotonic()
        _keep_alive(server.port, conns)
        return time.monotonic() - t0

    try:
        _wait_until_serving(tmp_path / "server.log", 2)
        time.sleep(1.2)  # both loops have decided at least once, and sleep
        # One after another, each left idle: the workers overtake each other while the one
        # not accepting sleeps on its decision.
        slowest = max(connect() for _ in range(12))
        assert slowest < 0.5, f"a new connection waited {slowest:.2f} s to be accepted"
    finally:
        for conn in conns:
            conn.close()
        server.stop()


def _vote_rows(url: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(
                "SELECT participant_id, trial_index, choice FROM vote "
                "ORDER BY participant_id, trial_index"))]
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.slow
def test_concurrent_duplicates_across_worker_processes(study, pg_url, tmp_path):
    server = ServerProcess(study, threads=4, workers=4, db_url=pg_url,
                           log_path=tmp_path / "server.log").start()
    try:
        assert len(server.worker_pids()) == 4
        person = Participant(server.port)
        person.begin()
        n_senders = 8
        rounds = 0
        while (cur := person.current()) is not None:
            index, _ = cur
            # Every sender has its own connection: the kernel spreads them over the
            # processes. Same cookie and CSRF token: one person's repeated submission.
            senders = [Participant(server.port) for _ in range(n_senders)]
            for s in senders:
                s.cookie, s.csrf = person.cookie, person.csrf
            conflicting = rounds % 2 == 1
            choices = [("left", "right")[i % 2] if conflicting else "left"
                       for i in range(n_senders)]
            statuses: list[int | None] = [None] * n_senders
            barrier = threading.Barrier(n_senders)

            def send(i: int, s=senders, c=choices, st=statuses, b=barrier, idx=index) -> None:
                b.wait()
                st[i] = s[i].answer(idx, c[i])

            threads = [threading.Thread(target=send, args=(i,)) for i in range(n_senders)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            for s in senders:
                s.close()
            stored = [c for p, i, c in _vote_rows(pg_url) if i == index]
            assert len(stored) == 1, (index, stored)
            for c, status in zip(choices, statuses, strict=True):
                # The stored choice is acknowledged to all who sent it, refused to the others.
                assert status == (303 if c == stored[0] else 409), (index, choices, statuses)
            rounds += 1
        assert rounds >= 6
        rows = _vote_rows(pg_url)
        assert [i for _, i, _ in rows] == list(range(rounds))
    finally:
        server.stop()


def _answer_everything(app, seed: int, errors: list) -> None:
    rng = random.Random(seed)
    client = app.test_client()
    try:
        page = client.get("/").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        assert client.post("/start", data={"csrf_token": token, "consent": "yes"}).status_code \
            == 303
        while True:
            r = client.get("/trial")
            if r.status_code != 200:
                break
            idx = int(re.search(r'name="trial" value="(\d+)"', r.text).group(1))
            token = re.search(r'name="csrf_token" value="([^"]+)"', r.text).group(1)
            r = client.post("/trial", data={"csrf_token": token, "trial": idx,
                                            "choice": rng.choice(("left", "right"))})
            assert r.status_code == 303, r.status_code
    except BaseException as exc:
        errors.append(exc)


def _check_consistent(df: pd.DataFrame, n_trials: int) -> None:
    """Per person: answers 0..k-1 without a gap, and an outcome exactly when k == n_trials
    (the last answer and the outcome are committed together)."""
    for pid, rows in df.groupby("participant"):
        trials = sorted(rows["trial"])
        assert trials == list(range(len(trials))), (pid, trials)
        finished = rows["outcome"].notna()
        assert finished.all() == (len(trials) == n_trials), (pid, len(trials), rows["outcome"])
        assert finished.all() or not finished.any()


def test_export_of_a_live_study_is_one_consistent_state(study, db_url):
    app = create_app({"STUDY_DIR": str(study), "SECRET_KEY": "k" * 40, "DATABASE_URL": db_url,
                      "START_RATE": (1000, 1000.0), "VOTE_RATE": (1000, 1000.0)})
    uid = app.extensions["survey"].spec.uid
    errors: list[BaseException] = []
    voters: list[threading.Thread] = []
    exports = []
    try:
        # Voters arrive in waves, so that every export below runs while answers commit.
        for wave in range(6):
            for i in range(3):
                voters.append(threading.Thread(target=_answer_everything,
                                               args=(app, 3 * wave + i, errors)))
                voters[-1].start()
            # Through a URL, like `hrbench survey export`, with its own connections.
            exports.append(export_votes(db_url, study_uid=uid, include_practice=True))
        while any(t.is_alive() for t in voters):
            exports.append(export_votes(db_url, study_uid=uid, include_practice=True))
    finally:
        for t in voters:
            t.join(60)
    assert not errors, errors[:3]
    final = export_votes(db_url, study_uid=uid, include_practice=True)
    app.extensions["survey"].db.dispose()
    n_trials = int(final.groupby("participant").size().max())
    assert final.groupby("participant").size().eq(n_trials).all() and len(final) == 18 * n_trials
    assert any(0 < len(df) < len(final) for df in exports)
    for df in exports + [final]:
        _check_consistent(df, n_trials)


@pytest.mark.postgres
def test_pg_dump_backup_restores_into_a_new_database(study, pg_server, pg_url, tmp_path):
    app = create_app({"STUDY_DIR": str(study), "SECRET_KEY": "k" * 40, "DATABASE_URL": pg_url,
                      "START_RATE": (1000, 1000.0), "VOTE_RATE": (1000, 1000.0)})
    errors: list[BaseException] = []
    for seed in range(3):
        _answer_everything(app, seed, errors)
    assert not errors
    uid = app.extensions["survey"].spec.uid
    app.extensions["survey"].db.dispose()
    before = export_votes(pg_url, study_uid=uid, include_practice=True)
    assert len(before) > 0

    # The README's recipe: pg_dump -Fc, then createdb + pg_restore into a new database.
    source = pg_url.rsplit("/", 1)[1]
    dump = tmp_path / "study.dump"
    pg_server.run_tool("pg_dump", "-Fc", "-f", str(dump), source)
    restored = pg_server.create_database("restored")
    pg_server.run_tool("pg_restore", "--no-owner", "-d", restored, str(dump))
    restored_url = pg_server.url(restored)
    try:
        after = export_votes(restored_url, study_uid=uid, include_practice=True)
        pd.testing.assert_frame_equal(before, after)
        # The restored database serves the study (schema revision and study row came along).
        app2 = create_app({"STUDY_DIR": str(study), "SECRET_KEY": "k" * 40,
                           "DATABASE_URL": restored_url})
        assert app2.test_client().get("/healthz").status_code == 200
        app2.extensions["survey"].db.dispose()
    finally:
        pg_server.drop_database(restored)


@pytest.mark.postgres
def test_export_and_fit_read_the_database_given_by_db(study, pg_url, tmp_path):
    app = create_app({"STUDY_DIR": str(study), "SECRET_KEY": "k" * 40, "DATABASE_URL": pg_url,
                      "START_RATE": (1000, 1000.0), "VOTE_RATE": (1000, 1000.0)})
    errors: list[BaseException] = []
    for seed in range(4):
        _answer_everything(app, seed, errors)
    assert not errors
    app.extensions["survey"].db.dispose()
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")  # what users type
    out = tmp_path / "votes.csv"
    assert cli_main(["survey", "export", str(study), "--db", plain, "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == len(export_votes(pg_url, study_uid=app.extensions[
        "survey"].spec.uid))
    fit = tmp_path / "fit"
    assert cli_main(["survey", "fit", str(study), "--db", plain, "--out", str(fit),
                     "--reps", "20"]) == 0
    assert any(fit.iterdir())
