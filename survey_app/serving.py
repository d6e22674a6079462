"""Running the site: waitress in one process, or several waitress processes on one socket.

``--workers N`` (N > 1, PostgreSQL only): the parent opens the listening socket, builds the
app once (so every user mistake is reported once, before anything forks, and an empty
database gets its schema once), then forks N workers. Each worker builds its own app
(its own database connections: connections never cross a fork) and runs waitress with
``--threads`` threads on the shared socket; the kernel hands each new connection to one of
the processes waiting in ``accept``. The parent only supervises: a worker that dies (OOM
kill, SIGKILL, crash) is replaced at once; SIGTERM or Ctrl-C stops all of them.

Why waitress per process and not gunicorn, measured with ``python -m benchmarks.survey_load
--pg-temp --workers 2 --clients 8,32 --server waitress|gunicorn`` (two interleaved runs
each, 2 processes x 16 threads, on the 2-core development VM at load average 16-25):
gunicorn's ``gthread`` workers answered 63-110 / 96-185 answers/s at 8 / 32 clients against
110-131 / 141-176 for waitress processes, served 390-560 against 610-1360 ``/healthz`` per
second, and used 2.9-4.4 against 3.1-3.5 ms server CPU per answer. On so loaded a machine
differences under ~30 % are noise, but nothing favoured gunicorn, and it would add a
dependency, a second way to configure and load the app, and a server that does not run
on Windows; waitress is already the one-process server, so one code path serves both.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable

from flask import Flask

from bench.errors import UserError

log = logging.getLogger(__name__)

# Bounded request sizes in front of Flask's own MAX_CONTENT_LENGTH.
WAITRESS_OPTIONS = {
    "ident": "hrbench-survey",
    "max_request_body_size": 1 << 20,
    "max_request_header_size": 64 * 1024,
}
_FAST_FAILURE_S = 5.0  # a worker that dies sooner than this after starting "fails at start"
_MAX_FAST_FAILURES = 5


class _Stop(Exception):
    """Raised in the parent by SIGTERM/SIGINT to leave the supervision loop."""


def _waitress(app: Flask, threads: int, **where) -> None:
    import waitress

    # Waitress warns on every queued request; with more clients than threads that is normal.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    # Waitress deletes X-Forwarded-* headers before the app sees them unless told otherwise;
    # with --proxies the app's ProxyFix must read them (client address, HTTPS), without it
    # they stay deleted.
    trust_proxies = bool(app.config.get("PROXIES"))
    _freeze_startup_objects()
    waitress.serve(app, threads=threads, connection_limit=max(100, 4 * threads),
                   clear_untrusted_proxy_headers=not trust_proxies, **WAITRESS_OPTIONS, **where)


def _freeze_startup_objects() -> None:
    """Keep what start-up built (modules, the app, the study's tables: ~130,000 objects)
    out of the cyclic garbage collector's full collections, which walk every tracked object
    while holding the interpreter lock: measured under load, each stopped every thread of
    the process for 100–190 ms, the slowest answers of a load run. They live as long as the
    process anyway; the collection first frees start-up's own garbage."""
    gc.collect()
    gc.freeze()


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, or a one-line error (port taken, address not local…)."""
    try:
        return socket.create_server((host, port), backlog=1024)
    except OSError as exc:
        raise UserError(f"--host/--port {host}:{port}: cannot listen ({exc.strerror})") from None


def serve(make_app: Callable[[], Flask], *, host: str, port: int, threads: int,
          workers: int = 1, on_ready: Callable[[Flask, int], None] | None = None) -> None:
    """Serve until stopped. ``make_app`` builds a fresh app (called once per process).

    ``on_ready(app, port)`` is called once in the parent with the checked app (e.g. to log
    where the site is); ``port`` is the bound one (``port=0`` picks a free port).
    """
    sock = listen(host, port)
    bound = sock.getsockname()[1]
    app = make_app()
    if on_ready is not None:
        on_ready(app, bound)
    if workers <= 1:
        _waitress(app, threads, sockets=[sock])
        return
    if not hasattr(os, "fork"):
        raise UserError("--workers: several processes need a POSIX system (fork); use "
                        "--workers 1 with more --threads")
    # The parent's connections must not be shared with the children.
    app.extensions["survey"].db.dispose()
    del app
    _supervise(make_app, sock, threads, workers)


def _start_worker(make_app: Callable[[], Flask], sock: socket.socket, threads: int) -> int:
    pid = os.fork()
    if pid:
        return pid
    # Child: Ctrl-C reaches the whole process group; the parent decides and sends SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _exit_with_parent()
    code = 0
    try:
        _waitress(make_app(), threads, sockets=[sock])
    except BaseException:
        log.exception("worker %d failed", os.getpid())
        code = 1
    finally:
        os._exit(code)


def _exit_with_parent(poll_s: float = 0.5) -> None:
    """End this worker when the parent is gone (SIGKILLed): orphans would keep the port and
    serve without supervision, so a restarted server could not bind it."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _supervise(make_app: Callable[[], Flask], sock: socket.socket, threads: int,
               workers: int) -> None:
    def stop(signum, _frame):
        raise _Stop(signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    children: dict[int, float] = {}  # pid -> start time
    fast_failures = 0
    try:
        for _ in range(workers):
            children[_start_worker(make_app, sock, threads)] = time.monotonic()
        log.info("%d worker processes: %s", workers, " ".join(map(str, children)))
        while True:
            pid, status = os.wait()
            started = children.pop(pid, None)
            if started is None:
                continue
            how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exit status {os.waitstatus_to_exitcode(status)}")
            fast_failures = fast_failures + 1 if time.monotonic() - started < _FAST_FAILURE_S \
                else 0
            if fast_failures >= _MAX_FAST_FAILURES:
                raise UserError(f"--workers: worker processes keep failing at start (last: "
                                f"{how}); see the log above")
            new = _start_worker(make_app, sock, threads)
            children[new] = time.monotonic()
            log.warning("worker %d ended (%s); started worker %d", pid, how, new)
    except _Stop:
        log.info("stopping %d workers", len(children))
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        _stop_children(children)
        sock.close()


def _stop_children(children: dict[int, float], grace_s: float = 10.0) -> None:
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    left = set(children)
    while left and time.monotonic() < deadline:
        for pid in list(left):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                left.discard(pid)
        time.sleep(0.05)
    for pid in left:  # did not stop in time
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
