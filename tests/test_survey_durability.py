"""Durability on a real server: SIGKILL mid-study, restart, no acknowledged answer lost or doubled."""

from __future__ import annotations

import http.client
import random
import threading
import time

import pytest
from survey_helpers import Participant, ServerProcess, make_fake_run

from survey_app.export import export_votes
from survey_app.study import create_study

N_PEOPLE = 60
N_TRIALS = 10


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


@pytest.mark.slow
def test_sigkill_mid_study_loses_and_doubles_nothing(tmp_path):
    run = make_fake_run(tmp_path / "run", images=("alpha", "beta", "gamma", "delta"))
    study = tmp_path / "study"
    create_study(run, study, resolution=128, trials_per_participant=N_TRIALS, validation=1,
                 progress=False)
    server = ServerProcess(study, threads=8, extra=("--no-start-limit",),
                           log_path=tmp_path / "server.log").start()
    acked: dict[str, dict[int, str]] = {f"p{i:03d}": {} for i in range(N_PEOPLE)}
    errors: list[str] = []
    failures: list[BaseException] = []
    deadline = time.monotonic() + 240

    def person(ext: str, seed: int) -> None:
        rng = random.Random(seed)
        client = Participant(server.port, external_id=ext, timeout=10)
        try:
            _retrying(client.begin, deadline, errors)
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
                    acked[ext][index] = choice
                elif status != 429:
                    raise AssertionError(f"{ext} trial {index}: unexpected status {status}")
            client.completion_code()
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=person, args=(ext, i)) for i, ext in enumerate(acked)]
    for t in threads:
        t.start()
    try:
        # Kill once a third of all answers are acknowledged, with clients still sending.
        total = N_PEOPLE * N_TRIALS
        while sum(map(len, acked.values())) < total // 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        acked_before_kill = sum(map(len, acked.values()))
        server.kill()
        time.sleep(1.0)
        server.start()
        for t in threads:
            t.join(max(1.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "participants did not finish"
    finally:
        server.stop()
    assert not failures, failures[:3]
    assert 0 < acked_before_kill < total
    assert errors, "the kill interrupted nobody; the test proved nothing"

    df = export_votes(study)
    assert not df.duplicated(["participant", "trial"]).any()
    stored = {(e, t): c for e, t, c in zip(df["external_id"], df["trial"], df["choice"],
                                           strict=True)}
    for ext, answers in acked.items():
        for index, choice in answers.items():
            assert stored.get((ext, index)) == choice, (ext, index)
    # Everyone finished, so every trial has exactly one stored answer and one acknowledgement.
    assert len(df) == total == sum(map(len, acked.values()))
    assert df.groupby("external_id").size().eq(N_TRIALS).all()
