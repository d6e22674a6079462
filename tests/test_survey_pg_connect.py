"""Opening a survey database: URL mapping and one-line errors (exit 2), against a real server
(the tests that need none run by default)."""

from __future__ import annotations

import builtins
import socket

import pytest
from sqlalchemy import text
from survey_helpers import make_fake_run

from bench.cli import main as cli_main
from bench.errors import UserError
from survey_app import create_app
from survey_app.db import normalise_url, open_database, shown_url
from survey_app.study import create_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("pg_connect")
    run = make_fake_run(root / "run", methods=("good", "flat"), images=("alpha",))
    create_study(run, root / "study", resolution=128, trials_per_participant=2, validation=1,
                 progress=False)
    return root / "study"


def _serve_error(capsys, study, url: str) -> str:
    """``hrbench survey export STUDY --db URL`` must fail with exit 2 and one line."""
    rc = cli_main(["survey", "export", str(study), "--db", url, "--out", "/dev/null"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("hrbench: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def test_url_mapping_and_password_masking():
    assert normalise_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalise_url("postgres://u@h:5433/db") == "postgresql+psycopg://u@h:5433/db"
    assert normalise_url("postgresql+psycopg2://h/db") == "postgresql+psycopg2://h/db"
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"
    assert "secret" not in shown_url("postgresql+psycopg://u:secret@h/db")


@pytest.mark.postgres
def test_plain_postgresql_url_works(pg_server, study):
    name = pg_server.create_database()
    url = pg_server.url(name).replace("postgresql+psycopg://", "postgresql://")
    app = create_app({"STUDY_DIR": str(study), "SECRET_KEY": "k" * 40, "DATABASE_URL": url})
    db = app.extensions["survey"].db
    assert db.engine.dialect.driver == "psycopg"
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM study")).scalar() == 1
    db.dispose()


def test_missing_driver(study, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_psycopg(name, *args, **kwargs):
        if name == "psycopg" or name.startswith("psycopg."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_psycopg)
    line = _serve_error(capsys, study, "postgresql://u:p@127.0.0.1:1/db")
    assert "pip install 'hrbench[postgres]'" in line and "psycopg" in line


def test_unreachable_port(study, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = _serve_error(capsys, study, f"postgresql://u:pw@127.0.0.1:{port}/db")
    assert f"127.0.0.1:{port}" in line and "connection refused" in line
    assert "pw" not in line.split("127.0.0.1")[0]  # the password is masked


def test_unknown_host(study, capsys):
    line = _serve_error(capsys, study, "postgresql://u:p@no-such-host.invalid:5432/db")
    assert "unknown host 'no-such-host.invalid'" in line


@pytest.mark.postgres
def test_wrong_password(pg_server, study, capsys):
    name = pg_server.create_database()
    line = _serve_error(capsys, study, pg_server.url(name, password="wrong"))
    assert "authentication as 'hrbench' failed" in line and "wrong" not in line
    line = _serve_error(capsys, study, pg_server.url(name, user="nobody"))
    assert "authentication as 'nobody' failed" in line


@pytest.mark.postgres
def test_missing_database(pg_server, study, capsys):
    line = _serve_error(capsys, study, pg_server.url("no_such_db"))
    assert "'no_such_db' does not exist" in line
    assert f"createdb -h 127.0.0.1 -p {pg_server.port} -U hrbench no_such_db" in line


@pytest.mark.postgres
def test_empty_database_on_export(pg_url, study, capsys):
    line = _serve_error(capsys, study, pg_url)
    assert "holds no survey yet" in line


@pytest.mark.postgres
def test_database_holding_another_study(pg_url, study, tmp_path, capsys):
    app = create_app({"STUDY_DIR": str(study), "SECRET_KEY": "k" * 40, "DATABASE_URL": pg_url})
    app.extensions["survey"].db.dispose()
    run = make_fake_run(tmp_path / "run2", methods=("good", "flat"), images=("beta",))
    other = create_study(run, tmp_path / "other", resolution=128, trials_per_participant=2,
                         validation=1, progress=False)
    with pytest.raises(UserError, match="holds another study") as err:
        create_app({"STUDY_DIR": str(tmp_path / "other"), "SECRET_KEY": "k" * 40,
                    "DATABASE_URL": pg_url})
    assert other.uid in str(err.value)
    line = _serve_error(capsys, tmp_path / "other", pg_url)
    assert "holds another study" in line and "one database per study" in line


@pytest.mark.postgres
def test_serve_reports_errors_in_one_line(pg_server, study, capsys):
    rc = cli_main(["survey", "serve", str(study), "--db", pg_server.url("nope"), "--port", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "createdb" in err[0]


@pytest.mark.postgres
def test_open_database_checks_once_and_creates(pg_url):
    db = open_database(pg_url, create=True)
    with db.engine.connect() as conn:
        tables = set(conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())
    db.dispose()
    assert {"study", "item", "pair", "participant", "trial", "vote", "alembic_version"} <= tables


@pytest.mark.postgres
def test_user_without_create_rights(pg_server, study, capsys):
    """PostgreSQL 15 lets only the owner create tables in a database's public schema."""
    name = pg_server.create_database()
    with pg_server.admin() as conn:
        conn.execute("DROP ROLE IF EXISTS visitor")
        conn.execute("CREATE ROLE visitor LOGIN PASSWORD 'visitor'")
    with pg_server.admin(name) as conn:  # the PostgreSQL 15 default, also on older servers
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    url = pg_server.url(name, user="visitor", password="visitor")
    with pytest.raises(UserError, match="may not create or read the survey tables") as err:
        create_app({"STUDY_DIR": str(study), "SECRET_KEY": "k" * 40, "DATABASE_URL": url})
    assert f"createdb -O visitor {name}" in str(err.value)
