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
lower bound for a dedicated server.

    python -m benchmarks.survey_load [--clients 1,8,32] [--seconds 5]
        [--synchronous FULL|NORMAL] [--threads 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

N_TRIALS = 25


def _client_thread(port: int, kind: str, stop_at: float, lat: list, counts: list) -> None:
    from tests.survey_helpers import Participant

    n_ok = n_err = 0
    if kind == "healthz":
        p = Participant(port)
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            status, _, _ = p.request("GET", "/healthz")
            lat.append(time.perf_counter() - t0)
            n_ok += status == 200
            n_err += status != 200
        p.close()
    else:
        while time.monotonic() < stop_at:
            p = Participant(port)
            p.begin()
            for i in range(N_TRIALS):
                if time.monotonic() >= stop_at:
                    break
                t0 = time.perf_counter()
                status = p.answer(i, "left" if (i * 7 + len(lat)) % 3 else "right")
                lat.append(time.perf_counter() - t0)
                n_ok += status == 303
                n_err += status != 303
            p.close()
    counts.append((n_ok, n_err))


def _client_process(port: int, kind: str, threads: int, start_at: float, seconds: float,
                    out: mp.Queue) -> None:
    while time.monotonic() < start_at:
        time.sleep(0.001)
    lat: list[float] = []
    counts: list[tuple[int, int]] = []
    stop_at = start_at + seconds
    ts = [threading.Thread(target=_client_thread, args=(port, kind, stop_at, lat, counts))
          for _ in range(threads)]
    cpu0 = time.process_time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put((lat, sum(c[0] for c in counts), sum(c[1] for c in counts),
             time.process_time() - cpu0))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def measure(port: int, kind: str, clients: int, seconds: float) -> dict:
    """Drive ``clients`` concurrent clients for ``seconds``; return throughput and latency."""
    procs = min(clients, max(1, (os.cpu_count() or 2)), 4)
    per = [clients // procs + (i < clients % procs) for i in range(procs)]
    q: mp.Queue = mp.Queue()
    start_at = time.monotonic() + 0.5
    ps = [mp.Process(target=_client_process, args=(port, kind, n, start_at, seconds, q))
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=16, help="waitress threads (serve's default)")
    ap.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.clients.split(",")]

    from survey_app.study import create_study
    from tests.survey_helpers import ServerProcess, make_fake_run

    rows = []
    with tempfile.TemporaryDirectory(prefix="survey_load_") as tmp:
        tmp = Path(tmp)
        run = make_fake_run(tmp / "run", images=tuple(f"img{i}" for i in range(8)))
        create_study(run, tmp / "study", resolution=128, trials_per_participant=N_TRIALS,
                     validation=2, progress=False)
        server = ServerProcess(tmp / "study", threads=args.threads,
                               extra=("--no-start-limit", "--sqlite-synchronous",
                                      args.synchronous),
                               log_path=tmp / "server.log").start()
        try:
            pid = server.proc.pid
            for clients in levels:
                base = measure(server.port, "healthz", clients, args.seconds)
                cpu0 = cpu_seconds(pid)
                votes = measure(server.port, "vote", clients, args.seconds)
                # Server CPU per answer (participant starts included): what the numbers
                # would scale with on a machine not shared with the clients or other jobs.
                votes["server_cpu_ms_per_answer"] = (cpu_seconds(pid) - cpu0) / max(
                    votes["ok"], 1) * 1000
                votes["baseline_healthz_per_s"] = base["per_s"]
                votes["baseline_p99_ms"] = base["p99_ms"]
                votes["ratio_vs_healthz"] = votes["per_s"] / base["per_s"]
                rows.append(votes)
                print(f"{clients:3d} clients: {votes['per_s']:7.0f} answers/s "
                      f"(p50 {votes['p50_ms']:.1f} ms, p99 {votes['p99_ms']:.1f} ms, "
                      f"{votes['errors']} non-303) | healthz baseline {base['per_s']:7.0f} "
                      f"req/s (p99 {base['p99_ms']:.1f} ms) | ratio "
                      f"{votes['ratio_vs_healthz']:.2f} | server CPU "
                      f"{votes['server_cpu_ms_per_answer']:.2f} ms/answer, clients' CPU "
                      f"{votes['client_cpu_ms_per_ok']:.2f} ms/answer", flush=True)
        finally:
            server.stop()
    print(f"SQLite synchronous={args.synchronous}, waitress threads={args.threads}, "
          f"{os.cpu_count()} CPUs shared by server and clients (and anything else running); "
          "CPU-bound ceiling here = CPUs / (server + clients' CPU per answer)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
