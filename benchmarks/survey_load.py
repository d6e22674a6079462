"""Load benchmark of the voting site: answers per second and latency at 1, 8, 32 clients.

Runs ``hrbench survey serve`` (waitress, SQLite in WAL mode) on 127.0.0.1 for a synthetic
study, then drives it with concurrent scripted participants. Each client starts a
participant (GET /, POST /start), then posts its 25 answers back to back (POST /trial, 303
= stored and acknowledged), then starts the next participant. Timed per answer: one POST
/trial round trip, which includes the committed database write. The throughput counts
answers over the whole phase wall time (participant starts included, so it is what a
crowd sees). Rate limits stay on (default 30-answer burst per participant) except the
per-address limit on new participants (all clients share 127.0.0.1).

Baseline, measured in the same run at the same concurrency: GET /healthz, which goes
through waitress and Flask but touches no database. The ratio answers/s ÷ healthz/s says
how much of the HTTP stack's capacity a committed answer costs. Server CPU per answer
(from /proc) and the client processes' own CPU per answer are printed too: on a machine
shared by server and clients, CPUs ÷ their sum bounds the answers per second.

Clients run in separate processes (threads inside), on the same machine as the server:
on a small shared machine they compete with the server for CPU, so the numbers are a
lower bound for a dedicated server. To compete as little as they can, they write each
request to a plain socket and read the response's status line, headers and body
themselves (``SocketParticipant``): about 0.2 ms of their CPU per answer, against 0.5 ms
with Python's ``http.client`` (``--client http.client``, the clients up to the fifth
session).

Databases and processes: SQLite with one server process (``--synchronous``) is always
measured; with ``--db URL`` (a PostgreSQL server where this user may create databases; a
fresh database is made per configuration and dropped afterwards) or ``--pg-temp`` (a
throwaway local cluster with PostgreSQL's durable defaults, fsync on) also PostgreSQL with
each ``--workers`` count (processes x ``--threads``). Server CPU per answer is the web
server's processes (workers included) plus, for a local cluster, PostgreSQL's processes
(reported apart as db CPU); the 1-minute load average is recorded beside each row.
``--repeats R`` measures every configuration R times, interleaved (SQLite, PostgreSQL/1,
/2 …, then again): a shared virtual machine's speed drifts by tens of per cent from one
minute to the next, so PostgreSQL's throughput is also given as a share of SQLite's in the
same round, with the median over the rounds.
``--server gunicorn`` serves the PostgreSQL configurations with gunicorn's gthread workers
instead (the measurement behind choosing waitress per process, see survey_app/serving.py).

    python -m benchmarks.survey_load [--clients 1,8,32] [--seconds 5]
        [--synchronous FULL|NORMAL] [--threads 16] [--pg-temp | --db URL]
        [--workers 1,2,4] [--server waitress|gunicorn] [--repeats R]
        [--client socket|http.client] [--json out.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

from tests.survey_helpers import Participant

N_TRIALS = 25


class SocketParticipant(Participant):
    """The scripted participant of the tests, its requests sent over a plain socket.

    Why: the clients share the machine with the server, so every millisecond of CPU they
    spend is one the server does not get. ``http.client`` parses each response's headers
    with the ``email`` package: about 0.5 ms of client CPU per answer, a fifth of what the
    server spends on it. Here a request is one ``sendall`` and the response's status,
    headers and ``Content-Length`` body are read directly (what a load generator such as
    wrk does). The protocol is the same: cookie, CSRF token, forms, keep-alive.
    """

    sock: socket.socket | None = None
    buf = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf = None, b""

    def request(self, method: str, path: str, form: dict | None = None):
        body = b"" if form is None else urllib.parse.urlencode(form).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
        if self.cookie:
            head += f"Cookie: {self.cookie}\r\n"
        if not self.keepalive:
            head += "Connection: close\r\n"
        if form is not None:
            head += ("Content-Type: application/x-www-form-urlencoded\r\n"
                     f"Content-Length: {len(body)}\r\n")
        try:
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.sendall(head.encode("latin-1") + b"\r\n" + body)
            status, hdrs, data = self._response(method)
        except (OSError, ValueError):
            self.close()
            raise
        self._took(hdrs)
        return status, hdrs, data.decode("utf-8", "replace")

    def _recv(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-response")
        self.buf += chunk

    def _response(self, method: str) -> tuple[int, dict, bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/") or not rest[:3].isdigit():
            raise ValueError(f"not an HTTP status line: {lines[0]!r}")
        status = int(rest[:3])
        hdrs = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            hdrs[name.strip().lower()] = value.strip()
        if method == "HEAD" or status < 200 or status in (204, 304):
            return status, hdrs, b""  # no body, whatever the headers say
        n = int(hdrs.get("content-length", "-1"))
        if n < 0:  # the site always sends one; chunked or read-to-close is not supported
            raise ValueError(f"response without a usable Content-Length: {lines[0]}")
        while len(self.buf) < n:
            self._recv()
        data, self.buf = self.buf[:n], self.buf[n:]
        return status, hdrs, data


def make_study(folder: Path) -> Path:
    """The benchmark's synthetic study in ``folder / "study"`` (8 images: enough pairs for
    ``N_TRIALS`` trials per person)."""
    from survey_app.study import create_study
    from tests.survey_helpers import make_fake_run

    run = make_fake_run(folder / "run", images=tuple(f"img{i}" for i in range(8)))
    create_study(run, folder / "study", resolution=128, trials_per_participant=N_TRIALS,
                 validation=2, progress=False)
    return folder / "study"


def _client_thread(port: int, kind: str, stop_at: float, lat: list, counts: list,
                   keepalive: bool, client: str) -> None:
    make = SocketParticipant if client == "socket" else Participant
    n_ok = n_err = 0
    try:
        while time.monotonic() < stop_at:
            p = make(port, keepalive=keepalive)
            try:
                if kind == "healthz":
                    while time.monotonic() < stop_at:
                        t0 = time.perf_counter()
                        status, _, _ = p.request("GET", "/healthz")
                        lat.append(time.perf_counter() - t0)
                        n_ok += status == 200
                        n_err += status != 200
                    continue
                p.begin()
                for i in range(N_TRIALS):
                    if time.monotonic() >= stop_at:
                        break
                    t0 = time.perf_counter()
                    status = p.answer(i, "left" if (i * 7 + len(lat)) % 3 else "right")
                    lat.append(time.perf_counter() - t0)
                    n_ok += status == 303
                    n_err += status != 303
            except (OSError, ValueError, RuntimeError, http.client.HTTPException):
                # A refused start or a broken connection counts as an error, and the client
                # goes on with a new participant (after a pause: a server that is down must
                # not be raced by its clients for the CPU) instead of leaving the run.
                n_err += 1
                time.sleep(0.05)
            finally:
                p.close()
    finally:
        counts.append((n_ok, n_err))


def _client_process(port: int, kind: str, threads: int, start_at: float, seconds: float,
                    keepalive: bool, client: str, out: mp.Queue) -> None:
    while time.monotonic() < start_at:
        time.sleep(0.001)
    lat: list[float] = []
    counts: list[tuple[int, int]] = []
    stop_at = start_at + seconds
    ts = [threading.Thread(target=_client_thread, args=(port, kind, stop_at, lat, counts, keepalive, client))
          for _ in range(threads)]
    cpu0 = time.process_time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put((lat, sum(c[0] for c in counts), sum(c[1] for c in counts),
             time.process_time() - cpu0))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` and its live descendants, plus what its
    waited-for children used (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        own = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (OSError, ValueError, IndexError):
        return float("nan")
    total = own / os.sysconf("SC_CLK_TCK")
    for kid in kids:
        c = cpu_seconds(int(kid))
        total += 0.0 if c != c else c  # a child that just ended counts in cutime
    return total


def measure(port: int, kind: str, clients: int, seconds: float, keepalive: bool = True,
            client: str = "socket") -> dict:
    """Drive ``clients`` concurrent clients for ``seconds``; return throughput and latency."""
    procs = min(clients, max(1, (os.cpu_count() or 2)), 4)
    per = [clients // procs + (i < clients % procs) for i in range(procs)]
    q: mp.Queue = mp.Queue()
    start_at = time.monotonic() + 0.5
    ps = [mp.Process(target=_client_process, args=(port, kind, n, start_at, seconds, keepalive, client, q))
          for n in per]
    for p in ps:
        p.start()
    results = [q.get() for _ in ps]
    for p in ps:
        p.join()
    wall = seconds  # every client stops at start_at + seconds (an in-flight request may finish)
    lat = np.array([x for r in results for x in r[0]]) * 1000
    ok = sum(r[1] for r in results)
    err = sum(r[2] for r in results)
    client_cpu = sum(r[3] for r in results)
    return {
        "kind": kind, "clients": clients, "ok": ok, "errors": err, "per_s": ok / wall,
        "client_cpu_ms_per_ok": client_cpu / max(ok, 1) * 1000,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
    }


def _configs(args) -> list[tuple[str, int]]:
    pg = [("postgresql", w) for w in args.workers] if (args.db or args.pg_temp) else []
    return [("sqlite", 1)] + pg


def _server(args, kind: str, workers: int, study: Path, url: str | None, log: Path):
    from tests.survey_helpers import ServerProcess, free_port

    if kind == "postgresql" and args.server == "gunicorn":
        port = free_port()
        # The app factory with the benchmark's config; gunicorn evaluates the literal.
        factory = (f"survey_app.app:create_app({{'DATABASE_URL': {url!r}, 'START_RATE': (1, 0), "
                   f"'DB_POOL_SIZE': {max(4, args.threads)}}})")
        argv = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-k", "gthread",
                "--threads", str(args.threads), "-b", f"127.0.0.1:{port}", factory]
        env = {"HRBENCH_STUDY": str(study), "HRBENCH_SECRET_KEY": "b" * 40}
        return ServerProcess(study, port=port, argv=argv, env=env, log_path=log).start()
    extra = ("--no-start-limit", "--sqlite-synchronous", args.synchronous)
    return ServerProcess(study, threads=args.threads, workers=workers, db_url=url, extra=extra,
                         log_path=log).start()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=16, help="waitress threads (serve's default)")
    ap.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--db", default=None,
                       help="PostgreSQL server URL; a fresh database is created there per run")
    where.add_argument("--pg-temp", action="store_true",
                       help="start a throwaway local PostgreSQL cluster (durable settings)")
    ap.add_argument("--workers", default="1,2,4", help="server processes for PostgreSQL")
    ap.add_argument("--server", choices=("waitress", "gunicorn"), default="waitress")
    ap.add_argument("--repeats", type=int, default=1,
                    help="rounds over all configurations (medians and same-round ratios reported)")
    ap.add_argument("--no-keepalive", action="store_true",
                    help="a new connection per request, as a reverse proxy (nginx's default "
                         "HTTP/1.0 to the app) makes; default: one kept-alive connection per participant")
    ap.add_argument("--client", choices=("socket", "http.client"), default="socket",
                    help="how the load clients send requests: a plain socket (default, less "
                         "client CPU) or Python's http.client (as up to the fifth session)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats must be at least 1, got {args.repeats}")
    levels = [int(c) for c in args.clients.split(",")]
    args.workers = [int(w) for w in args.workers.split(",")]

    from survey_app.db import normalise_url
    from tests.pg_server import start_cluster, stop_cluster

    rows = []
    with tempfile.TemporaryDirectory(prefix="survey_load_") as tmp:
        tmp = Path(tmp)
        study = make_study(tmp)
        cluster = start_cluster(Path(tempfile.mkdtemp(prefix="hrbench-pg-")), durable=True) \
            if args.pg_temp else None
        try:
            for r in range(args.repeats):
                for kind, workers in _configs(args):
                    url, drop = None, None
                    if kind == "postgresql":
                        url, drop = _fresh_database(args.db and normalise_url(args.db), cluster)
                    server = _server(args, kind, workers, study, url,
                                     tmp / f"server-{kind}-{workers}-{r}.log")
                    try:
                        for clients in levels:
                            row = _measure_level(server, cluster if url else None, clients,
                                                 args.seconds, not args.no_keepalive, args.client)
                            row.update(database=kind, workers=workers, round=r + 1,
                                       server=args.server if kind == "postgresql" else "waitress")
                            rows.append(row)
                            _print_row(row)
                    finally:
                        server.stop()
                        if drop:
                            drop()
        finally:
            if cluster is not None:
                stop_cluster(cluster)
    print(_table(rows))
    if args.repeats > 1 or len(_configs(args)) > 1:
        print(_summary(rows, levels))
    print(f"SQLite synchronous={args.synchronous}; {args.threads} threads per process; "
          f"{os.cpu_count()} CPUs shared by server, database and clients (and anything else "
          "running); CPU-bound ceiling here = CPUs / (server + db + clients' CPU per answer)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def _fresh_database(server_url: str | None, cluster):
    """(URL of a new empty database, function that drops it)."""
    import secrets

    from sqlalchemy import create_engine, make_url, text

    if cluster is not None:
        name = cluster.create_database("load")
        return cluster.url(name), lambda: cluster.drop_database(name)
    name = f"hrbench_load_{secrets.token_hex(4)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")

    def sql(stmt: str) -> None:
        with admin.connect() as conn:
            conn.execute(text(stmt))

    sql(f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    return url, drop


def _measure_level(server, cluster, clients: int, seconds: float, keepalive: bool,
                   client: str) -> dict:
    base = measure(server.port, "healthz", clients, seconds, keepalive, client)
    web0 = cpu_seconds(server.proc.pid)
    db0 = cpu_seconds(cluster.postmaster_pid()) if cluster else float("nan")
    votes = measure(server.port, "vote", clients, seconds, keepalive, client)
    n = max(votes["ok"], 1)
    # Server CPU per answer (participant starts included): what the numbers would scale
    # with on a machine not shared with the clients or other jobs.
    votes["server_cpu_ms_per_answer"] = (cpu_seconds(server.proc.pid) - web0) / n * 1000
    votes["db_cpu_ms_per_answer"] = ((cpu_seconds(cluster.postmaster_pid()) - db0) / n * 1000
                                     if cluster else float("nan"))
    votes["load_avg_1min"] = os.getloadavg()[0]
    votes["baseline_healthz_per_s"] = base["per_s"]
    votes["baseline_p99_ms"] = base["p99_ms"]
    votes["ratio_vs_healthz"] = votes["per_s"] / base["per_s"]
    return votes


def _summary(rows: list[dict], levels: list[int]) -> str:
    """Medians over the rounds, and each configuration's throughput as a share of SQLite's
    measured in the same round (the machine's speed drifts between rounds)."""
    med = statistics.median
    lines = ["", "| database | processes | clients | rounds | answers/s (median) | p50 ms | p99 ms "
             "| share of SQLite's answers/s, same round (median; each round) |",
             "|---|---|---|---|---|---|---|---|"]
    base = {(r["round"], r["clients"]): r["per_s"] for r in rows if r["database"] == "sqlite"}
    configs = dict.fromkeys((r["database"], r["workers"]) for r in rows)
    for (kind, workers), clients in ((c, n) for c in configs for n in levels):
        mine = [r for r in rows if (r["database"], r["workers"], r["clients"]) == (kind, workers, clients)]
        shares = [r["per_s"] / base[(r["round"], clients)] for r in mine
                  if base.get((r["round"], clients))]
        share = (f"{med(shares):.2f} ({', '.join(f'{x:.2f}' for x in shares)})"
                 if kind != "sqlite" and shares else "")
        lines.append(f"| {kind} | {workers} | {clients} | {len(mine)} | {med(r['per_s'] for r in mine):.0f} "
                     f"| {med(r['p50_ms'] for r in mine):.1f} | {med(r['p99_ms'] for r in mine):.1f} "
                     f"| {share} |")
    return "\n".join(lines)


def _print_row(r: dict) -> None:
    print(f"round {r['round']} {r['database']:10s} {r['workers']}x {r['clients']:3d} clients: "
          f"{r['per_s']:7.0f} answers/s (p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
          f"{r['errors']} errors: not 303, or failed)"
          f" | healthz {r['baseline_healthz_per_s']:7.0f} req/s | server CPU "
          f"{r['server_cpu_ms_per_answer']:.2f} + db {r['db_cpu_ms_per_answer']:.2f} ms/answer, "
          f"clients {r['client_cpu_ms_per_ok']:.2f} ms | load {r['load_avg_1min']:.1f}",
          flush=True)


def _table(rows: list[dict]) -> str:
    head = ("| round | database | server | processes | clients | answers/s | p50 ms | p99 ms | "
            "server CPU ms/answer | db CPU ms/answer | healthz/s | load avg |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['round']} | {r['database']} | {r['server']} | {r['workers']} | {r['clients']} | "
            f"{r['per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['server_cpu_ms_per_answer']:.2f} | {r['db_cpu_ms_per_answer']:.2f} | "
            f"{r['baseline_healthz_per_s']:.0f} | {r['load_avg_1min']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
