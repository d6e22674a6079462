"""Schema migrations of the survey database (Alembic scripts in ``versions/``, shipped in the wheel).

How a database's schema is handled (the same on SQLite and PostgreSQL):

- **empty** (no survey tables): :func:`prepare` creates the current models with
  ``create_all`` and stamps the head revision, in one transaction under a lock so that
  several server processes starting at once create it once. (Running every migration from
  revision 1 would give the same schema, slower; the test that autogenerate finds no
  difference between the migrations' result and the models is what keeps the two equal.)
- **at head**: used as is.
- **older revision**, or survey tables without a revision (made by hrbench before
  migrations existed = revision 0001): refused with :class:`SchemaOutdated`, which tells to
  run ``hrbench survey db upgrade``. The server never migrates by itself: a migration of a
  live study is an operator's decision (take a ``pg_dump`` first).
- **newer revision** than this code knows: refused (an older hrbench would misread it).

:func:`upgrade` is what ``hrbench survey db upgrade`` runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

# Alembic logs at INFO from import on (plugin set-up, dialect); hrbench's command line shows
# INFO, and a one-line error must stay one line. upgrade() turns its step log back on.
logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from sqlalchemy import Connection, Engine, inspect, text  # noqa: E402

FIRST = "0001"  # the schema of every database made before migrations existed
_HERE = Path(__file__).resolve().parent
# Any number: the key of the PostgreSQL advisory lock that serialises schema set-up.
_LOCK_KEY = 0x6872_6263  # "hrbc"


class SchemaOutdated(Exception):
    """The database's schema revision is not the one this code needs (message says why)."""


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision shipped with this code."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _known(rev: str) -> bool:
    script = ScriptDirectory.from_config(alembic_config())
    try:
        return script.get_revision(rev) is not None
    except Exception:  # alembic raises several types for unknown ids
        return False


def revision_of(conn: Connection) -> str | None:
    """The database's revision: from ``alembic_version``; ``FIRST`` for survey tables made
    before migrations existed; None for a database without survey tables."""
    rev = MigrationContext.configure(conn).get_current_revision()
    if rev is not None:
        return rev
    return FIRST if inspect(conn).has_table("study") else None


def _lock(conn: Connection) -> None:
    """Serialise schema changes across processes (PostgreSQL; SQLite's write lock does it)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})


def prepare(engine: Engine, upgrade_hint: str) -> None:
    """Make an empty database current; check a used one (see the module docstring).

    ``upgrade_hint``: the command to name in the error, e.g. ``hrbench survey db upgrade S``.
    Raises :class:`SchemaOutdated`.
    """
    from survey_app.models import Base

    want = head()
    with engine.begin() as conn:
        _lock(conn)
        rev = revision_of(conn)
        if rev is None:
            Base.metadata.create_all(conn)
            MigrationContext.configure(conn).stamp(ScriptDirectory.from_config(alembic_config()),
                                                   want)
            return
    if rev == want:
        return
    if not _known(rev):
        raise SchemaOutdated(
            f"database schema is at revision {rev}, newer than this hrbench knows ({want}); "
            "upgrade hrbench"
        )
    raise SchemaOutdated(
        f"database schema is at revision {rev}, this hrbench needs {want}; back the database "
        f"up, then run `{upgrade_hint}`"
    )


def upgrade(engine: Engine, target: str = "head") -> tuple[str | None, str]:
    """Migrate to ``target``; returns (revision before, revision after).

    An empty database gets every migration from the first. A database made before
    migrations existed is stamped ``FIRST`` and migrated from there.
    """
    logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)  # says each step
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # Batch mode rebuilds a table by copy, drop and rename; with foreign keys on, the
            # drop would cascade into (or be refused by) the rows that reference it. The
            # pragma only works outside a transaction, hence on the driver before BEGIN.
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                _lock(conn)
                before = revision_of(conn)
                if before == FIRST and MigrationContext.configure(conn).get_current_revision() \
                        is None:
                    MigrationContext.configure(conn).stamp(
                        ScriptDirectory.from_config(alembic_config()), FIRST)
                command.upgrade(alembic_config(conn), target)
                after = MigrationContext.configure(conn).get_current_revision()
                if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise RuntimeError("a migration broke a foreign key; nothing was changed")
        finally:
            if sqlite:
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")
    return before, after
