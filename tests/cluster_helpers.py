"""Helpers for the Dask cluster tests (not part of the package).

Imported by the tests and, through ``--preload cluster_helpers``, by every Dask worker, so
that the test-only methods below are registered on both sides.

- ``test-slow``: fills the hole with the mean colour after a pause; before the pause it
  drops a marker file naming its process, so a test can kill the worker mid-item.
- ``test-gpu-standin``: a CPU method that declares ``uses_gpu`` (placement tests).
- ``test-dies-on-img1``: kills the worker process running it on the item img1.
- :class:`DaskProcesses`: a real ``dask scheduler`` and ``dask worker`` processes on
  127.0.0.1, each worker in its own working directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.methods import Inpainter, register

TESTS = Path(__file__).resolve().parent
MARKERS_ENV = "HRBENCH_TEST_MARKERS"  # folder for test-slow's "started" markers
SLOW_ENV = "HRBENCH_TEST_SLOW_S"  # test-slow's pause per item, seconds


@register("test-slow")
class SlowMean(Inpainter):
    """Mean colour fill after a pause (test-only)."""

    def set_item(self, image_id, resolution):
        self.current = f"{image_id}-{resolution}"

    def _inpaint(self, image, mask):
        folder = os.environ.get(MARKERS_ENV)
        if folder:
            Path(folder, f"{os.getpid()}-{self.current}").touch()
        time.sleep(float(os.environ.get(SLOW_ENV, "0.3")))
        out = image.copy()
        out[mask] = image[~mask].mean(axis=0).astype(np.uint8)
        return out


@register("test-gpu-standin")
class GpuStandIn(SlowMean):
    """Declares a GPU; runs on the CPU (test-only)."""

    uses_gpu = True


@register("test-dies-on-img1")
class DiesOnImg1(SlowMean):
    """Kills its own worker process on the item img1 (as an out-of-memory kill would)."""

    def _inpaint(self, image, mask):
        if self.current.startswith("img1-"):
            os._exit(137)
        return super()._inpaint(image, mask)


def where_am_i(task) -> dict:
    """Executor-level task: which process ran it."""
    return {"task": task, "pid": os.getpid()}


_WARMED: list[int] = []


def warm_here() -> None:
    """Executor-level warm-up: remember that this process was prepared."""
    _WARMED.append(os.getpid())


def was_warmed(task) -> dict:
    """Executor-level task: was this process prepared before it ran the task?"""
    return {"task": task, "warmed": os.getpid() in _WARMED}


def fail_on_three(task) -> dict:
    if task == 3:
        raise ValueError("three is not allowed")
    return {"task": task}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask_bin() -> str:
    exe = Path(sys.executable).with_name("dask")
    return str(exe) if exe.exists() else shutil.which("dask") or "dask"


class DaskProcesses:
    """``dask scheduler`` + ``dask worker`` subprocesses on 127.0.0.1 (no nanny: ``kill -9`` of
    a worker is the death of that worker, not a restart)."""

    def __init__(self, root: Path, env: dict | None = None):
        self.root = Path(root)
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
            **(env or {}),
        }
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    def _spawn(self, args: list[str], cwd: Path, name: str, prefix: list[str] = ()) -> subprocess.Popen:
        cwd.mkdir(parents=True, exist_ok=True)
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115  (closed with the process)
        return subprocess.Popen(
            [*prefix, _dask_bin(), *args], cwd=cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    def start_scheduler(self) -> None:
        self.scheduler = self._spawn(
            ["scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--dashboard-address", ":0"],
            self.root / "scheduler",
            "scheduler",
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"dask scheduler did not listen on {self.address}; see {self.root}/scheduler.log")

    def start_worker(self, name: str, *extra: str, prefix: list[str] = ()) -> subprocess.Popen:
        proc = self._spawn(
            [
                "worker",
                self.address,
                "--nthreads",
                "1",
                "--no-nanny",
                "--name",
                name,
                "--host",
                "127.0.0.1",
                "--preload",
                "cluster_helpers",
                *extra,
            ],
            self.root / name,
            name,
            prefix,
        )
        self.workers.append(proc)
        return proc

    def wait_workers(self, n: int, timeout: float = 60) -> None:
        from distributed import Client

        with Client(self.address, timeout=10) as client:
            client.wait_for_workers(n, timeout=timeout)

    def worker_addresses(self) -> dict[str, str]:
        """``{worker name: address}`` of the workers connected now."""
        from distributed import Client

        with Client(self.address, timeout=10) as client:
            info = client.scheduler_info(n_workers=-1)["workers"]
        return {w["name"]: addr for addr, w in info.items()}

    def stop(self) -> None:
        """SIGTERM, then SIGKILL what has not exited within a few seconds (tests own these)."""
        procs = [p for p in [*self.workers, self.scheduler] if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 3
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
