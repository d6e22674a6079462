"""Helpers shared by the survey tests and the load benchmark (not part of the package).

- :func:`make_fake_run`: a tiny run folder in the layout ``hrbench run`` writes
  (``items.csv``, ``data/manifest.csv``, outputs), with synthetic photos.
- :class:`ServerProcess`: ``hrbench survey serve`` in a child process on 127.0.0.1.
- :class:`Participant`: a scripted participant over one keep-alive HTTP connection that
  follows the plain-HTML flow (no JavaScript), parsing the CSRF token and trial index.
"""

from __future__ import annotations

import contextlib
import csv
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import numpy as np

from bench.io import write_image, write_json, write_mask
from bench.masks import centre_square_mask


def make_fake_run(
    folder: str | Path,
    methods: tuple[str, ...] = ("good", "blurry", "flat"),
    images: tuple[str, ...] = ("alpha", "beta", "gamma"),
    size: tuple[int, int] = (96, 128),
    resolution: int = 128,
    seed: int = 0,
) -> Path:
    """Write a run folder with synthetic ``uint8`` photos of ``size`` = (H, W).

    Outputs per method: ``good`` = ground truth plus faint noise in the hole, ``blurry`` =
    hole replaced by a box blur, ``flat`` (or anything else) = hole filled with grey. One
    extra row with status ``failed`` checks that failed items are skipped.
    """
    import cv2

    run = Path(folder)
    rng = np.random.default_rng(seed)
    h, w = size
    manifest, items = [], []
    mask = centre_square_mask(h, w)
    yy, xx = np.mgrid[0:h, 0:w]
    for k, name in enumerate(images):
        base = np.stack([(xx * (3 + k)) % 256, (yy * (2 + k)) % 256, (xx + yy) % 256], -1)
        gt = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        write_image(run / "data" / str(resolution) / f"{name}.png", gt)
        write_mask(run / "data" / str(resolution) / f"{name}_mask.png", mask)
        manifest.append({
            "image": name, "resolution": resolution, "gt": f"{resolution}/{name}.png",
            "mask": f"{resolution}/{name}_mask.png", "gt_sha256": "", "mask_sha256": "",
        })
        for m in methods:
            out = gt.copy()
            if m == "good":
                noisy = gt.astype(np.int16) + rng.integers(-3, 4, gt.shape)
                out[mask] = np.clip(noisy, 0, 255).astype(np.uint8)[mask]
            elif m == "blurry":
                out[mask] = cv2.blur(gt, (15, 15))[mask]
            else:
                out[mask] = 128
            rel = f"outputs/{m}/{resolution}/{name}.png"
            write_image(run / rel, out)
            items.append({"method": m, "resolution": resolution, "image": name, "status": "ok",
                          "output": rel, "runtime_s": 0.01, "peak_rss_mb": 1.0,
                          "changed_known": 0, "error": ""})
    items.append({"method": methods[0], "resolution": resolution * 2, "image": images[0],
                  "status": "failed", "output": "", "runtime_s": "", "peak_rss_mb": "",
                  "changed_known": "", "error": "synthetic failure"})
    for name, rows in (("data/manifest.csv", manifest), ("items.csv", items)):
        with open(run / name, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    write_json(run / "run.json", {"config": {"synthetic": True, "seed": seed}})
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m bench.cli survey serve STUDY`` on 127.0.0.1 in a child process."""

    def __init__(self, study: Path, port: int | None = None, threads: int = 8,
                 extra: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 log_path: Path | None = None, workers: int = 1, db_url: str | None = None,
                 argv: list[str] | None = None):
        """``argv``: another server command line instead of ``hrbench survey serve`` (it
        must listen on ``port``; e.g. gunicorn in the load benchmark)."""
        self.study, self.port = Path(study), port or free_port()
        self.threads, self.workers, self.db_url = threads, workers, db_url
        self.argv = argv
        self.extra, self.env = extra, env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> ServerProcess:
        repo = Path(__file__).resolve().parents[1]
        env = dict(os.environ, **(self.env or {}))
        env["PYTHONPATH"] = str(repo) + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, "-m", "bench.cli", "survey", "serve", str(self.study),
               "--host", "127.0.0.1", "--port", str(self.port), "--threads", str(self.threads),
               "--workers", str(self.workers), *(("--db", self.db_url) if self.db_url else ()),
               *self.extra] if self.argv is None else self.argv
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        # Own process group: kill() takes the workers down with the server (see kill).
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=repo,
                                     start_new_session=True)
        if self.log_path:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not answer on port {self.port} in {timeout} s")

    def kill(self) -> None:
        """SIGKILL to the server and its worker processes at once: no cleanup, no flush;
        what a crash, an OOM kill of the service or a power-off of the web host does."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def worker_pids(self) -> list[int]:
        """Process ids of the worker processes (``--workers`` > 1; Linux /proc)."""
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
_TRIAL_RE = re.compile(r'name="trial" value="([0-9]+)"')
_PROGRESS_RE = re.compile(r'id="progress">(?:([0-9]+) of ([0-9]+)|Practice)<')
_CODE_RE = re.compile(r'id="completion-code">([^<]+)<')


class Participant:
    """A scripted participant: plain HTTP, its own cookie, no JavaScript."""

    def __init__(self, port: int, external_id: str | None = None, timeout: float = 30.0,
                 keepalive: bool = True):
        self.port, self.external_id, self.timeout = port, external_id, timeout
        self.keepalive = keepalive  # False: a new connection per request, as behind a proxy
        self.cookie: str | None = None
        self.csrf: str | None = None
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method: str, path: str, form: dict | None = None) -> tuple[int, dict, str]:
        """One request; returns (status, lower-case headers, body). Connection errors raise."""
        headers = {"Cookie": self.cookie} if self.cookie else {}
        if not self.keepalive:
            headers["Connection"] = "close"
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn = self._connection()
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        self._took(hdrs)
        return resp.status, hdrs, data

    def _took(self, hdrs: dict) -> None:
        """After a response (lower-case ``hdrs``): keep its session cookie; close the
        connection when either side said so."""
        cookie = hdrs.get("set-cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        if not self.keepalive or hdrs.get("connection", "").lower() == "close":
            self.close()

    def begin(self) -> None:
        path = "/" + (f"?pid={self.external_id}" if self.external_id else "")
        status, _, body = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET / -> {status}")
        self.csrf = _CSRF_RE.search(body).group(1)
        form = {"csrf_token": self.csrf, "consent": "yes"}
        if self.external_id:
            form["pid"] = self.external_id
        status, _, _ = self.request("POST", "/start", form)
        if status != 303:
            raise RuntimeError(f"POST /start -> {status}")

    def current(self) -> tuple[int, int | None] | None:
        """(trial index, number of scored trials) of the current trial, or None when done.

        The number is None on the practice trial (its page says "Practice")."""
        status, hdrs, body = self.request("GET", "/trial")
        if status in (302, 303) and hdrs.get("location", "").endswith("/done"):
            return None
        if status != 200:
            raise RuntimeError(f"GET /trial -> {status}")
        self.csrf = _CSRF_RE.search(body).group(1)
        progress = _PROGRESS_RE.search(body)
        n = progress.group(2)
        return int(_TRIAL_RE.search(body).group(1)), None if n is None else int(n)

    def answer(self, index: int, choice: str, **extra: str) -> int:
        """POST one answer; returns the status (303 = stored and acknowledged)."""
        form = {"csrf_token": self.csrf, "trial": str(index), "choice": choice, **extra}
        status, _, _ = self.request("POST", "/trial", form)
        return status

    def completion_code(self) -> str:
        status, _, body = self.request("GET", "/done")
        m = _CODE_RE.search(body)
        if status != 200 or not m:
            raise RuntimeError(f"GET /done -> {status}")
        return m.group(1)


def item_ids(client, html: str) -> tuple[str, str]:
    """(left, right) item ids on a trial page served by a Flask test ``client``.

    The page shows opaque image tokens; a test reads them with the server's key and the
    participant id from the client's session (as the server does), never from the page.
    """
    from survey_app.images import read_token

    key = client.application.extensions["survey"].token_key
    with client.session_transaction() as sess:
        pid = sess["p"]
    tokens = re.findall(r'<image href="/i/([A-Za-z0-9_\-]+)"', html)
    left, right = (str(read_token(key, pid, t)[2]) for t in tokens)
    return left, right


@contextlib.contextmanager
def rendered(app):
    """Collect ``(template name, context)`` of every template ``app`` renders in the block."""
    from flask import template_rendered

    seen: list[tuple[str, dict]] = []

    def record(sender, template, context, **extra):
        seen.append((template.name, context))

    template_rendered.connect(record, app)
    try:
        yield seen
    finally:
        template_rendered.disconnect(record, app)


def study_app(study: Path, db: Path, **config):
    """``create_app`` for ``study`` with a test secret and admin token and ``db`` (SQLite)."""
    return db_app(study, f"sqlite:///{db}", **config)


def db_app(study: Path, url: str, **config):
    """``create_app`` for ``study`` with a test secret and admin token on the database at
    ``url`` (any kind)."""
    from survey_app import create_app

    return create_app({"STUDY_DIR": str(study), "SECRET_KEY": "k" * 40,
                       "ADMIN_TOKEN": ADMIN_TOKEN, "DATABASE_URL": url, **config})


ADMIN_TOKEN = "admin-token-for-tests-0123456789"


def start(client, **fields) -> object:
    """GET / then POST /start (consent given) with ``fields``; returns the /start response."""
    client.get("/")  # makes the session's CSRF token
    return client.post("/start", data={"csrf_token": csrf_of(client), "consent": "yes", **fields})


def csrf_of(client) -> str:
    """The CSRF token of ``client``'s session."""
    with client.session_transaction() as sess:
        return sess["csrf"]
