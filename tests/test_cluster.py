"""The Dask executor's fast parts: --cluster addresses, the [cluster] SLURM table, connection errors.

The SLURM tests check the settings -> ``SLURMCluster`` arguments and the job script it renders;
nothing here (or anywhere in the tests) submits to a real SLURM queue.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

pytest.importorskip("distributed", reason="the cluster extra (dask[distributed]) is not installed")

from cluster_helpers import free_port  # noqa: E402

from bench.cluster import (  # noqa: E402
    ClusterAddress,
    DaskExecutor,
    parse_address,
    slurm_cluster_kwargs,
    slurm_settings,
)
from bench.errors import UserError  # noqa: E402


@pytest.mark.parametrize(
    ("text", "kind", "workers"),
    [
        ("tcp://127.0.0.1:8786", "scheduler", 0),
        ("tcp://node-17.cluster.example:8786", "scheduler", 0),
        ("tcp://[::1]:8786", "scheduler", 0),
        ("local:1", "local", 1),
        ("local:12", "local", 12),
        (" slurm ", "slurm", 0),
    ],
)
def test_parse_address_accepts(text, kind, workers):
    addr = parse_address(text)
    assert (addr.kind, addr.workers) == (kind, workers)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("127.0.0.1:8786", "not a cluster address"),
        ("tcp://127.0.0.1", "not a cluster address"),
        ("tcp://127.0.0.1:99999", "not a cluster address"),
        ("http://127.0.0.1:8786", "not a cluster address"),
        ("local:0", "whole number >= 1"),
        ("local:two", "whole number >= 1"),
        ("local", "not a cluster address"),
        ("pbs", "not a cluster address"),
    ],
)
def test_parse_address_refuses_with_one_line(text, says):
    with pytest.raises(UserError) as err:
        parse_address(text)
    msg = str(err.value)
    assert says in msg and text.strip() in msg and "\n" not in msg


SLURM = {
    "queue": "gpu",
    "account": "vision-lab",
    "walltime": "02:00:00",
    "cores": 8,
    "memory": "32GB",
    "gpus": 1,
    "jobs": 4,
}


def test_slurm_settings_to_cluster_arguments_gpu_job():
    s = slurm_settings(SLURM, "run.toml")
    kw = slurm_cluster_kwargs(s)
    assert s["jobs"] == 4  # goes to cluster.scale(jobs=...), not to the constructor
    assert kw == {
        "cores": 8,
        "memory": "32GB",
        "processes": 1,  # one worker owns the job's GPU
        "queue": "gpu",
        "account": "vision-lab",
        "walltime": "02:00:00",
        "job_extra_directives": ["--gres=gpu:1"],
        "worker_extra_args": ["--resources", "GPU=1"],
    }


def test_slurm_settings_cpu_job_defaults():
    s = slurm_settings({"cores": 16, "memory": "64GB", "job_extra": ["--constraint=avx2"]}, "run.toml")
    kw = slurm_cluster_kwargs(s)
    assert s["jobs"] == 1 and s["gpus"] == 0
    assert kw["processes"] == 16  # one single-threaded worker per core
    assert kw["job_extra_directives"] == ["--constraint=avx2"]
    assert kw["worker_extra_args"] == []
    assert "queue" not in kw and "account" not in kw


@pytest.mark.parametrize(
    ("table", "says"),
    [
        (None, "needs a [cluster] table"),
        ({}, "needs a [cluster] table"),
        ({"cores": 4}, "needs 'memory'"),
        ({"cores": 4, "memory": "8GB", "partition": "x"}, "unknown key 'partition'"),
        ({"cores": "four", "memory": "8GB"}, "cores must be int"),
        ({"cores": True, "memory": "8GB"}, "cores must be int"),
        ({"cores": 0, "memory": "8GB"}, "cores must be >= 1"),
        ({"cores": 4, "memory": "8GB", "gpus": 2}, "gpus must be 0 or 1"),
        ({"cores": 4, "memory": "8GB", "walltime": "2h"}, "walltime must look like HH:MM:SS"),
        ({"cores": 4, "memory": "8GB", "job_extra": "--x"}, "job_extra must be list"),
    ],
)
def test_slurm_settings_refused_with_one_line(table, says):
    with pytest.raises(UserError) as err:
        slurm_settings(table, "run.toml")
    assert says in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_slurm_job_script_carries_the_settings():
    """dask-jobqueue renders the sbatch script from our arguments (no queue is contacted)."""
    from dask_jobqueue import SLURMCluster

    kw = slurm_cluster_kwargs(slurm_settings(SLURM, "run.toml"))
    with SLURMCluster(**kw, scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"}) as c:
        script = c.job_script()
    for line in ("#SBATCH -p gpu", "#SBATCH -A vision-lab", "#SBATCH -t 02:00:00", "#SBATCH --gres=gpu:1"):
        assert line in script
    assert "--cpus-per-task=8" in script
    assert "--resources GPU=1" in script


def test_unreachable_scheduler_is_one_line_with_the_address(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(UserError) as err:
        with DaskExecutor(parse_address(address), tmp_path, connect_timeout=1):
            pass
    msg = str(err.value)
    assert address in msg and "cannot reach a Dask scheduler" in msg and "\n" not in msg
    assert time.monotonic() - t0 < 30  # the short connect timeout, not Dask's default 30 s + retries


def test_unreachable_scheduler_is_reported_before_the_run_writes_anything(tmp_path, capsys):
    from conftest import smooth_photo
    from PIL import Image

    from bench.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(smooth_photo(48, 48, seed=1)).save(photos / "img0.png")
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    rc = main(["run", "--images", str(photos), "--out", str(tmp_path / "run"), "--methods", "telea",
               "--resolutions", "32", "--metrics", "l1", "--cluster", address, "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and address in err and "cannot reach a Dask scheduler" in err
    assert not (tmp_path / "run" / "data").exists() and not (tmp_path / "run" / "run.json").exists()


def test_a_port_that_is_not_dask_is_one_line(tmp_path):
    """Something else answers on the port (here: a server that sends an HTTP reply)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 4)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        with pytest.raises(UserError) as err:
            with DaskExecutor(
                ClusterAddress("scheduler", f"tcp://127.0.0.1:{port}"), tmp_path, connect_timeout=1
            ):
                pass
    finally:
        srv.close()
    assert f"tcp://127.0.0.1:{port}" in str(err.value) and "\n" not in str(err.value)


def test_config_file_cluster_table_and_address(tmp_path):
    from bench.runner import RunConfig, make_executor

    cfg_path = tmp_path / "run.toml"
    cfg_path.write_text(
        '[run]\nresolutions = [1024]\ncluster = "slurm"\n\n'
        '[cluster]\nqueue = "cpu"\ncores = 32\nmemory = "64GB"\njobs = 8\n'
    )
    cfg = RunConfig.from_toml(cfg_path)
    assert cfg.cluster == "slurm"
    assert cfg.cluster_table == {"queue": "cpu", "cores": 32, "memory": "64GB", "jobs": 8}
    ex = make_executor(cfg, tmp_path, "cpu", n_tasks=5)  # built, not started: nothing submitted
    assert isinstance(ex, DaskExecutor) and ex.slurm == cfg.cluster_table and ex.client is None

    # keys at the top level (no [run] table): `cluster` is then the address
    cfg_path.write_text('resolutions = [1024]\ncluster = "local:3"\n')
    cfg = RunConfig.from_toml(cfg_path)
    assert (cfg.cluster, cfg.cluster_table) == ("local:3", {})
    assert make_executor(cfg, tmp_path, "cpu", n_tasks=0).kind != "dask"  # nothing to do: no cluster


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[run]\ncluster = "slurm"\n', "needs a [cluster] table"),
        ('[run]\ncluster = "pbs"\n', "not a cluster address"),
        ('[run]\n[cluster]\ncores = 4\nmemory = "8GB"\nqueues = "x"\n', "unknown key 'queues'"),
    ],
)
def test_config_file_cluster_mistakes_are_one_line(tmp_path, text, says):
    from bench.runner import RunConfig

    cfg_path = tmp_path / "run.toml"
    cfg_path.write_text(text)
    with pytest.raises(UserError) as err:
        RunConfig.from_toml(cfg_path)
    assert says in str(err.value) and "\n" not in str(err.value)
