"""``hrbench survey create|serve|export`` (and ``fit``/``simulate`` from ``analysis_cli``)."""

from __future__ import annotations

import argparse
import importlib
import logging
from pathlib import Path

from bench.cli_args import add_list_option
from bench.errors import UserError

log = logging.getLogger(__name__)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _viewport(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or int(w) < 1 or int(h) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: use WIDTHxHEIGHT in CSS pixels, e.g. 720x400")
    return int(w), int(h)


def cmd_create(args: argparse.Namespace) -> int:
    from .study import MIN_VIEWPORT, create_study

    spec = create_study(
        args.run,
        args.out,
        resolution=args.resolution,
        methods=args.methods,
        images=args.images,
        trials_per_participant=args.trials_per_participant,
        validation=args.validation,
        display=args.display,
        max_side=args.max_side,
        crop_size=args.crop_size,
        repeat_swapped=args.repeat_swapped,
        seed=args.seed,
        question=args.question,
        name=args.name,
        completion_url=args.completion_url,
        practice=args.practice,
        validation_tolerance=args.validation_tolerance,
        allow_phone=args.allow_phone,
        min_viewport=args.min_viewport or MIN_VIEWPORT,
    )
    n_cmp = sum(p["kind"] == "compare" for p in spec.pairs)
    log.info(
        "created study %s in %s: %d items, %d pairs to compare, %d validation questions",
        spec.uid, args.out, len(spec.items), n_cmp, len(spec.pairs) - n_cmp,
    )
    log.info("serve it with: hrbench survey serve %s", args.out)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .app import create_app
    from .db import shown_url
    from .security import ADMIN_ENV, ADMIN_FILE, SECRET_ENV, SECRET_FILE, ensure_secret
    from .serving import serve
    from .study import load_study

    spec = load_study(args.study)
    instance = spec.folder / "instance"
    url = _db_url(args, spec.folder)
    if args.workers > 1 and url.startswith("sqlite"):
        # SQLite's write path (group commit, write lock, balance-count cache) lives in one
        # process; several processes would queue on the file lock and plan from stale counts.
        raise UserError(f"--workers {args.workers}: SQLite is served by one process; use "
                        "--threads for more concurrency, or PostgreSQL (--db postgresql://...)"
                        " for several processes")
    # The secrets live beside the database so sessions survive a restart; never in code.
    secret, _ = ensure_secret(instance, SECRET_ENV, SECRET_FILE, "session secret key")
    token, made = ensure_secret(instance, ADMIN_ENV, ADMIN_FILE, "admin token")
    config = {"STUDY_DIR": str(spec.folder), "SECRET_KEY": secret, "ADMIN_TOKEN": token,
              "DATABASE_URL": url}
    if args.sqlite_synchronous:
        config["SQLITE_SYNCHRONOUS"] = args.sqlite_synchronous
    if args.no_start_limit:
        config["START_RATE"] = (1, 0)
    config["PROXIES"] = args.proxies
    config["FRAME_ANCESTORS"] = args.allow_framing or []
    if args.secure_cookies:
        config["SESSION_COOKIE_SECURE"] = True
    if args.completion_url:
        config["COMPLETION_URL"] = args.completion_url
    config["COMPLETION_CODES"] = {"completed": args.code_completed,
                                  "failed_screening": args.code_failed_screening,
                                  "returned": args.code_returned}
    config["DB_POOL_SIZE"] = max(4, args.threads)

    def ready(app, port: int) -> None:
        log.info(
            "serving study %s (%s) on http://%s:%d with waitress, %d process%s x %d threads; "
            "database %s", spec.uid, spec.name, args.host, port, args.workers,
            "es" if args.workers > 1 else "", args.threads, shown_url(url),
        )
        log.info("admin page: http://%s:%d/admin/ (token in %s%s)", args.host, port,
                 instance / ADMIN_FILE, ", just created" if made else "")

    serve(lambda: create_app(config), host=args.host, port=args.port, threads=args.threads,
          workers=args.workers, on_ready=ready)
    return 0


def _db_url(args: argparse.Namespace, study_dir: Path) -> str:
    """--db, else HRBENCH_DATABASE_URL, else the study's SQLite file."""
    import os

    from .db import default_db_url, normalise_url

    return normalise_url(args.db or os.environ.get("HRBENCH_DATABASE_URL")
                         or default_db_url(study_dir))


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from . import migrations
    from .db import default_db_url, open_database, shown_url
    from .study import load_study

    spec = load_study(args.study)
    url = _db_url(args, spec.folder)
    if url == default_db_url(spec.folder) and not (spec.folder / "instance" / "survey.db").exists():
        raise UserError(f"{spec.folder / 'instance' / 'survey.db'}: no database yet; nothing to "
                        "upgrade (serve creates it at the current schema)")
    db = open_database(url, create=False, check_schema=False)
    try:
        before, after = migrations.upgrade(db.engine)
    finally:
        db.dispose()
    if before == after:
        log.info("%s: schema already at revision %s", shown_url(url), after)
    else:
        log.info("%s: schema upgraded from revision %s to %s", shown_url(url), before, after)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_participants, export_votes, write_votes_csv

    df = export_votes(args.study, db_url=args.db)
    write_votes_csv(df, args.out)
    n_ex = int(df["excluded"].sum()) if len(df) else 0
    log.info("wrote %d answers (%d from excluded people, marked) to %s", len(df), n_ex, args.out)
    if args.participants:
        people = export_participants(args.study, db_url=args.db)
        write_votes_csv(people, args.participants)
        log.info("wrote %d participants (ids, outcomes, codes, flags) to %s", len(people),
                 args.participants)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    survey = subparsers.add_parser(
        "survey", help="pairwise-voting studies: create, serve, export (and fit, simulate)"
    )
    sub = survey.add_subparsers(dest="survey_command", metavar="SUBCOMMAND", required=True)

    c = sub.add_parser("create", help="build a study folder from a benchmark run")
    c.add_argument("--run", required=True, type=Path, help="run folder written by `hrbench run`")
    c.add_argument("--resolution", required=True, type=_positive_int, help="e.g. 1024")
    add_list_option(c, "--methods", metavar="METHOD", help="methods to compare (default: all in the run)")
    add_list_option(c, "--images", metavar="IMAGE", help="image names (default: all)")
    c.add_argument("--trials-per-participant", type=_positive_int, default=25,
                   help="answers per person, validation included (default 25)")
    c.add_argument("--validation", type=int, default=2,
                   help="validation questions per person (default 2)")
    c.add_argument("--repeat-swapped", action=argparse.BooleanOptionalAction, default=True,
                   help="show one pair twice per person, sides swapped (consistency check; "
                   "default on)")
    c.add_argument("--practice", action=argparse.BooleanOptionalAction, default=True,
                   help="a practice trial with feedback before the scored ones (default on)")
    c.add_argument("--validation-tolerance", type=int, default=0,
                   help="validation failures a person may make and stay included (default 0: "
                   "one failure excludes)")
    c.add_argument("--allow-phone", action="store_true",
                   help="let phone-sized windows take part (stacked layout); default: they "
                   "get a 'please use a larger screen' page")
    c.add_argument("--min-viewport", type=_viewport, default=None, metavar="WxH",
                   help="smallest browser window in CSS pixels (default 720x400)")
    c.add_argument("--display", choices=("full", "crop"), default="full",
                   help="full: the whole image, scaled down only to fit --max-side; crop: "
                   "1:1 square around the hole")
    c.add_argument("--max-side", type=_positive_int, default=4096,
                   help="largest side of a full display image (default 4096: native size "
                   "for the paper's resolutions)")
    c.add_argument("--crop-size", type=_positive_int, default=512)
    c.add_argument("--question", default=None, help="the question shown on every trial")
    c.add_argument("--name", default=None, help="study name shown to admins")
    c.add_argument("--completion-url", default=None,
                   help="crowd-platform return URL; {code} is replaced by the completion code")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", required=True, type=Path, help="new study folder")
    c.set_defaults(func=lambda a: cmd_create(_with_question(a)))

    s = sub.add_parser("serve", help="serve a study with waitress (production WSGI server)")
    s.add_argument("study", type=Path)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--threads", type=_positive_int, default=16,
                   help="waitress threads per process (default 16; answers waiting for the same "
                   "commit share one disk sync, so more threads help on slow disks)")
    s.add_argument("--workers", type=_positive_int, default=1,
                   help="server processes on one socket (default 1; more needs PostgreSQL)")
    s.add_argument("--db", default=None,
                   help="database URL, e.g. postgresql://USER:PASSWORD@HOST:PORT/DB "
                   "(default STUDY/instance/survey.db; or set HRBENCH_DATABASE_URL)")
    s.add_argument("--sqlite-synchronous", choices=("NORMAL", "FULL"), default=None,
                   help="FULL (default) survives power loss; NORMAL survives crashes, is faster")
    s.add_argument("--no-start-limit", action="store_true",
                   help="no per-address limit on new participants (load tests, lab setups)")
    s.add_argument("--proxies", type=int, default=0, metavar="N",
                   help="trust N reverse proxies in front: client address and scheme come "
                   "from X-Forwarded-For/-Proto (rate limits key on the real client)")
    s.add_argument("--secure-cookies", action="store_true",
                   help="session cookie only over HTTPS (automatic for HTTPS requests)")
    s.add_argument("--allow-framing", action="append", metavar="ORIGIN",
                   help="let ORIGIN show the site in a frame, e.g. https://www.mturk.com for "
                   "an MTurk ExternalQuestion (repeatable; needs HTTPS)")
    s.add_argument("--completion-url", default=None,
                   help="platform return URL ({code} is replaced); overrides the study's, "
                   "e.g. https://app.prolific.com/submissions/complete?cc={code}")
    s.add_argument("--code-completed", default=None, metavar="CODE",
                   help="fixed completion code for everyone who completes (Prolific); "
                   "default: a random code per person")
    s.add_argument("--code-failed-screening", default=None, metavar="CODE",
                   help="fixed code for people excluded by the validation questions")
    s.add_argument("--code-returned", default=None, metavar="CODE",
                   help="fixed code for people who withdraw")
    s.set_defaults(func=cmd_serve)

    e = sub.add_parser("export", help="write every answer as a tidy CSV")
    e.add_argument("study", type=Path)
    e.add_argument("--out", required=True, type=Path)
    e.add_argument("--participants", type=Path, default=None, metavar="CSV",
                   help="also write one row per participant (platform ids, outcome, code, "
                   "quality flags), those without answers included")
    e.add_argument("--db", default=None, help="SQLAlchemy URL if served with --db")
    e.set_defaults(func=cmd_export)

    d = sub.add_parser("db", help="database maintenance")
    dsub = d.add_subparsers(dest="db_command", metavar="SUBCOMMAND", required=True)
    u = dsub.add_parser("upgrade", help="migrate the study's database schema to this version "
                        "(back it up first: pg_dump, or copy the SQLite file)")
    u.add_argument("study", type=Path)
    u.add_argument("--db", default=None, help="database URL if served with --db")
    u.set_defaults(func=cmd_db_upgrade)

    try:
        analysis_cli = importlib.import_module("survey_app.analysis_cli")
    except ModuleNotFoundError as exc:
        if exc.name != "survey_app.analysis_cli":
            raise
        return
    analysis_cli.register_analysis_commands(sub)


def _with_question(args: argparse.Namespace) -> argparse.Namespace:
    from .study import DEFAULT_QUESTION

    if args.question is None:
        args.question = DEFAULT_QUESTION
    return args
