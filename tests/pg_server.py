"""A throwaway PostgreSQL cluster for the tests (pytest plugin, loaded by ``conftest.py``).

``pg_server`` (session): ``initdb`` + ``pg_ctl start`` in a temporary folder, listening on
a free 127.0.0.1 port (TCP, password authentication) and on a Unix socket inside that
folder; stopped and deleted at the end of the session. PostgreSQL refuses to run as root,
so under root the cluster belongs to the ``postgres`` system user (Debian's package creates
it) and the server processes run as that user; otherwise as the current user.

``pg_url`` (function): a fresh, empty database on that server for one test, as an
SQLAlchemy URL (``postgresql+psycopg://…``); dropped after the test.

The cluster runs with ``fsync=off``: the tests kill the *web* server, never PostgreSQL, so
PostgreSQL's own crash safety is not what they check, and syncing would only slow them.

Skips (with the reason) only where no server can start: no PostgreSQL binaries (set
``HRBENCH_PG_BIN`` to their folder, or install Debian's ``postgresql``), root without a
``postgres`` user, or no ``psycopg`` driver. A server that is present but fails to start is
an error, not a skip.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

SUPERUSER = "hrbench"


def find_pg_bin() -> Path | None:
    """The folder with ``initdb`` and ``pg_ctl``: ``HRBENCH_PG_BIN``, PATH, or Debian's layout."""
    env = os.environ.get("HRBENCH_PG_BIN")
    if env:
        return Path(env) if (Path(env) / "initdb").exists() else None
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        # Resolved: a symlink on PATH may point into a folder that also holds pg_dump.
        return Path(on_path).resolve().parent
    # Debian/Ubuntu keep the server binaries off PATH, one folder per major version.
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    """A running throwaway cluster: connection facts and helpers."""

    bin: Path
    folder: Path
    port: int
    password: str
    user: str | None  # system user the server runs as (None: the current user)
    _names = itertools.count()

    def url(self, database: str = "postgres", *, password: str | None = None,
            user: str = SUPERUSER, host: str = "127.0.0.1", port: int | None = None) -> str:
        pw = self.password if password is None else password
        return f"postgresql+psycopg://{user}:{pw}@{host}:{port or self.port}/{database}"

    def postmaster_pid(self) -> int:
        return int((self.folder / "data" / "postmaster.pid").read_text().split()[0])

    def admin(self, database: str = "postgres"):
        """An autocommit psycopg connection to ``database`` as superuser."""
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER,
                               password=self.password, dbname=database, autocommit=True)

    def create_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def run_tool(self, tool: str, *args: str, **kw) -> subprocess.CompletedProcess:
        """A client tool of the same installation (pg_dump, psql …) against this server."""
        env = dict(os.environ, PGPASSWORD=self.password)
        cmd = [str(self.bin / tool), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER,
               *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, **kw)


def _as_user(user: str | None) -> dict:
    """``subprocess`` arguments that run a command as ``user`` (only needed under root)."""
    if user is None:
        return {}
    pw = pwd.getpwnam(user)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [],
            "env": dict(os.environ, HOME=pw.pw_dir), "cwd": "/"}


def start_cluster(folder: Path, durable: bool = False) -> PgServer:
    """initdb + start a cluster in ``folder`` (which must be empty or absent); see module doc.

    ``durable``: PostgreSQL's default fsync/synchronous_commit (for measurements) instead of
    the tests' fast settings.

    Raises ``RuntimeError`` with the reason when it cannot start for an expected cause
    (binaries, user, driver), ``subprocess.CalledProcessError`` when the server fails.
    """
    pg_bin = find_pg_bin()
    if pg_bin is None:
        raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in "
                           "/usr/lib/postgresql/*/bin; install Debian's postgresql or set "
                           "HRBENCH_PG_BIN")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise RuntimeError("psycopg is not installed: pip install 'hrbench[postgres]'") from None
    user = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("running as root and there is no 'postgres' user to run the "
                               "server as (PostgreSQL refuses root)") from None
        user = "postgres"
    folder.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(12)
    pwfile = folder / "pwfile"
    pwfile.write_text(password + "\n")
    data = folder / "data"
    if user is not None:
        pw = pwd.getpwnam(user)
        os.chown(folder, pw.pw_uid, pw.pw_gid)
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
    run_as = _as_user(user)
    subprocess.run(
        [str(pg_bin / "initdb"), "-D", str(data), "-U", SUPERUSER, "--pwfile", str(pwfile),
         "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale",
         "--no-sync"],
        check=True, capture_output=True, text=True, **run_as,
    )
    pwfile.unlink()
    port = _free_port()
    fast = [] if durable else ["-c fsync=off", "-c synchronous_commit=off",
                               "-c full_page_writes=off"]
    options = " ".join([
        f"-p {port}", "-c listen_addresses=127.0.0.1", f"-c unix_socket_directories={folder}",
        *fast, "-c max_connections=400", "-c shared_buffers=64MB",
    ])
    subprocess.run(
        [str(pg_bin / "pg_ctl"), "start", "-D", str(data), "-w", "-t", "60",
         "-l", str(folder / "server.log"), "-o", options],
        check=True, capture_output=True, text=True, **run_as,
    )
    return PgServer(bin=pg_bin, folder=folder, port=port, password=password, user=user)


def stop_cluster(server: PgServer) -> None:
    subprocess.run(
        [str(server.bin / "pg_ctl"), "stop", "-D", str(server.folder / "data"), "-m", "immediate",
         "-w"],
        capture_output=True, text=True, **_as_user(server.user),
    )
    shutil.rmtree(server.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL server for the whole test session (see the module docstring)."""
    folder = Path(tempfile.mkdtemp(prefix="hrbench-pg-"))
    try:
        server = start_cluster(folder)
    except RuntimeError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"PostgreSQL tests need a server: {exc}")
    except subprocess.CalledProcessError as exc:
        log = folder / "server.log"
        tail = log.read_text()[-2000:] if log.exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr}\n{tail}") from exc
    try:
        yield server
    finally:
        stop_cluster(server)


@pytest.fixture()
def pg_url(pg_server):
    """A fresh, empty database for one test (SQLAlchemy URL); dropped afterwards."""
    name = pg_server.create_database()
    yield pg_server.url(name)
    pg_server.drop_database(name)


DB_PARAMS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _empty_database(request, folder: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{folder / 'votes.db'}"
    server = request.getfixturevalue("pg_server")
    name = server.create_database()
    request.addfinalizer(lambda: server.drop_database(name))
    return server.url(name)


@pytest.fixture(params=DB_PARAMS)
def db_url(request, tmp_path):
    """An empty database for one test, once on SQLite and once on PostgreSQL (URL)."""
    return _empty_database(request, tmp_path)


@pytest.fixture(scope="module", params=DB_PARAMS)
def module_db_url(request, tmp_path_factory):
    """Like ``db_url``, shared by the tests of one module (for module-scoped apps)."""
    return _empty_database(request, tmp_path_factory.mktemp("db"))
