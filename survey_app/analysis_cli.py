"""``hrbench survey fit`` and ``hrbench survey simulate``.

``survey_app.cli`` (the site's command group) calls ``register_analysis_commands(sub)`` with
its sub-parsers; this module only adds the two analysis commands and writes their files.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

from bench.cli_args import add_list_option
from bench.errors import UserError
from bench.io import write_json, write_text

if TYPE_CHECKING:
    import pandas as pd

    from . import analysis

# numpy, pandas, matplotlib and the analysis modules are imported inside the functions that
# use them, so that registering these commands keeps `hrbench` start-up fast.

log = logging.getLogger("hrbench.survey")


# --------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------


def _fmt(x: float, nd: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _display_rows(table: pd.DataFrame, unit: str) -> list[list[str]]:
    return [
        [str(r["rank"]), str(r[unit]), _fmt(r["score"]),
         f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]", _fmt(r["p_beat_avg"], 3),
         f"[{_fmt(r['p_ci_low'], 3)}, {_fmt(r['p_ci_high'], 3)}]", f"{r['wins']:g}",
         f"{r['n_votes']:g}"]
        for _, r in table.iterrows()
    ]


def _headers(unit: str) -> list[str]:
    return ["rank", unit, "score", "95% CI", "P(beat avg)", "95% CI", "wins", "n votes"]


def table_markdown(table: pd.DataFrame, unit: str) -> str:
    """The ranking as a Markdown table (score = centred BT log-strength)."""
    head = _headers(unit)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in _display_rows(table, unit)]
    return "\n".join(lines) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#",
        "$": r"\$", "{": r"\{", "}": r"\}", "–": "--"}


def _tex(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in s)


def table_latex(table: pd.DataFrame, unit: str) -> str:
    """The ranking as a LaTeX ``tabular`` (booktabs rules)."""
    head = [_tex(h) for h in _headers(unit)]
    lines = [r"\begin{tabular}{rlrcrcrr}", r"\toprule", " & ".join(head) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(c) for c in r) + r" \\" for r in _display_rows(table, unit)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def text_report(res: analysis.StudyAnalysis, source: str) -> str:
    """A short plain-text report of the fit and the data checks."""
    c, s, unit = res.counts, res.settings, res.settings["level"]
    out = [f"Bradley–Terry analysis of {source}", ""]
    out.append(f"participants: {c['participants']} ({c['participants_excluded']} excluded, "
               f"{c['participants_in_fit']} in the fit); votes in the fit: {c['votes_in_fit']} "
               f"(ties: {c['ties_in_fit']}, counted as half a win each); validation answers: "
               f"{c['validation_rows']} (never in the fit)")
    out.append(f"fit: choix I-LSR, alpha={s['alpha']:.3g} (prior precision "
               f"{s['prior_precision_per_item']:.3g} per {unit}); {s['reps']} participant "
               f"bootstrap replicates, seed {s['seed']}; {s['interval']} intervals")
    out += [f"note: {n}" for n in res.notes]
    out += ["", "Ranking (score = centred log-strength):", table_markdown(res.table, unit)]
    k = len(res.items)
    sig_pairs = [(res.items[i], res.items[j], res.summary.p_better[i, j])
                 for i in range(k) for j in range(k)
                 if res.summary.significant[i, j] and res.summary.p_better[i, j] > 0.5]
    not_sig = [(res.items[i], res.items[j], res.summary.p_better[i, j])
               for i in range(k) for j in range(i + 1, k) if not res.summary.significant[i, j]]
    out.append(f"Significant pairs at 95 %: {len(sig_pairs)} of {k * (k - 1) // 2}")
    if not_sig:
        out.append("Not separated: " + "; ".join(
            f"{a} vs {b} (P(first better)={p:.2f})" for a, b, p in not_sig))
    out += ["", "Checks:"]
    pb = res.position
    if pb["n"]:
        verdict = "BIAS" if pb["p_value"] < 0.01 else "no evidence of bias"
        out.append(f"- position: left chosen in {pb['n_left']} of {pb['n']} decided votes "
                   f"({pb['share_left']:.3f}, 95% CI {pb['ci_low']:.3f}–{pb['ci_high']:.3f}), "
                   f"binomial p={pb['p_value']:.3g}: {verdict}")
    ppl = res.people
    if len(ppl):
        same = ppl[ppl["always_same_side"]]
        out.append(f"- always the same side: {len(same)} people"
                   + (f" ({', '.join(map(str, same['participant'][:10]))}"
                      f"{' …' if len(same) > 10 else ''})" if len(same) else ""))
        low = ppl[(ppl["agreement_p"] > 0.5)]
        out.append(f"- agreement with the consensus no better than chance (one-sided p > 0.5): "
                   f"{len(low)} people; median agreement {ppl['agreement'].median():.2f}")
        rep = int(ppl["n_repeats"].sum())
        if rep:
            out.append(f"- repeated pairs: {rep}, answered inconsistently: "
                       f"{int(ppl['n_inconsistent'].sum())}, swapped but same side pressed: "
                       f"{int(ppl['n_swapped_same_side'].sum())}")
        else:
            out.append("- repeated pairs: none in the data (no consistency check possible)")
        out.append(f"- circular triads: {int(ppl['circular_triads'].sum())} within people; "
                   f"{res.triads_aggregate} in the aggregate majority preferences")
    out.append(f"- exclusion audit: Kendall tau between rankings with and without the excluded "
               f"people = {_fmt(c['exclusion_audit_tau'], 3)}")
    moved = res.audit[res.audit["rank_change"] != 0]
    for _, r in moved.iterrows():
        out.append(f"    {r[unit]}: rank {r['rank_included']} without them, "
                   f"{r['rank_all']} with them")
    pc = res.pairs
    if len(pc):
        out.append(f"- votes per pair: min {pc['n_votes'].min()}, median "
                   f"{pc['n_votes'].median():g}, max {pc['n_votes'].max()} over {len(pc)} pairs")
    if res.metrics is not None:
        out += ["", "Agreement with the metrics (Kendall tau-b, + = same order as people; "
                "95% bootstrap range):"]
        for _, r in res.metrics.iterrows():
            out.append(f"- {r['metric']}: tau={_fmt(r['tau'])} [{_fmt(r['tau_low'])}, "
                       f"{_fmt(r['tau_high'])}] over {r['n_units']} {unit}s")
    return "\n".join(out) + "\n"


def write_fit_outputs(res: analysis.StudyAnalysis, out: Path, source: str) -> list[Path]:
    import numpy as np
    import pandas as pd

    from . import plots

    """Write tables, charts, checks and the report under ``out``; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    unit = res.settings["level"]
    written: list[Path] = []

    def text(name: str, body: str) -> None:
        write_text(out / name, body)
        written.append(out / name)

    text("ranking.md", table_markdown(res.table, unit))
    text("ranking.csv", res.table.to_csv(index=False))
    text("ranking.tex", table_latex(res.table, unit))
    text("p_better.csv", pd.DataFrame(res.summary.p_better, index=res.items,
                                      columns=res.items).to_csv())
    text("significance.csv", pd.DataFrame(res.summary.significant, index=res.items,
                                          columns=res.items).to_csv())
    text("win_matrix.csv", pd.DataFrame(res.wins, index=res.items, columns=res.items).to_csv())
    text("pair_counts.csv", res.pairs.to_csv(index=False))
    text("per_person.csv", res.people.to_csv(index=False))
    text("exclusion_audit.csv", res.audit.to_csv(index=False))
    if res.metrics is not None:
        text("metric_agreement.csv", res.metrics.to_csv(index=False))
    text("report.txt", text_report(res, source))
    write_json(out / "fit.json", {"source": source, "settings": res.settings,
                                  "counts": res.counts, "position_bias": res.position,
                                  "notes": res.notes})
    written.append(out / "fit.json")
    written += plots.ranking_chart(res.table, out / "ranking", unit)
    order = [res.items.index(u) for u in res.table[unit]]  # best first, like the chart
    written += plots.win_heatmap([res.items[i] for i in order],
                                 res.wins[np.ix_(order, order)], out / "win_matrix")
    return written


# --------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------


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


def cmd_fit(args: argparse.Namespace) -> int:
    from . import analysis

    source = Path(args.source)
    votes = analysis.read_votes(source)
    cfg = _study_config(source)
    metrics_src = args.metrics
    run = cfg.get("run")
    if metrics_src is None and isinstance(run, str) and (Path(run) / "metrics.csv").is_file():
        metrics_src = run  # the benchmark run the study was created from
        log.info("comparing with the metrics of %s", run)
    metrics = analysis.read_metrics(metrics_src) if metrics_src else None
    resolution = args.resolution
    if resolution is None and isinstance(cfg.get("resolution"), int):
        resolution = cfg["resolution"]
    res = analysis.analyse_votes(
        votes, level=args.level, item_sep=args.item_sep, reps=args.reps, seed=args.seed,
        alpha=args.alpha, include_excluded=args.include_excluded, metrics=metrics,
        resolution=resolution, where=str(source), progress=args.reps >= 2000,
    )
    out = Path(args.out)
    write_fit_outputs(res, out, str(source))
    print(table_markdown(res.table, args.level), end="")
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


def cmd_simulate(args: argparse.Namespace) -> int:
    import numpy as np

    from . import plots, simulate

    if args.scores is None:
        k = args.methods or 5
        scores = list(np.linspace(0.5, -0.5, k))
    else:
        scores = args.scores
        if args.methods is not None and args.methods != len(scores):
            raise UserError(f"--scores: {len(scores)} values given but --methods {args.methods}")
    ns = _parse_participants(args.participants)
    if args.reps < 1 or args.boot < 10:
        raise UserError("--reps must be >= 1 and --boot >= 10")
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
        "heatmap and report.txt. choice: left, right, the chosen item's name, or tie/none "
        "(a tie counts as half a win for each side).",
    )
    p.add_argument("source", help="votes CSV or STUDY folder")
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
    p.add_argument("--metrics", help="benchmark RUN folder or its metrics.csv (Kendall tau)")
    p.add_argument("--resolution", type=int, help="resolution of the metrics to compare with")
    p.set_defaults(func=cmd_fit)

    s = survey_subparsers.add_parser(
        "simulate", help="simulate crowds to plan how many participants a study needs",
        description="Simulate studies with honest, cheating (random) and position-biased "
        "people, analyse them like real votes, and report how often the true order is "
        "recovered and every adjacent pair is separated at 95 %%.",
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
    s.add_argument("--out", default="simulate_out", help="output folder")
    s.set_defaults(func=cmd_simulate)
