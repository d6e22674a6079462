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


def cmd_create(args: argparse.Namespace) -> int:
    from .study import create_study

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
    )
    n_cmp = sum(p["kind"] == "compare" for p in spec.pairs)
    log.info(
        "created study %s in %s: %d items, %d pairs to compare, %d validation questions",
        spec.uid, args.out, len(spec.items), n_cmp, len(spec.pairs) - n_cmp,
    )
    log.info("serve it with: hrbench survey serve %s", args.out)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import waitress

    from .app import create_app
    from .security import ADMIN_ENV, ADMIN_FILE, SECRET_ENV, SECRET_FILE, ensure_secret
    from .study import load_study

    spec = load_study(args.study)
    instance = spec.folder / "instance"
    # The secrets live beside the database so sessions survive a restart; never in code.
    secret, _ = ensure_secret(instance, SECRET_ENV, SECRET_FILE, "session secret key")
    token, made = ensure_secret(instance, ADMIN_ENV, ADMIN_FILE, "admin token")
    config = {"STUDY_DIR": str(spec.folder), "SECRET_KEY": secret, "ADMIN_TOKEN": token}
    if args.db:
        config["DATABASE_URL"] = args.db
    if args.sqlite_synchronous:
        config["SQLITE_SYNCHRONOUS"] = args.sqlite_synchronous
    if args.no_start_limit:
        config["START_RATE"] = (1, 0)
    config["DB_POOL_SIZE"] = max(4, args.workers)
    app = create_app(config)
    log.info(
        "serving study %s (%s) on http://%s:%d with waitress, %d threads; database %s",
        spec.uid, spec.name, args.host, args.port, args.workers, app.config["DATABASE_URL"],
    )
    log.info("admin page: http://%s:%d/admin/ (token in %s%s)", args.host, args.port,
             instance / ADMIN_FILE, ", just created" if made else "")
    # Waitress warns on every queued request; with more clients than threads that is normal.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    try:
        waitress.serve(
            app,
            host=args.host,
            port=args.port,
            threads=args.workers,
            ident="hrbench-survey",
            # Bounded request sizes in front of Flask's own MAX_CONTENT_LENGTH.
            max_request_body_size=1 << 20,
            max_request_header_size=64 * 1024,
            connection_limit=max(100, 4 * args.workers),
        )
    except OSError as exc:
        raise UserError(f"--host/--port {args.host}:{args.port}: cannot listen ({exc})") from None
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_votes, write_votes_csv

    df = export_votes(args.study, db_url=args.db)
    write_votes_csv(df, args.out)
    n_ex = int(df["excluded"].sum()) if len(df) else 0
    log.info("wrote %d answers (%d from excluded people, marked) to %s", len(df), n_ex, args.out)
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
    c.add_argument("--repeat-swapped", action="store_true",
                   help="show one pair twice per person, sides swapped (consistency check)")
    c.add_argument("--display", choices=("full", "crop"), default="full",
                   help="full: scaled to fit --max-side; crop: 1:1 square around the hole")
    c.add_argument("--max-side", type=_positive_int, default=1280)
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
    s.add_argument("--workers", type=_positive_int, default=16,
                   help="waitress threads (default 16; answers waiting for the same commit "
                   "share one disk sync, so more threads help on slow disks)")
    s.add_argument("--db", default=None, help="SQLAlchemy URL (default STUDY/instance/survey.db)")
    s.add_argument("--sqlite-synchronous", choices=("NORMAL", "FULL"), default=None,
                   help="FULL (default) survives power loss; NORMAL survives crashes, is faster")
    s.add_argument("--no-start-limit", action="store_true",
                   help="no per-address limit on new participants (load tests, lab setups)")
    s.set_defaults(func=cmd_serve)

    e = sub.add_parser("export", help="write every answer as a tidy CSV")
    e.add_argument("study", type=Path)
    e.add_argument("--out", required=True, type=Path)
    e.add_argument("--db", default=None, help="SQLAlchemy URL if served with --db")
    e.set_defaults(func=cmd_export)

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
