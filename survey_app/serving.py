"""Running the site: waitress in one process, or several waitress processes on one socket.

``--workers N`` (N > 1, PostgreSQL only): the parent opens the listening socket, builds the
app once (so every user mistake is reported once, before anything forks, and an empty
database gets its schema once), then forks N workers. Each worker builds its own app
(its own database connections: connections never cross a fork) and runs waitress with
``--threads`` threads on the shared socket; a worker waits in ``accept`` only while it
holds no more connections than the least loaded one (:class:`_Balance`). The parent only
supervises: a worker that dies (OOM kill, SIGKILL, crash) is replaced at once; SIGTERM or
Ctrl-C stops all of them.

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


def _waitress(app: Flask, threads: int, balance: tuple[_Balance, int] | None = None,
              **where) -> None:
    """Serve ``app`` with waitress until stopped; ``balance``: (shared counts, this worker's
    slot) when several worker processes share the listening socket."""
    from waitress.server import create_server

    # Waitress warns on every queued request; with more clients than threads that is normal.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    # Waitress deletes X-Forwarded-* headers before the app sees them unless told otherwise;
    # with --proxies the app's ProxyFix must read them (client address, HTTPS), without it
    # they stay deleted.
    trust_proxies = bool(app.config.get("PROXIES"))
    server = create_server(app, threads=threads, connection_limit=max(100, 4 * threads),
                           clear_untrusted_proxy_headers=not trust_proxies, **WAITRESS_OPTIONS,
                           **where)
    if balance is not None:
        balance[0].install(server, balance[1])
    _freeze_startup_objects()
    server.print_listen("Serving on http://{}:{}")  # (ready: the loop starts right after)
    server.run()


class _Balance:
    """Least-connections accepting among worker processes that share one listening socket.

    Why: every worker waits on the socket and the first to call ``accept`` gets the
    connection; kept-alive participants then stay on that worker, and runs with 32 clients
    ended 12/20 or 19/13 connections on 2 workers. A worker with more connections than
    threads queues requests (waitress's task queue: p99 of the wait 24-72 ms against 13-15
    ms balanced, 3 paired load runs) while the other has threads idle. So each worker
    publishes its open connections in shared memory and listens only while it has no more
    than the least loaded one. A worker decides only when its event loop wakes (activity on
    its connections, or waitress's 1 s timeout): one that stopped listening while another
    had fewer connections sleeps on that decision, so a worker that stops listening wakes
    the others (a byte on each one's pipe) to decide again: otherwise, once it had
    overtaken a sleeping one, nobody would accept for up to a second. A worker that has not
    looked at the socket for ``stale_s`` (hung, or starting) does not count: the others
    must not wait for it.
    """

    def __init__(self, workers: int, stale_s: float = 2.0):
        import multiprocessing

        # Anonymous shared memory and pipes, made before the workers fork.
        self.counts = multiprocessing.RawArray("i", workers)
        self.seen = multiprocessing.RawArray("d", workers)  # time.monotonic(): system-wide
        self.stale_s = stale_s
        self.wakers = [os.pipe() for _ in range(workers)]  # (read, write) per slot
        for fds in self.wakers:
            for fd in fds:
                os.set_blocking(fd, False)

    def wake_others(self, slot: int) -> None:
        for other, (_, write) in enumerate(self.wakers):
            if other != slot:
                try:
                    os.write(write, b"!")
                except BlockingIOError:  # its pipe is full: a wake-up is pending anyway
                    pass

    def forget(self, slot: int) -> None:
        """The slot's worker is gone (its replacement reports once it serves)."""
        self.seen[slot] = 0.0

    def may_accept(self, slot: int, connections: int, now: float) -> bool:
        """Record ``slot``'s open connections; whether it should take the next one."""
        self.counts[slot], self.seen[slot] = connections, now
        live = [c for c, t in zip(self.counts[:], self.seen[:], strict=True)
                if now - t < self.stale_s]
        return connections <= min(live)

    def install(self, server, slot: int) -> None:
        """Make waitress's listening ``server`` listen only while :meth:`may_accept` (its
        event loop asks ``readable()`` whenever it wakes, and at least every second)."""
        from waitress.wasyncore import file_dispatcher

        class Woken(file_dispatcher):
            def writable(self) -> bool:
                return False

            def handle_read(self) -> None:
                try:
                    os.read(self._fileno, 4096)  # the loop decides again right after
                except BlockingIOError:
                    pass

        Woken(self.wakers[slot][0], map=server._map)
        base = len(server._map)  # the listener, waitress's and our wake-up pipes
        readable = server.readable
        accepting = True

        def balanced() -> bool:
            nonlocal accepting
            listening = readable()  # always: it also closes idle connections on schedule
            ok = self.may_accept(slot, len(server._map) - base, time.monotonic())
            if accepting and not ok:
                self.wake_others(slot)
            accepting = ok
            return ok and listening

        server.readable = balanced


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


def _start_worker(make_app: Callable[[], Flask], sock: socket.socket, threads: int,
                  balance: tuple[_Balance, int]) -> int:
    pid = os.fork()
    if pid:
        return pid
    # Child: Ctrl-C reaches the whole process group; the parent decides and sends SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _exit_with_parent()
    code = 0
    try:
        _waitress(make_app(), threads, balance, sockets=[sock])
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
    slots: dict[int, int] = {}  # pid -> its place in the shared connection counts
    balance = _Balance(workers)
    fast_failures = 0

    def start(slot: int) -> int:
        balance.forget(slot)
        pid = _start_worker(make_app, sock, threads, (balance, slot))
        children[pid], slots[pid] = time.monotonic(), slot
        return pid

    try:
        for slot in range(workers):
            start(slot)
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
            new = start(slots.pop(pid))
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
