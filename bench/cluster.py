"""Run benchmark items on a Dask cluster (``hrbench run --cluster ADDRESS``).

ADDRESS is ``tcp://HOST:PORT`` (a running ``dask scheduler``), ``local:N`` (a Dask
LocalCluster of N one-thread worker processes on this machine) or ``slurm`` (a
``dask_jobqueue.SLURMCluster`` set up from the ``[cluster]`` table of the run's TOML file).

The client plans and writes every record; workers only compute. They read inputs from and
write outputs to the run folder, which must therefore be on storage that every worker sees:
a probe on each worker checks that before any item is sent. Dask is the optional ``cluster``
extra, so it is imported only here and only when a cluster is asked for.
"""

from __future__ import annotations

import logging
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .errors import UserError
from .executors import Executor, TaskFailed, _failed, limit_threads

log = logging.getLogger(__name__)

USAGE = "use tcp://HOST:PORT (a running dask scheduler), local:N (N worker processes here) or slurm"
_TCP = re.compile(r"^tcp://(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
PROBE_DIR = ".cluster-probe"
# Seconds to reach a tcp:// scheduler before giving up with one line (Dask's default is 30 s
# plus retries: a typo in the address should not cost half a minute).
CONNECT_TIMEOUT_S = 10.0
SLURM_WAIT_S = 3600.0  # for the first SLURM job to leave the queue and its worker to join


class ClusterLost(UserError):
    """The scheduler went away mid-run; finished items are kept and a rerun resumes."""


@dataclass(frozen=True)
class ClusterAddress:
    kind: str  # "scheduler" (tcp://), "local" or "slurm"
    text: str  # as the user wrote it
    workers: int = 0  # N of local:N


def parse_address(text: str) -> ClusterAddress:
    """Validate a ``--cluster`` value; ``UserError`` with the accepted forms otherwise."""
    text = str(text).strip()
    if text == "slurm":
        return ClusterAddress("slurm", text)
    if text.startswith("local:"):
        n = text.partition(":")[2]
        if n.isdigit() and int(n) >= 1:
            return ClusterAddress("local", text, int(n))
        raise UserError(f"--cluster {text}: N in local:N must be a whole number >= 1, e.g. local:2")
    m = _TCP.match(text)
    if m and 0 < int(m.group(2)) < 65536:
        return ClusterAddress("scheduler", text)
    raise UserError(f"--cluster {text!r}: not a cluster address; {USAGE}")


def check_reachable(address: ClusterAddress, timeout: float = 5.0) -> None:
    """For ``tcp://``: one clear line when nothing accepts connections there, checked before a
    run writes anything (the full Dask handshake comes later, in ``DaskExecutor.start``)."""
    if address.kind != "scheduler":
        return
    host, port = _TCP.match(address.text).groups()
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(
            f"--cluster {address.text}: cannot reach a Dask scheduler there ({type(exc).__name__}: "
            f"{str(exc)[:120]}); start one with `dask scheduler` or fix the address"
        ) from None


# -- SLURM ------------------------------------------------------------------------------------
# key -> (type, meaning); the [cluster] table of the run's TOML file.
SLURM_KEYS: dict[str, tuple[type, str]] = {
    "queue": (str, "partition (sbatch -p)"),
    "account": (str, "account to charge (sbatch -A)"),
    "walltime": (str, "time limit per job, HH:MM:SS"),
    "cores": (int, "CPU cores per job"),
    "memory": (str, "memory per job, e.g. '16GB'"),
    "gpus": (int, "GPUs per job: 0 or 1 (ask for more jobs to get more GPUs)"),
    "jobs": (int, "number of jobs to submit"),
    "processes": (int, "worker processes per job (default: cores, or 1 with a GPU)"),
    "interface": (str, "network interface workers listen on, e.g. 'ib0'"),
    "job_extra": (list, "further #SBATCH lines, e.g. ['--constraint=avx2']"),
}
_SLURM_REQUIRED = ("cores", "memory")


def slurm_settings(table: dict | None, where: str) -> dict:
    """Check the ``[cluster]`` table; return it with defaults filled in."""
    if not table:
        raise UserError(
            f"--cluster slurm needs a [cluster] table in the run's --config file "
            f"(at least: {', '.join(_SLURM_REQUIRED)}; keys: {', '.join(SLURM_KEYS)})"
        )
    unknown = sorted(set(table) - set(SLURM_KEYS))
    if unknown:
        raise UserError(
            f"{where}: [cluster] has unknown key {unknown[0]!r}; known keys: {', '.join(SLURM_KEYS)}"
        )
    missing = [k for k in _SLURM_REQUIRED if k not in table]
    if missing:
        raise UserError(f"{where}: [cluster] needs {missing[0]!r} ({SLURM_KEYS[missing[0]][1]})")
    out = {"jobs": 1, "gpus": 0, **table}
    for key, value in out.items():
        kind, meaning = SLURM_KEYS[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is list:
            ok = ok and all(isinstance(v, str) for v in value)
        if not ok:
            raise UserError(f"{where}: [cluster] {key} must be {kind.__name__} ({meaning}), got {value!r}")
    for key in ("cores", "jobs", "processes"):
        if key in out and out[key] < 1:
            raise UserError(f"{where}: [cluster] {key} must be >= 1, got {out[key]}")
    if out["gpus"] not in (0, 1):
        raise UserError(
            f"{where}: [cluster] gpus must be 0 or 1 (each job is one GPU worker; raise jobs for more GPUs)"
        )
    if "walltime" in out and not re.fullmatch(r"(\d+-)?\d{1,3}:\d{2}(:\d{2})?", out["walltime"]):
        raise UserError(f"{where}: [cluster] walltime must look like HH:MM:SS, got {out['walltime']!r}")
    return out


def slurm_cluster_kwargs(settings: dict) -> dict:
    """``SLURMCluster(**kwargs)`` for checked settings (``jobs`` goes to ``scale``, not here).

    One thread per worker process: methods keep per-item state, so items of one method never
    share a process concurrently. A GPU job runs one worker that owns the GPU resource.
    """
    gpus = settings["gpus"]
    kw = {
        "cores": settings["cores"],
        "memory": settings["memory"],
        "processes": settings.get("processes", 1 if gpus else settings["cores"]),
        "job_extra_directives": list(settings.get("job_extra", [])),
        "worker_extra_args": [],
    }
    for key in ("queue", "account", "walltime", "interface"):
        if key in settings:
            kw[key] = settings[key]
    if gpus:
        kw["job_extra_directives"].append(f"--gres=gpu:{gpus}")
        kw["worker_extra_args"] += ["--resources", f"GPU={gpus}"]
    return kw


# -- worker side ------------------------------------------------------------------------------
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _run_remote(fn: Callable, task, group: str) -> tuple[object, str]:
    """Run ``fn(task)`` on a worker; return its outcome and the worker's address.

    Items of one group (one loaded method) take turns inside a worker process, which may run
    several threads: the method instance keeps per-item state and is loaded once, not once
    per thread. An exception becomes a :class:`TaskFailed` here, where its traceback exists.
    """
    from distributed import get_worker

    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(group, threading.Lock())
    with lock:
        try:
            outcome = fn(task)
        except Exception as exc:
            outcome = _failed(exc)
    return outcome, get_worker().address


def _probe(run_dir: str, token: str, needs_cuda: bool = False, dask_worker=None) -> dict:
    """On a worker: can it read the client's token in the run folder and write its own?

    Also keeps the worker's numeric libraries to one thread per Dask thread (each runs one
    item at a time; several workers usually share a machine), as the local pool does.
    """
    limit_threads(1)
    folder = Path(run_dir) / PROBE_DIR
    out = {"version": __version__, "error": "", "file": "", "cuda": None}
    out["gpu"] = dask_worker.state.total_resources.get("GPU", 0) > 0
    try:
        seen = (folder / f"{token}.client").read_text()
    except OSError as exc:
        out["error"] = f"cannot read the run folder {run_dir} ({exc.strerror or exc})"
        return out
    if seen != token:
        out["error"] = f"sees a different {run_dir} than the client (not the same shared folder)"
        return out
    out["file"] = f"{token}.{re.sub(r'[^A-Za-z0-9]+', '_', dask_worker.address)}"
    try:
        (folder / out["file"]).write_text(token)
    except OSError as exc:
        out["error"] = f"cannot write to the run folder {run_dir} ({exc.strerror or exc})"
        return out
    if needs_cuda and out["gpu"]:
        try:
            import torch

            out["cuda"] = bool(torch.cuda.is_available())
        except ImportError:
            out["cuda"] = False
    return out


def _release(release: Callable[[], None] | None) -> None:
    """On a worker after a run: drop the per-group locks and the caller's cached state."""
    with _LOCKS_GUARD:
        _LOCKS.clear()
    if release is not None:
        release()


# -- client side ------------------------------------------------------------------------------
def _dashboard_available() -> bool:
    try:
        import bokeh  # noqa: F401  (the Dask dashboard needs it)
    except ImportError:
        return False
    return True


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise UserError(
            "--cluster needs Dask: pip install 'hrbench[cluster]' (dask[distributed], dask-jobqueue)"
        ) from None
    return distributed


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text)


class DaskExecutor(Executor):
    """Items on a Dask cluster. Connects (or starts the cluster) and probes the workers on
    entering the ``with`` block.

    ``group(task)`` names the loaded model a task needs (its method identity): groups are
    scheduled one after the other, so that a worker does not swap between large models, and
    items of one group never run concurrently inside one worker process.
    ``needs_gpu(task)`` tasks go only to workers with the ``GPU`` resource.
    ``release()``, a module-level function, runs on every worker after the run (free models).
    ``connect_timeout``: seconds to reach a ``tcp://`` scheduler (default ``CONNECT_TIMEOUT_S``).
    ``worker_wait``: seconds to wait for the first worker (default 60; for SLURM, whose jobs
    may sit in the queue, ``SLURM_WAIT_S``).
    ``allowed_failures``: how many times a worker may die while running one item before the
    item is reported failed (LocalCluster and SLURM; a ``tcp://`` scheduler uses its own
    ``distributed.scheduler.allowed-failures``, default 3).
    """

    kind = "dask"

    def __init__(
        self,
        address: ClusterAddress,
        run_dir: str | Path,
        *,
        device: str = "cpu",
        slurm: dict | None = None,
        group: Callable[[object], str] = lambda task: "",
        needs_gpu: Callable[[object], bool] = lambda task: False,
        release: Callable[[], None] | None = None,
        connect_timeout: float | None = None,
        worker_wait: float | None = None,
        allowed_failures: int = 3,
    ):
        self.address = address
        self.run_dir = Path(run_dir).resolve()
        self.device = device
        self.slurm = slurm
        self.group = group
        self.needs_gpu = needs_gpu
        self.release = release
        self.connect_timeout = connect_timeout
        self.worker_wait = worker_wait
        self.allowed_failures = allowed_failures
        self.client = None
        self.cluster = None
        self.dashboard: str | None = None
        self._futures: set = set()
        self._probed: set[str] = set()
        self._warm: Callable[[], None] | None = None
        self._status_at = 0.0
        self._status = ""
        self._log_levels: dict[str, int] = {}

    # -- start and stop ----------------------------------------------------------------------
    def __enter__(self) -> DaskExecutor:
        try:
            self.start()
        except BaseException:
            self.cancel()
            raise
        return self

    def start(self) -> None:
        """Connect to (or start) the cluster, wait for a worker, probe every worker."""
        distributed = _import_distributed()
        import dask

        self._quiet_dask_logs()
        where = f"--cluster {self.address.text}"
        with dask.config.set({"distributed.scheduler.allowed-failures": self.allowed_failures}):
            if self.address.kind == "scheduler":
                try:
                    self.client = distributed.Client(
                        self.address.text,
                        timeout=self.connect_timeout or CONNECT_TIMEOUT_S,
                        set_as_default=False,
                    )
                except Exception as exc:  # OSError, TimeoutError, or garbage from a non-Dask port
                    raise UserError(
                        f"{where}: cannot reach a Dask scheduler there ({type(exc).__name__}: "
                        f"{str(exc)[:120]}); start one with `dask scheduler` or fix the address"
                    ) from None
            else:
                self.cluster = self._make_cluster(distributed)
                self.client = distributed.Client(self.cluster, set_as_default=False)
        wait = self.worker_wait or (SLURM_WAIT_S if self.address.kind == "slurm" else 60.0)
        if self.address.kind == "slurm":
            log.info("SLURM jobs submitted; waiting up to %.0f s for the first worker", wait)
        try:
            self.client.wait_for_workers(1, timeout=wait)
        except (TimeoutError, distributed.TimeoutError):
            hint = (
                "check `squeue`"
                if self.address.kind == "slurm"
                else f"start workers with `dask worker {self.address.text}`"
            )
            raise UserError(f"{where}: no Dask worker joined within {wait:.0f} s; {hint}") from None
        if _dashboard_available():
            self.dashboard = self.client.dashboard_link
        self.probe()

    def _make_cluster(self, distributed):
        if self.address.kind == "local":
            return distributed.LocalCluster(
                n_workers=self.address.workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=":0",  # a free port: other clusters may share the machine
                resources={"GPU": 1} if self.device == "cuda" else None,
                silence_logs=logging.CRITICAL,
            )
        settings = slurm_settings(self.slurm, "config")
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError:
            raise UserError("--cluster slurm needs dask-jobqueue: pip install 'hrbench[cluster]'") from None
        cluster = SLURMCluster(**slurm_cluster_kwargs(settings))
        cluster.scale(jobs=settings["jobs"])
        return cluster

    def cancel(self) -> None:
        """Cancel remote work still pending or running, then disconnect (Ctrl-C, errors)."""
        if self._futures and self.client is not None and self.client.status == "running":
            try:
                self.client.cancel(list(self._futures), force=True)
            except Exception as exc:  # the scheduler may be gone already
                log.debug("cancel: %s", exc)
        self._futures.clear()
        self._shutdown()

    def close(self) -> None:
        if self.client is not None and self.client.status == "running":
            try:
                self.client.run(_release, self.release)
            except Exception as exc:  # freeing memory is best effort; the results are safe
                log.debug("release on workers: %s", exc)
        self._shutdown()

    def _shutdown(self) -> None:
        probe = self.run_dir / PROBE_DIR
        if probe.is_dir():
            for p in probe.iterdir():
                p.unlink(missing_ok=True)
            probe.rmdir()
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
        for name, level in self._log_levels.items():
            logging.getLogger(name).setLevel(level)
        self._log_levels.clear()

    def _quiet_dask_logs(self) -> None:
        # Dask logs each reconnect attempt and worker death with a traceback; the run reports
        # these events itself, in one line (hrbench --verbose keeps Dask's logs).
        if log.isEnabledFor(logging.DEBUG):
            return
        for name in ["distributed", *logging.root.manager.loggerDict]:
            if name.split(".")[0] in ("distributed", "dask_jobqueue", "tornado"):
                logger = logging.getLogger(name)
                self._log_levels.setdefault(name, logger.level)
                logger.setLevel(logging.CRITICAL)

    def describe(self) -> dict:
        out = {"kind": self.kind, "address": self.address.text, "dashboard": self.dashboard}
        if self.client is not None:
            workers = self.client.scheduler_info(n_workers=-1)["workers"]
            out["workers"] = len(workers)
            out["gpu_workers"] = sum(1 for w in workers.values() if w.get("resources", {}).get("GPU"))
        return out

    # -- the shared-folder probe -------------------------------------------------------------
    def probe(self, workers: Iterable[str] | None = None) -> None:
        """Check that every (or each given) worker reads and writes the client's run folder."""
        token = secrets.token_hex(8)
        folder = self.run_dir / PROBE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{token}.client").write_text(token)
        needs_cuda = self.device == "cuda"
        kw = {"workers": list(workers)} if workers is not None else {}
        answers = self.client.run(_probe, str(self.run_dir), token, needs_cuda, **kw)
        for worker, ans in sorted(answers.items()):
            err = ans["error"]
            if not err:
                mine = folder / ans["file"]
                if not mine.is_file() or mine.read_text() != token:
                    err = f"writes to a different {self.run_dir} than the client sees (not a shared folder)"
            if not err and ans["version"] != __version__:
                err = f"runs hrbench {ans['version']}, the client {__version__}; install the same version"
            if not err and needs_cuda and ans["gpu"] and not ans["cuda"]:
                err = "has the GPU resource but torch sees no CUDA device there"
            if err:
                raise UserError(f"--cluster {self.address.text}: worker {worker} {err}")
            self._probed.add(worker)
        if workers is None and needs_cuda and not any(a["gpu"] for a in answers.values()):
            raise UserError(
                f"--cluster {self.address.text}: --device cuda but no worker has the GPU resource; "
                f"start GPU workers with `dask worker {self.address.text} --resources GPU=1`"
            )

    # -- running items -----------------------------------------------------------------------
    def prepare(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on every worker now (and on workers that join later), so that items
        do not pay the workers' imports and model set-up; a persistent cluster's workers
        keep what it loaded, and the next run finds them warm."""
        if self.client is None:
            self.start()
        self._warm = fn
        log.info("preparing %d Dask worker(s) (imports, metric models)", len(self._probed))
        self.client.run(fn)

    def run(self, fn, tasks):
        if self.client is None:
            self.start()
        distributed = _import_distributed()
        tasks = list(tasks)
        run_token = secrets.token_hex(4)
        # One client.map per (group, placement): one message per batch, not per item.
        batches: dict[tuple[str, bool], list[int]] = {}
        for i, task in enumerate(tasks):
            batches.setdefault((self.group(task), bool(self.needs_gpu(task))), []).append(i)
        rank = {g: r for r, g in enumerate(dict.fromkeys(g for g, _ in batches))}
        futures = {}
        for (g, gpu), idx in batches.items():
            batch = self.client.map(
                _run_remote,
                [fn] * len(idx),
                [tasks[i] for i in idx],
                [g] * len(idx),
                key=[f"{_slug(g) or 'item'}-{run_token}-{i}" for i in idx],  # dashboard: by prefix
                priority=len(rank) - rank[g],  # higher first: groups in the planned order
                resources={"GPU": 1} if gpu else None,
                pure=False,
            )
            futures.update({fut: tasks[i] for fut, i in zip(batch, idx, strict=True)})
        self._futures = set(futures)
        # Results are fetched in batches: one round trip for all items finished meanwhile.
        for batch in distributed.as_completed(list(futures), loop=self.client.loop).batches():
            finished = [f for f in batch if f.status == "finished"]
            values = {}
            try:
                if finished:
                    values = dict(zip(finished, self.client.gather(finished), strict=True))
            except Exception:  # e.g. a result lost with its worker, then the recompute failed
                values = {}  # each one on its own below
            for fut in batch:
                task = futures.pop(fut)
                self._futures.discard(fut)
                outcome = self._outcome(fut, values, distributed.CancelledError)
                fut.release()
                yield task, outcome

    def _outcome(self, fut, values: dict, cancelled: type[BaseException]):
        try:
            outcome, worker = values[fut] if fut in values else fut.result()
        except cancelled:  # and not by us: the connection to the scheduler is gone
            raise self._lost() from None
        except Exception as exc:  # KilledWorker, or an error outside fn (unpicklable task …)
            if self.client.status != "running":  # not the item's fault: keep it to do again
                raise self._lost() from None
            return self._failed(exc)
        return {**outcome, "worker": worker} if isinstance(outcome, dict) else outcome

    def _lost(self) -> ClusterLost:
        return ClusterLost(
            f"--cluster {self.address.text}: lost the Dask scheduler mid-run; finished "
            f"items are kept in {self.run_dir}; rerun the same command to resume"
        )

    def _failed(self, exc: BaseException) -> TaskFailed:
        if type(exc).__name__ == "KilledWorker":
            return TaskFailed(
                f"worker processes died while running it, {self.allowed_failures} times "
                "(out of memory? killed?); Dask gave up on it"
            )
        return TaskFailed(f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500])

    def status(self, every: float = 1.0) -> str:
        """``"workers 3 (busy 2, idle 1)"`` for the progress bar, refreshed at most every
        ``every`` seconds. Workers that joined since the start (SLURM jobs leave the queue
        late) are probed here before they get much work.
        """
        now = time.monotonic()
        if self.client is not None and now - self._status_at >= every:
            self._status_at = now
            try:
                workers = set(self.client.scheduler_info(n_workers=-1)["workers"])
                joined = workers - self._probed
                if joined:
                    self.probe(joined)
                    if self._warm is not None:  # a task ahead of the items, not waited for
                        distributed = _import_distributed()
                        for worker in joined:
                            distributed.fire_and_forget(self.client.submit(
                                self._warm, workers=[worker], allow_other_workers=False,
                                priority=1 << 30, pure=False))
                busy = sum(1 for keys in self.client.processing().values() if keys)
            except (OSError, TimeoutError):  # CommClosedError is an OSError
                raise self._lost() from None
            self._status = f"workers {len(workers)} (busy {busy}, idle {len(workers) - busy})"
        return self._status
