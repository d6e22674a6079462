"""``hrbench survey fit`` and ``hrbench survey simulate``: thin commands over ``bench.ranking``.

``survey_app.cli`` (the site's command group) calls ``register_analysis_commands(sub)`` with
its sub-parsers. What lives here is what needs the site: exporting a study's votes and
finding the benchmark run the study was made from. The analysis, tables and figures are
``bench.ranking``'s.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from bench.cli_args import add_list_option
from bench.errors import UserError
from bench.io import write_json, write_text

if TYPE_CHECKING:
    import pandas as pd

# numpy, pandas, matplotlib and the analysis modules are imported inside the functions that
# use them, so that registering these commands keeps `hrbench` start-up fast.

log = logging.getLogger("hrbench.survey")


def _study_config(source: Path) -> dict:
    """The site's study settings (``STUDY/study.json`` → ``config``), or {} for a CSV."""
    meta = source / "study.json" if source.is_dir() else None
    if meta is None or not meta.is_file():
        return {}
    try:
        cfg = json.loads(meta.read_text(encoding="utf-8")).get("config", {})
    except (json.JSONDecodeError, OSError, AttributeError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def load_votes(source: Path, db_url: str | None = None) -> pd.DataFrame:
    """Votes of a CSV file, or of a study folder: the site's database (``db_url``, else the
    study's SQLite file) through its exporter, else ``STUDY/votes.csv``."""
    from bench.ranking import read_votes

    if not source.exists():
        raise UserError(f"{source}: not found; give a votes CSV or a study folder")
    if not source.is_dir():
        return read_votes(source)
    csv = source / "votes.csv"
    if (source / "study.json").is_file():
        from .export import export_votes

        try:
            return export_votes(source, db_url=db_url)
        except UserError:
            if db_url or not csv.is_file():  # an explicit --db must work or say why
                raise
    if not csv.is_file():
        raise UserError(
            f"{source}: no study.json with a votes database and no votes.csv in this folder; "
            "give a votes CSV (e.g. from `hrbench survey export STUDY --out votes.csv`)"
        )
    return read_votes(csv)


def source_run(study: Path, cfg: dict) -> tuple[Path | None, str | None]:
    """The benchmark run a study was created from (``study.json`` → ``config.run``), and a
    note when it cannot be found or has changed since (its run.json sha256 differs)."""
    from bench.io import sha256_file

    run = cfg.get("run")
    if not isinstance(run, str):
        return None, None
    # Relative to the study folder; studies made before that hold it as given to
    # `survey create` (relative to where that ran).
    for cand in (study / run, Path(run), study.parent / run):
        if (cand / "metrics.csv").is_file():
            want = cfg.get("run_json_sha256")
            if want and (cand / "run.json").is_file() and sha256_file(cand / "run.json") != want:
                return cand, (f"{cand}/run.json changed since the study was created; the "
                              "metrics may not be the ones of the images people saw")
            return cand, None
    return None, (f"the study's source run {run} was not found (no metrics.csv); pass "
                  "--metrics RUN to compare with the metrics")


def cmd_fit(args: argparse.Namespace) -> int:
    from bench.ranking import analyse_votes, read_metrics
    from bench.ranking.report import table_markdown, write_fit_outputs

    source = Path(args.source)
    if args.db and not (source / "study.json").is_file():
        raise UserError(f"--db: {source} is not a study folder; --db reads a study's votes "
                        "from its database")
    votes = load_votes(source, args.db)
    cfg = _study_config(source)
    metrics_src = args.metrics
    if metrics_src is None and cfg:
        run, problem = source_run(source, cfg)
        if problem:
            log.warning("warning: %s", problem)
        if run is not None:
            metrics_src = run
            log.info("comparing with the metrics of %s", run)
    metrics = read_metrics(metrics_src) if metrics_src else None
    resolution = args.resolution
    if resolution is None and isinstance(cfg.get("resolution"), int):
        resolution = cfg["resolution"]
    res = analyse_votes(
        votes, level=args.level, item_sep=args.item_sep, reps=args.reps, seed=args.seed,
        alpha=args.alpha, include_excluded=args.include_excluded, metrics=metrics,
        resolution=resolution, where=str(source), progress=args.reps >= 2000,
    )
    for w in res.warnings:
        log.warning("warning: %s", w)
    out = Path(args.out)
    write_fit_outputs(res, out, str(source), args.scale, metrics)
    print(table_markdown(res.table, args.level, args.scale), end="")
    log.info("wrote tables, charts and report.txt to %s", out)
    return 0


def _parse_participants(values: list[str]) -> list[int]:
    out = []
    for v in values:
        for part in str(v).split(","):
            if part.strip():
                try:
                    n = int(part)
                except ValueError as exc:
                    raise UserError(f"--participants: {part!r} is not a whole number") from exc
                if n < 2:
                    raise UserError("--participants: each N must be at least 2")
                out.append(n)
    return sorted(set(out))


def _simulate_planted(args: argparse.Namespace, ns: list[int]) -> int:
    """``survey simulate --planted METRIC``: check the agreement analysis on crowds that
    follow that metric (from ``--metrics RUN``, or synthetic correlated metrics)."""
    from bench.metrics.registry import spec
    from bench.ranking import read_metrics, simulate

    spec(args.planted)  # an unknown name is a one-line error here, not deep in the run
    if args.metrics:
        metrics = read_metrics(args.metrics)
    else:
        others = [m for m in ("l1", "psnr", "ssim", "lpips") if m != args.planted][:3]
        k = args.methods or 5
        metrics = simulate.synthetic_metrics(
            simulate.method_names(k), [f"img{i:02d}" for i in range(12)],
            {args.planted: 0.0, **dict.fromkeys(others, 0.7)}, seed=args.seed)
    per, summary = simulate.check_agreement(
        metrics, args.planted, ns, reps=args.reps, trials=args.trials, strength=args.strength,
        item_noise=args.item_noise, boot_reps=args.boot, resolution=args.resolution,
        seed=args.seed, progress=True)
    out = Path(args.out)
    write_text(out / "agreement_check_studies.csv", per.to_csv(index=False))
    write_text(out / "agreement_check_summary.csv", summary.to_csv(index=False))
    write_json(out / "simulate.json", {
        "planted": args.planted, "metrics": args.metrics or "synthetic", "participants": ns,
        **{k: v for k, v in vars(args).items()
           if k in ("trials", "strength", "item_noise", "resolution", "reps", "boot", "seed")}})
    print(summary.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    import numpy as np

    from bench.ranking import plots, simulate

    ns = _parse_participants(args.participants)
    if args.reps < 1 or args.boot < 10:
        raise UserError("--reps must be >= 1 and --boot >= 10")
    if args.planted:
        return _simulate_planted(args, ns)
    if args.scores is None:
        k = args.methods or 5
        scores = list(np.linspace(0.5, -0.5, k))
    else:
        scores = args.scores
        if args.methods is not None and args.methods != len(scores):
            raise UserError(f"--scores: {len(scores)} values given but --methods {args.methods}")
    per, summary = simulate.simulate_grid(
        scores, ns, reps=args.reps, boot_reps=args.boot, trials=args.trials,
        validation=args.validation, cheaters=args.cheaters, biased=args.biased,
        side_bias=args.side_bias, lapse=args.lapse, seed=args.seed, progress=True,
    )
    out = Path(args.out)
    write_text(out / "simulate_studies.csv", per.to_csv(index=False))
    write_text(out / "simulate_summary.csv", summary.to_csv(index=False))
    write_json(out / "simulate.json", {"scores": [float(s) for s in scores],
                                       "participants": ns, **{k: v for k, v in vars(args).items()
                                                              if k in ("trials", "validation",
                                                                       "cheaters", "biased",
                                                                       "side_bias", "lapse",
                                                                       "reps", "boot", "seed")}})
    plots.planning_plot(summary, out / "simulate")
    cols = ["participants", "studies", "p_order", "p_all_adjacent", "coverage", "excluded"]
    print(summary[cols].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    need = simulate.needed_participants(summary)
    print("participants for P(every adjacent pair separated) >= 0.8: "
          + (str(need) if need else f"more than {max(ns)}"))
    return 0


def register_analysis_commands(survey_subparsers: argparse._SubParsersAction) -> None:
    """Add ``fit`` and ``simulate`` to the ``hrbench survey`` group."""
    p = survey_subparsers.add_parser(
        "fit", help="Bradley–Terry scores with bootstrap CIs, checks, charts",
        description="Fit Bradley–Terry scores to pairwise votes (a CSV with columns "
        "participant,left,right,choice[,excluded,is_validation,trial,rt_ms] or a study "
        "folder) and write tables (md/csv/LaTeX), a ranking chart (PNG/PDF), a win-matrix "
        "heatmap and report.txt; with the benchmark run's metrics (found through a study "
        "folder's study.json, or --metrics), vote-level agreement of each metric with people "
        "(agreement.md/.csv/.tex/.png) and a metric-vs-crowd scatter. choice: left, right, "
        "the chosen item's name, or tie/none (a tie counts as half a win for each side).",
    )
    p.add_argument("source", help="votes CSV or STUDY folder")
    p.add_argument("--db", default=None,
                   help="with a STUDY folder: its database URL if served with --db")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--level", choices=("method", "item"), default="method",
                   help="rank methods (items METHOD/IMAGE pooled over images) or items")
    p.add_argument("--item-sep", default="/",
                   help="separator between method and image in item names (default '/')")
    p.add_argument("--reps", type=int, default=1000, help="bootstrap replicates (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--alpha", type=float, default=None,
                   help="choix regularisation (default 0.01 / number of units; 0 = plain MLE)")
    p.add_argument("--include-excluded", action="store_true",
                   help="fit with the excluded people too (the audit shows both anyway)")
    p.add_argument("--metrics", help="benchmark RUN folder or its metrics.csv (default for a "
                   "study folder: the run it was created from)")
    p.add_argument("--resolution", type=int, help="resolution of the metrics to compare with")
    p.add_argument("--scale", choices=("bt", "jod"), default="bt",
                   help="score of the ranking table and chart: Bradley-Terry log-strength or "
                   "JOD (Thurstone Case V, 1 JOD = 75%% preference); ranking.csv has both")
    p.set_defaults(func=cmd_fit)

    s = survey_subparsers.add_parser(
        "simulate", help="simulate crowds to plan how many participants a study needs",
        description="Simulate studies with honest, cheating (random) and position-biased "
        "people, analyse them like real votes, and report how often the true order is "
        "recovered and every adjacent pair is separated at 95 %%. With --planted METRIC, "
        "simulate crowds whose choices follow that metric per image (plus noise) instead, "
        "and report how often the vote-level agreement analysis ranks it first and whether "
        "its human-ceiling interval holds the ceiling the simulated noise implies.",
    )
    s.add_argument("--methods", type=int, help="number of methods (default: len(--scores) or 5)")
    add_list_option(s, "--scores", item_type=float, metavar="S",
                    help="true BT log-strengths, one per method (default evenly 0.5 … -0.5)")
    add_list_option(s, "--participants", default=["50", "100", "150", "250"], metavar="N",
                    help="participant counts to simulate, e.g. 50 100 150 or 50,100")
    s.add_argument("--trials", type=int, default=25, help="answers per person (default 25)")
    s.add_argument("--validation", type=int, default=2,
                   help="validation questions among them (default 2)")
    s.add_argument("--cheaters", type=float, default=0.1,
                   help="fraction of random clickers (default 0.1)")
    s.add_argument("--biased", type=float, default=0.05,
                   help="fraction of position-biased people (default 0.05)")
    s.add_argument("--side-bias", type=float, default=0.8,
                   help="how often a biased person presses left regardless (default 0.8)")
    s.add_argument("--lapse", type=float, default=0.02,
                   help="honest error rate on validation questions (default 0.02)")
    s.add_argument("--reps", type=int, default=100, help="studies per N (default 100)")
    s.add_argument("--boot", type=int, default=500,
                   help="bootstrap replicates per simulated study (default 500)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--planted", metavar="METRIC",
                   help="simulate crowds that follow this metric (e.g. ssim) to check the "
                   "agreement analysis")
    s.add_argument("--metrics", metavar="RUN",
                   help="with --planted: a run folder or metrics.csv whose per-image values "
                   "drive the crowd (default: synthetic correlated metrics)")
    s.add_argument("--resolution", type=int, help="with --metrics: the resolution to use")
    s.add_argument("--strength", type=float, default=1.5,
                   help="with --planted: logits per standard deviation of the metric "
                   "(default 1.5; smaller = noisier people)")
    s.add_argument("--item-noise", type=float, default=0.0,
                   help="with --planted: per-image quality the metric misses, in logits "
                   "(default 0)")
    s.add_argument("--out", default="simulate_out", help="output folder")
    s.set_defaults(func=cmd_simulate)
