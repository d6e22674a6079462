"""The Dask executor against real processes on 127.0.0.1: a ``dask scheduler`` and ``dask worker``
subprocesses (own working directories, one thread each, one with ``--resources GPU=1``).

All slow: starting a scheduler and workers takes seconds.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

pytest.importorskip("distributed", reason="the cluster extra (dask[distributed]) is not installed")

from cluster_helpers import DaskProcesses, fail_on_three, warm_here, was_warmed, where_am_i  # noqa: E402

from bench.cluster import DaskExecutor, parse_address  # noqa: E402
from bench.errors import UserError  # noqa: E402
from bench.executors import TaskFailed  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Scheduler + worker "cpu" + worker "gpu" (the GPU resource on a CPU stand-in)."""
    procs = DaskProcesses(tmp_path_factory.mktemp("dask"))
    try:
        procs.start_scheduler()
        procs.start_worker("cpu")
        procs.start_worker("gpu", "--resources", "GPU=1")
        procs.wait_workers(2)
        yield procs
    finally:
        procs.stop()


def _names(executor) -> dict[str, str]:
    info = executor.client.scheduler_info(n_workers=-1)["workers"]
    return {addr: w["name"] for addr, w in info.items()}


def test_gpu_tasks_go_to_gpu_workers_and_every_task_comes_back_once(cluster, tmp_path):
    tasks = list(range(12))
    with DaskExecutor(
        parse_address(cluster.address),
        tmp_path,
        group=lambda t: "even" if t % 2 == 0 else "odd",
        needs_gpu=lambda t: t % 2 == 0,
    ) as ex:
        names = _names(ex)
        got = list(ex.run(where_am_i, tasks))
        assert ex.status(every=0).startswith("workers 2 (")
    assert sorted(t for t, _ in got) == tasks  # each exactly once
    for task, out in got:
        assert out["task"] == task
        if task % 2 == 0:
            assert names[out["worker"]] == "gpu"
    assert {names[o["worker"]] for t, o in got if t % 2} <= {"cpu", "gpu"}
    assert not (tmp_path / ".cluster-probe").exists()  # the probe tidies up


def test_prepare_runs_on_every_worker_before_the_items(cluster, tmp_path):
    """The runner's warm-up (imports, metric models) runs once on each worker, before items."""
    with DaskExecutor(parse_address(cluster.address), tmp_path) as ex:
        ex.prepare(warm_here)
        on_workers = ex.client.run(was_warmed, -1)
        got = list(ex.run(was_warmed, range(6)))
    assert len(on_workers) == 2 and all(v["warmed"] for v in on_workers.values())
    assert sorted(t for t, _ in got) == list(range(6)) and all(o["warmed"] for _, o in got)


def test_an_exception_in_a_task_is_a_task_failed_outcome(cluster, tmp_path):
    with DaskExecutor(parse_address(cluster.address), tmp_path) as ex:
        got = dict(ex.run(fail_on_three, range(5)))
    assert isinstance(got[3], TaskFailed) and "three is not allowed" in got[3].error
    assert all(got[i] == {"task": i, "worker": got[i]["worker"]} for i in (0, 1, 2, 4))


def test_device_cuda_needs_a_gpu_worker(tmp_path, tmp_path_factory):
    procs = DaskProcesses(tmp_path_factory.mktemp("dask-nogpu"))
    try:
        procs.start_scheduler()
        procs.start_worker("cpu-only")
        procs.wait_workers(1)
        with pytest.raises(UserError) as err:
            with DaskExecutor(parse_address(procs.address), tmp_path, device="cuda"):
                pass
    finally:
        procs.stop()
    msg = str(err.value)
    assert "no worker has the GPU resource" in msg and "--resources GPU=1" in msg and "\n" not in msg


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_worker_that_cannot_see_the_run_folder_is_named(tmp_path, tmp_path_factory):
    """A worker whose filesystem has another (empty) disk mounted at the run folder's place,
    as on a machine without the shared mount: one line names that worker and the path."""
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("unprivileged mount namespaces are not allowed here")
    run_dir = tmp_path / "shared" / "run"
    run_dir.mkdir(parents=True)
    procs = DaskProcesses(tmp_path_factory.mktemp("dask-blind"))
    try:
        procs.start_scheduler()
        procs.start_worker("sees")
        # `unshare -rm` = own user + mount namespace; the tmpfs hides the real folder from it only.
        blind = [
            "unshare",
            "-rm",
            "sh",
            "-c",
            f'mount -t tmpfs none "{tmp_path / "shared"}" && exec "$0" "$@"',
        ]
        procs.start_worker("blind", prefix=blind)
        procs.wait_workers(2)
        blind_address = procs.worker_addresses()["blind"]
        with pytest.raises(UserError) as err:
            with DaskExecutor(parse_address(procs.address), run_dir):
                pass
    finally:
        procs.stop()
    msg = str(err.value)
    assert f"worker {blind_address} cannot read the run folder {run_dir}" in msg
    assert "\n" not in msg
