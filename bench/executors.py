"""Where the benchmark's items run: the executor interface and the local implementations.

The runner plans a list of picklable tasks, hands them with a module-level function ``fn``
to an :class:`Executor` and receives ``(task, outcome)`` pairs in the order they finish.
``outcome`` is whatever ``fn(task)`` returned, or a :class:`TaskFailed` when the task did not
return (``fn`` raised, or the worker running it died). Executors never write anything into
the run folder themselves; only the runner, on the client side, writes records.

Implementations: :class:`InlineExecutor` (in this process, one at a time),
:class:`LocalPool` (worker processes on this machine) and, in ``bench.cluster``, Dask.

The local pool is built on one pipe per worker rather than on shared queues, so that
- a worker that dies (out of memory, ``kill -9``) costs only its own task, reported as
  :class:`TaskFailed`; a fresh worker takes its place;
- ``cancel`` (Ctrl-C) terminates the workers at once instead of waiting for running items;
- workers exit when their parent dies, whatever killed it (``SIGKILL`` included): each
  asks the kernel for ``SIGKILL`` on parent death (Linux ``PR_SET_PDEATHSIG``) and also runs
  a watchdog thread that polls the parent's pid (other systems, and the window before the
  ``prctl`` call). With the workers gone, multiprocessing's resource tracker sees its last
  pipe close and exits too.
"""

from __future__ import annotations

import abc
import ctypes
import ctypes.util
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

# How often a worker's watchdog checks that its parent is alive, and how long ``cancel``
# waits for terminated workers before killing them.
WATCHDOG_INTERVAL_S = 0.5
TERMINATE_GRACE_S = 2.0


@dataclass
class TaskFailed:
    """Outcome of a task that did not return a result."""

    error: str  # one line: exception type and message, or how the worker died
    detail: str = ""  # the traceback, when there is one


class Executor(abc.ABC):
    """Runs ``fn(task)`` for every task somewhere and yields ``(task, outcome)`` as they finish.

    Use as a context manager: leaving the block normally calls :meth:`close`; leaving it
    with an exception (Ctrl-C included) calls :meth:`cancel`, so no worker outlives the run.
    """

    kind: ClassVar[str] = ""

    @abc.abstractmethod
    def run(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
        """Submit ``tasks`` and yield ``(task, fn(task) or TaskFailed)`` in finishing order.

        ``fn`` must be importable by name on the workers (a module-level function) and the
        tasks and results picklable. Every task is yielded exactly once unless the run is
        cancelled.
        """

    @abc.abstractmethod
    def cancel(self) -> None:
        """Stop now: drop pending tasks, stop running ones, release workers. Idempotent."""

    def close(self) -> None:
        """Release workers after a finished run. Idempotent."""
        self.cancel()

    def prepare(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` once on every worker before its first item (imports, metric models),
        where a start-up cost belongs on this executor. The local ones run it with the
        first item instead: their workers start with the run anyway."""
        return None

    def describe(self) -> dict:
        """What ran the items, for run.json (kind, number of workers, address …)."""
        return {"kind": self.kind}

    def status(self) -> str:
        """A short live state for the progress bar (a cluster: workers busy/idle); "" if none."""
        return ""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.cancel()


def _failed(exc: BaseException) -> TaskFailed:
    return TaskFailed(f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500], traceback.format_exc())


class InlineExecutor(Executor):
    """Runs the tasks one after the other in this process (``--jobs 1``, debugging)."""

    kind = "inline"

    def __init__(self) -> None:
        self._cancelled = False

    def run(self, fn, tasks):
        self._cancelled = False
        for task in tasks:
            if self._cancelled:
                return
            try:
                outcome = fn(task)
            except Exception as exc:
                outcome = _failed(exc)
            yield task, outcome

    def cancel(self) -> None:
        self._cancelled = True

    def describe(self) -> dict:
        return {"kind": self.kind, "workers": 1}


# -- worker process side -------------------------------------------------------------------------
def _set_parent_death_signal() -> None:
    """Ask Linux to SIGKILL this process when its parent dies; no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1  # from <linux/prctl.h>
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no libc by that name: the watchdog still covers it
        pass


def _watch_parent(parent_pid: int) -> None:
    stop = threading.Event()
    while not stop.wait(WATCHDOG_INTERVAL_S):
        if os.getppid() != parent_pid:
            os._exit(1)  # parent gone: nothing to report to, leave at once


def _exit_on_sigterm(signum, frame) -> None:
    sys.exit(0)


def _worker_main(conn: mpc.Connection, parent_pid: int, threads: int | None) -> None:
    """Loop of one worker: receive ``(fn, task_id, task)``, send ``(task_id, outcome)``."""
    _set_parent_death_signal()
    # Ctrl-C reaches the whole process group; only the parent decides what happens then.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # ``cancel`` terminates: leave through SystemExit so that finalizers run (they unlink the
    # named semaphores that e.g. tqdm creates, which the resource tracker would warn about).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if os.getppid() != parent_pid:  # the parent died before the prctl call took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if threads:
        limit_threads(threads)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        fn, task_id, task = msg
        try:
            outcome = fn(task)
        except Exception as exc:
            outcome = _failed(exc)
        try:
            conn.send((task_id, outcome))
        except (BrokenPipeError, OSError):
            return
        except Exception as exc:  # an unpicklable result: report it rather than hang
            conn.send((task_id, _failed(exc)))


def limit_threads(threads: int) -> None:
    """Keep this process's numeric libraries to ``threads`` threads (several workers share a machine)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


# -- local pool, parent side -------------------------------------------------------------------
class _Worker:
    def __init__(self, ctx, threads: int | None) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(
            target=_worker_main, args=(child, os.getpid(), threads), daemon=True, name="hrbench-worker"
        )
        self.proc.start()
        child.close()
        self.task_id: int | None = None  # what it is running now

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass


class LocalPool(Executor):
    """``workers`` processes on this machine (``spawn``: forking after torch/OpenCV start
    their threads is unsafe). Each worker keeps its state (e.g. loaded models) between tasks.
    """

    kind = "local"

    def __init__(self, workers: int, threads_per_worker: int | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.threads = threads_per_worker
        self._ctx = mp.get_context("spawn")
        self._pool: list[_Worker] = []

    def describe(self) -> dict:
        return {"kind": self.kind, "workers": self.workers, "threads_per_worker": self.threads}

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers (tests use them to check clean shutdown)."""
        return [w.proc.pid for w in self._pool if w.proc.pid is not None]

    def run(self, fn, tasks):
        tasks = list(tasks)
        pending = list(range(len(tasks)))[::-1]  # popped from the end: original order
        running: dict[int, _Worker] = {}
        while len(self._pool) < min(self.workers, len(tasks)):
            self._pool.append(_Worker(self._ctx, self.threads))

        def feed(w: _Worker) -> None:
            if pending:
                w.task_id = pending.pop()
                running[w.task_id] = w
                w.conn.send((fn, w.task_id, tasks[w.task_id]))

        for w in self._pool:
            feed(w)
        while running:
            by_conn = {w.conn: w for w in running.values()}
            by_sentinel = {w.proc.sentinel: w for w in running.values()}
            ready = mpc.wait([*by_conn, *by_sentinel])
            for obj in ready:
                w = by_conn.get(obj) or by_sentinel.get(obj)
                if w is None or w.task_id is None:
                    continue
                task_id = w.task_id
                try:
                    got_id, outcome = w.conn.recv() if obj is w.conn or w.conn.poll() else (None, None)
                except (EOFError, OSError):
                    got_id = None
                del running[task_id]
                w.task_id = None
                if got_id != task_id:  # the worker died while running this task
                    w.proc.join(TERMINATE_GRACE_S)
                    outcome = TaskFailed(
                        f"worker process died (exit code {w.proc.exitcode}) while running it"
                    )
                    w.conn.close()
                    self._pool.remove(w)
                    w = _Worker(self._ctx, self.threads)
                    self._pool.append(w)
                feed(w)
                yield tasks[task_id], outcome

    def close(self) -> None:
        for w in self._pool:
            w.stop()
        for w in self._pool:
            w.proc.join(TERMINATE_GRACE_S)
        self.cancel()

    def cancel(self) -> None:
        for w in self._pool:
            if w.proc.is_alive():
                w.proc.terminate()
        for w in self._pool:
            w.proc.join(TERMINATE_GRACE_S)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
            w.conn.close()
        self._pool.clear()


def local_executor(jobs: int, n_tasks: int) -> Executor:
    """The executor for ``--jobs``: inline for one job (or one task), else a local pool."""
    if jobs <= 1 or n_tasks <= 1:
        return InlineExecutor()
    jobs = min(jobs, n_tasks)
    return LocalPool(jobs, threads_per_worker=max(1, (os.cpu_count() or 1) // jobs))
