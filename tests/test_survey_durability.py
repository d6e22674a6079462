"""Durability on a real server: SIGKILL mid-study, restart, no acknowledged answer lost or doubled.

Run twice, with the same participants and checks:

- SQLite, one process: the whole server is SIGKILLed once a third of the answers are in;
- PostgreSQL, ``--workers 4``: one worker process is SIGKILLed at a third (the server
  replaces it), then the whole server (parent and workers) at two thirds.

60 participants answer concurrently, resending an answer until the server replies (as a
browser retry does). Afterwards: every acknowledged answer is stored exactly once with the
acknowledged choice, nothing unacknowledged is stored, and the schedules are balanced
(scheduled compare trials per pair differ by at most two: every start planned from counts
that include every earlier schedule, across processes too).
"""

from __future__ import annotations

import http.client
import os
import random
import signal
import threading
import time

import pytest
from sqlalchemy import create_engine, text
from survey_helpers import Participant, ServerProcess, make_fake_run

from survey_app.db import normalise_url
from survey_app.study import create_study

N_PEOPLE = 60
N_TRIALS = 10
# max - min scheduled compare trials per pair, the same on both databases: 2, because a
# validation question takes the place of a chosen compare pair (blinding; see assign.py),
# which then waits for the next person.
BALANCE_BOUND = 2


def _retrying(fn, deadline: float, errors: list):
    """Call ``fn`` until it returns without a connection error (server down) or time is up."""
    while True:
        try:
            return fn()
        except (OSError, http.client.HTTPException) as exc:
            errors.append(type(exc).__name__)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _begin(client: Participant, ext: str, deadline: float, errors: list) -> str:
    """Start a session; returns the external id it got.

    When the server stored a start but died before answering it, the retry (no cookie yet)
    is told "you have already taken part" (a platform id alone never resumes a session);
    the person then comes back with a new id, as they would after contacting the researcher.
    """
    for attempt in range(5):
        client.external_id = ext if attempt == 0 else f"{ext}-r{attempt}"
        client.cookie = None
        try:
            _retrying(client.begin, deadline, errors)
            return client.external_id
        except RuntimeError:
            if not errors:  # refused without any server failure: a real error
                raise
    raise AssertionError(f"{ext}: could not start")


@pytest.fixture(params=[
    pytest.param(("sqlite", 1), id="sqlite-1process"),
    pytest.param(("postgresql", 4), id="postgresql-4workers", marks=pytest.mark.postgres),
])
def server_setup(request, tmp_path):
    kind, workers = request.param
    url = None if kind == "sqlite" else request.getfixturevalue("pg_url")
    return kind, workers, url


@pytest.mark.slow
def test_sigkill_mid_study_loses_and_doubles_nothing(tmp_path, server_setup):
    kind, workers, db_url = server_setup
    run = make_fake_run(tmp_path / "run", images=("alpha", "beta", "gamma", "delta"))
    study = tmp_path / "study"
    # No validation questions: random answers would exclude people, and excluded people's
    # schedules stop counting for balance, which would blur the balance check.
    create_study(run, study, resolution=128, trials_per_participant=N_TRIALS, validation=0,
                 progress=False)
    server = ServerProcess(study, threads=8, workers=workers, db_url=db_url,
                           extra=("--no-start-limit",), log_path=tmp_path / "server.log").start()
    acked: dict[str, dict[int, str]] = {}
    errors: list[str] = []
    failures: list[BaseException] = []
    deadline = time.monotonic() + 300

    def person(ext: str, seed: int) -> None:
        rng = random.Random(seed)
        client = Participant(server.port, timeout=10)
        try:
            mine = acked.setdefault(_begin(client, ext, deadline, errors), {})
            while True:
                cur = _retrying(client.current, deadline, errors)
                if cur is None:
                    break
                index, _ = cur
                choice = rng.choice(("left", "right"))
                time.sleep(rng.uniform(0, 0.03))
                # Like a browser retry: the same answer again until the server replies.
                status = _retrying(lambda i=index, c=choice: client.answer(i, c), deadline, errors)
                if status == 303:
                    mine[index] = choice
                elif status != 429:
                    raise AssertionError(f"{ext} trial {index}: unexpected status {status}")
            _retrying(client.completion_code, deadline, errors)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
        finally:
            client.close()

    def n_acked() -> int:
        return sum(map(len, list(acked.values())))

    def wait_for(n: int) -> None:
        while n_acked() < n and time.monotonic() < deadline and not failures:
            time.sleep(0.01)

    threads = [threading.Thread(target=person, args=(f"p{i:03d}", i)) for i in range(N_PEOPLE)]
    for t in threads:
        t.start()
    total = N_PEOPLE * N_TRIALS
    replaced = None
    try:
        wait_for(total // 3)
        if workers > 1:
            # One worker dies (an OOM kill, say); the server starts another, nobody notices.
            victim = server.worker_pids()[0]
            os.kill(victim, signal.SIGKILL)
            time.sleep(1.0)
            replaced = server.worker_pids()
            assert victim not in replaced and len(replaced) == workers
            wait_for(2 * total // 3)
        acked_before_kill = n_acked()
        server.kill()  # the whole server, workers included
        time.sleep(1.0)
        server.start()
        for t in threads:
            t.join(max(1.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "participants did not finish"
    finally:
        server.stop()
    assert not failures, failures[:3]
    assert 0 < acked_before_kill < n_acked()
    assert errors, "the kills interrupted nobody; the test proved nothing"

    engine = create_engine(normalise_url(db_url or f"sqlite:///{study / 'instance' / 'survey.db'}"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT p.external_id, v.trial_index, v.choice FROM vote v "
                "JOIN participant p ON p.id = v.participant_id")).all()
            per_pair = conn.execute(text(
                "SELECT t.pair_id, count(*) FROM trial t WHERE t.kind = 'compare' "
                "GROUP BY t.pair_id")).all()
    finally:
        engine.dispose()
    stored = {(e, i): c for e, i, c in rows}
    assert len(stored) == len(rows), "an answer is stored twice"
    acknowledged = {(e, i): c for e, answers in acked.items() for i, c in answers.items()}
    # Everyone finished: every stored answer was acknowledged (a retry of an answer stored
    # just before a kill is acknowledged as a resubmission) and the other way round.
    assert stored == acknowledged
    finished = [e for e, answers in acked.items() if answers]
    assert len(finished) == N_PEOPLE
    counts = [n for _, n in per_pair]
    assert max(counts) - min(counts) <= BALANCE_BOUND, sorted(counts)
