"""``hrbench run --cluster`` end to end on 127.0.0.1: same numbers as the local pool, unique
records, faults survived (worker, client and scheduler killed), one-line errors.

Most tests start Dask processes and are marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("distributed", reason="the cluster extra (dask[distributed]) is not installed")

# cluster_helpers also registers the test-only methods in this process (the client).
from cluster_helpers import MARKERS_ENV, SLOW_ENV, TESTS, DaskProcesses, free_port  # noqa: E402

import bench.cluster  # noqa: E402
from bench.cli import main  # noqa: E402

REPO = TESTS.parent


def _args(photo_dir: Path, run: Path, *extra: str, methods=("test-slow",)) -> list[str]:
    return [
        "run",
        "--images",
        str(photo_dir),
        "--out",
        str(run),
        "--resolutions",
        "32",
        "64",
        "--methods",
        *methods,
        "--no-lpips",
        "--no-plots",
        "-q",
        *extra,
    ]


def _cli(args, capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err: str) -> str:
    """The one ``hrbench: error:`` line (other libraries may log warnings around it)."""
    lines = [line for line in err.splitlines() if line.startswith("hrbench: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _records(run: Path) -> dict[str, tuple[float, str]]:
    """record file -> (mtime, text); not the temporary files a killed writer may leave."""
    paths = [p for p in run.glob("records/*/*/*.json") if not p.name.startswith(".")]
    return {str(p.relative_to(run)): (p.stat().st_mtime_ns, p.read_text()) for p in paths}


def _metrics(run: Path) -> pd.DataFrame:
    df = pd.read_csv(run / "metrics.csv")
    assert not df.duplicated(["method", "resolution", "image", "metric"]).any()
    return df.sort_values(["method", "resolution", "image", "metric"]).reset_index(drop=True)


def _items(run: Path) -> pd.DataFrame:
    items = pd.read_csv(run / "items.csv")
    assert not items.duplicated(["method", "resolution", "image"]).any()
    return items


# -- fast: one-line errors --------------------------------------------------------------------
@pytest.mark.parametrize("address", ["localhost:8786", "local:0", "tcp://h:0", "gpu-cluster"])
def test_bad_address_is_one_line_exit_2_before_any_work(address, photo_dir, tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = _cli(_args(photo_dir, run, "--cluster", address), capsys)
    assert code == 2
    line = _error_line(err)
    assert line.startswith("hrbench: error: --cluster") and address in line
    assert not run.exists()  # refused before preparing anything


def test_unreachable_scheduler_is_one_line_with_the_address(photo_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench.cluster, "CONNECT_TIMEOUT_S", 1.0)
    address = f"tcp://127.0.0.1:{free_port()}"
    code, out, err = _cli(_args(photo_dir, tmp_path / "run", "--cluster", address), capsys)
    assert code == 2
    assert _error_line(err).startswith(f"hrbench: error: --cluster {address}: cannot reach a Dask scheduler")


def test_slurm_without_a_cluster_table_is_one_line(photo_dir, tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text("[run]\nresolutions = [32]\n")
    code, out, err = _cli(
        _args(photo_dir, tmp_path / "run", "--config", str(config), "--cluster", "slurm"), capsys
    )
    assert code == 2 and "needs a [cluster] table" in _error_line(err)


# -- slow: LocalCluster -----------------------------------------------------------------------
@pytest.mark.slow
def test_local_cluster_gives_the_local_pools_numbers(photo_dir, tmp_path, capsys):
    pool, dask = tmp_path / "pool", tmp_path / "dask"
    methods = ("telea", "ns")
    code, _, err = _cli(_args(photo_dir, pool, "--jobs", "2", methods=methods), capsys)
    assert code == 0, err
    code, _, err = _cli(_args(photo_dir, dask, "--cluster", "local:2", methods=methods), capsys)
    assert code == 0, err
    a, b = _metrics(pool), _metrics(dask)
    assert len(a) > 0 and a.equals(b)  # identical, not merely close
    assert len(_items(dask)) == 10 and (_items(dask).status == "ok").all()
    info = json.loads((dask / "run.json").read_text())
    assert info["executor"]["kind"] == "dask" and info["executor"]["workers"] == 2


@pytest.mark.slow
def test_an_item_that_keeps_killing_workers_is_failed_after_bounded_retries(photo_dir, tmp_path, capsys):
    """LocalCluster restarts dead workers; Dask gives the item up after ``allowed_failures``
    deaths and the run records it as failed with the reason, and finishes the rest."""
    import dask

    run = tmp_path / "run"
    with dask.config.set({"distributed.worker.preload": ["cluster_helpers"]}):
        code, out, err = _cli(
            _args(
                photo_dir, run, "--cluster", "local:2", "--resolutions", "32", methods=("test-dies-on-img1",)
            ),
            capsys,
        )
    assert code == 1
    items = _items(run).set_index("image")
    assert items.loc["img1", "status"] == "failed" and "worker processes died" in items.loc["img1", "error"]
    assert (items.drop("img1").status == "ok").all() and len(items) == 3


# -- slow: a real dask scheduler and workers --------------------------------------------------
def _start(tmp_path_factory) -> DaskProcesses:
    """Scheduler + workers "a" and "b" (b with the GPU resource); items of test-slow pause
    0.4 s and leave markers naming their process (in ``procs.markers``)."""
    markers = tmp_path_factory.mktemp("markers")
    procs = DaskProcesses(tmp_path_factory.mktemp("dask"), {MARKERS_ENV: str(markers), SLOW_ENV: "0.4"})
    procs.markers = markers
    try:
        procs.start_scheduler()
        procs.start_worker("a")
        procs.start_worker("b", "--resources", "GPU=1")
        procs.wait_workers(2)
    except BaseException:
        procs.stop()
        raise
    return procs


@pytest.fixture(scope="module")
def shared_procs(tmp_path_factory):
    """One cluster for the tests that leave it intact (starting one costs seconds)."""
    procs = _start(tmp_path_factory)
    yield procs
    procs.stop()


@pytest.fixture
def dask_procs(shared_procs, monkeypatch):
    for p in shared_procs.markers.iterdir():
        p.unlink()
    for k in (MARKERS_ENV, SLOW_ENV):  # the in-process client registers test-slow too
        monkeypatch.setenv(k, shared_procs.env[k])
    return shared_procs


@pytest.fixture
def fresh_procs(tmp_path_factory, monkeypatch):
    """A cluster of its own, for tests that kill part of it."""
    procs = _start(tmp_path_factory)
    for k in (MARKERS_ENV, SLOW_ENV):
        monkeypatch.setenv(k, procs.env[k])
    yield procs
    procs.stop()


@pytest.mark.slow
def test_real_workers_complete_the_run_with_unique_records(dask_procs, photo_dir, tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = _cli(
        _args(photo_dir, run, "--cluster", dask_procs.address, methods=("test-slow", "telea")), capsys
    )
    assert code == 0, err
    items = _items(run)
    assert len(items) == 10 and (items.status == "ok").all()
    assert len(_records(run)) == 10
    # both workers took part, each in its own working directory; none wrote a record
    pids = {int(p.name.split("-")[0]) for p in dask_procs.markers.iterdir()}
    assert pids == {w.pid for w in dask_procs.workers}
    assert not any((dask_procs.root / name / "records").exists() for name in ("a", "b"))


@pytest.mark.slow
def test_worker_killed_mid_item_run_completes_each_item_once(fresh_procs, photo_dir, tmp_path, capsys):
    dask_procs = fresh_procs
    victim = dask_procs.workers[0]
    killed = threading.Event()

    def kill_when_busy():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed.is_set():
            if any(p.name.startswith(f"{victim.pid}-") for p in dask_procs.markers.iterdir()):
                victim.send_signal(signal.SIGKILL)  # mid-item: its marker is down, its pause not over
                killed.set()
                return
            time.sleep(0.05)

    threading.Thread(target=kill_when_busy, daemon=True).start()
    run = tmp_path / "run"
    code, out, err = _cli(_args(photo_dir, run, "--cluster", dask_procs.address), capsys)
    assert killed.is_set() and victim.wait(5) == -signal.SIGKILL
    assert code == 0, err
    items = _items(run)
    assert len(items) == 5 and (items.status == "ok").all()
    # the numbers equal a clean run's (here: in this process, no cluster)
    code, _, err = _cli(_args(photo_dir, tmp_path / "clean", "--jobs", "1"), capsys)
    assert code == 0, err
    assert _metrics(run).equals(_metrics(tmp_path / "clean"))


def _client_subprocess(args: list[str], env: dict) -> subprocess.Popen:
    code = f"import sys, cluster_helpers; from bench.cli import main; sys.exit(main({args!r}))"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, **env, "PYTHONPATH": str(TESTS)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(cond, timeout=240.0) -> None:  # generous: CI machines may be busy
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


@pytest.mark.slow
def test_client_killed_mid_run_rerun_resumes_with_nothing_redone(dask_procs, photo_dir, tmp_path, capsys):
    run = tmp_path / "run"
    args = _args(photo_dir, run, "--cluster", dask_procs.address, methods=("test-slow", "ns"))
    client = _client_subprocess(args, dask_procs.env)
    _wait_for(lambda: len(_records(run)) >= 3)
    client.send_signal(signal.SIGKILL)
    client.wait(10)
    before = _records(run)
    assert 3 <= len(before) < 10, "the kill should land mid-run"
    code, out, err = _cli(args, capsys)
    assert code == 0, err
    assert f"0 done, {len(before)} reused" not in err  # something was left to do
    assert f"{10 - len(before)} done, {len(before)} reused, 0 redone" in err
    after = _records(run)
    assert len(after) == 10 and all(after[k] == v for k, v in before.items())  # untouched
    assert (_items(run).status == "ok").all()


@pytest.mark.slow
def test_scheduler_lost_mid_run_stops_with_one_line_and_rerun_resumes(fresh_procs, photo_dir, tmp_path):
    dask_procs = fresh_procs
    run = tmp_path / "run"
    args = _args(photo_dir, run, "--cluster", dask_procs.address)
    client = _client_subprocess(args, dask_procs.env)
    _wait_for(lambda: len(_records(run)) >= 1)
    dask_procs.scheduler.send_signal(signal.SIGKILL)
    out, err = client.communicate(timeout=60)
    err = err.decode()
    assert client.returncode == 2, err
    line = _error_line(err)
    assert line.startswith(f"hrbench: error: --cluster {dask_procs.address}: lost the Dask scheduler mid-run")
    assert "rerun the same command to resume" in line
    done = _records(run)
    # a new scheduler on the same address and fresh workers: the rerun does only the rest
    dask_procs.stop()
    procs = DaskProcesses(dask_procs.root / "second", dask_procs.env)
    procs.port, procs.address = dask_procs.port, dask_procs.address
    try:
        procs.start_scheduler()
        procs.start_worker("c")
        procs.wait_workers(1)
        rerun = _client_subprocess(args, dask_procs.env)
        out, err = rerun.communicate(timeout=120)
    finally:
        procs.stop()
    assert rerun.returncode == 0, err.decode()
    assert f"{5 - len(done)} done, {len(done)} reused" in err.decode()


@pytest.mark.slow
def test_ctrl_c_cancels_the_remote_items(dask_procs, tmp_path):
    from conftest import smooth_photo
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(16):
        Image.fromarray(smooth_photo(40, 40, seed=i)).save(photos / f"p{i:02d}.png")
    run = tmp_path / "run"
    args = _args(photos, run, "--cluster", dask_procs.address, "--resolutions", "32")
    client = _client_subprocess(args, dask_procs.env)
    _wait_for(lambda: len(_records(run)) >= 1)
    client.send_signal(signal.SIGINT)
    out, err = client.communicate(timeout=30)
    assert client.returncode == 130, err.decode()
    time.sleep(1.5)  # items already running finish (a thread cannot be interrupted) ...
    started = len(list(dask_procs.markers.iterdir()))
    time.sleep(2.0)  # ... but nothing new starts
    assert len(list(dask_procs.markers.iterdir())) == started
    assert started < 16


@pytest.mark.slow
def test_local_cluster_workers_die_with_a_killed_client(photo_dir, tmp_path):
    psutil = pytest.importorskip("psutil")
    run = tmp_path / "run"
    args = _args(photo_dir, run, "--cluster", "local:2")
    client = _client_subprocess(args, {SLOW_ENV: "1.0"})
    _wait_for(lambda: len(_records(run)) >= 1)
    children = psutil.Process(client.pid).children(recursive=True)
    assert len(children) >= 2  # the two Dask worker processes (and multiprocessing's tracker)
    client.send_signal(signal.SIGKILL)
    client.wait(10)
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.cmdline()[:3] for p in alive]
