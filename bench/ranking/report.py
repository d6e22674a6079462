"""What ``hrbench survey fit`` writes: tables (Markdown, CSV, LaTeX), the text report,
fit.json and the figures, from a ``StudyAnalysis``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from bench import tables
from bench.io import write_json, write_text

from .fit import SCALES, StudyAnalysis

# -------------------------------------------------------------------------------------
# Tables (rendered by bench.tables, the one table renderer)
# -------------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[str]], fmt: str, notes: list[str] | None = None,
           caption: str = "") -> str:
    return tables.render(tables.Table(headers, rows, notes=notes or [], caption=caption), fmt)


def _fmt(x: float | None, nd: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _ci(low: float, high: float, nd: int = 2) -> str:
    """``[low, high]``, or "–" when the interval is missing (e.g. of zero width)."""
    if any(isinstance(x, float) and math.isnan(x) for x in (low, high)):
        return "–"
    return f"[{_fmt(low, nd)}, {_fmt(high, nd)}]"


# -------------------------------------------------------------------------------------
# Ranking and agreement tables
# -------------------------------------------------------------------------------------

_SCALE_COLUMNS = {"bt": ("score", "ci_low", "ci_high", "p_beat_avg", "p_ci_low", "p_ci_high"),
                  "jod": ("jod", "jod_low", "jod_high", "jod_p_beat_avg", "jod_p_low",
                          "jod_p_high")}
SCALE_LABELS = {"bt": "BT log-strength", "jod": "JOD, 1 JOD = 75 % preference"}


def ranking_rows(table: pd.DataFrame, unit: str, scale: str = "bt"
                 ) -> tuple[list[str], list[list[str]]]:
    """Headers and display rows of the ranking in the chosen scale (``bt`` or ``jod``)."""
    score, lo, hi, pb, plo, phi = _SCALE_COLUMNS[scale]
    t = table.sort_values(score, ascending=False, kind="stable")
    head = ["rank", unit, "JOD" if scale == "jod" else "score", "95% CI", "P(beat avg)",
            "95% CI", "wins", "n votes"]
    rows = [[str(rank), str(r[unit]), _fmt(r[score]), _ci(r[lo], r[hi]), _fmt(r[pb], 3),
             _ci(r[plo], r[phi], 3), f"{r['wins']:g}", f"{r['n_votes']:g}"]
            for rank, (_, r) in enumerate(t.iterrows(), 1)]
    return head, rows


RANKING_CAPTION = {
    "bt": "Bradley-Terry log-strengths (centred) from pairwise votes, ties as half wins; "
          "P(beat avg) = probability of beating an average {unit}; 95 % participant-bootstrap "
          "percentile intervals.",
    "jod": "Thurstone Case V scale in JOD (1 JOD = 75 % preference), centred, from pairwise "
           "votes, ties as half wins; 95 % participant-bootstrap percentile intervals.",
}


def table_markdown(table: pd.DataFrame, unit: str, scale: str = "bt") -> str:
    """The ranking as a Markdown table."""
    return _table(*ranking_rows(table, unit, scale), "md")


def table_latex(table: pd.DataFrame, unit: str, scale: str = "bt") -> str:
    """The ranking as a LaTeX table (the caption states how the scores were made)."""
    head, rows = ranking_rows(table, unit, scale)
    return _table(head, rows, "latex", caption=RANKING_CAPTION[scale].format(unit=unit))


def agreement_rows(agree: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the vote-level agreement table, best metric first."""
    order = {"metric": 0, "model": 1, "ceiling": 2, "chance": 3}
    t = agree.assign(_k=agree["kind"].map(order)).sort_values(
        ["_k", "agreement"], ascending=[True, False], kind="stable")
    head = ["predictor", "2AFC agreement", "95% CI", "log-lik/vote", "95% CI", "Brier",
            "95% CI", "n votes"]
    rows = [[str(r["name"]), _fmt(r["agreement"], 3), _ci(r["agreement_low"],
                                                         r["agreement_high"], 3),
             _fmt(r["loglik"], 3), _ci(r["loglik_low"], r["loglik_high"], 3),
             _fmt(r["brier"], 3), _ci(r["brier_low"], r["brier_high"], 3),
             f"{int(r['n_votes'])}"] for _, r in t.iterrows()]
    return head, rows


AGREEMENT_NOTE = (
    "2AFC agreement: share of included votes where the predictor prefers the output the "
    "person chose (ties count half); log-likelihood per vote (nats) and Brier score of "
    "P(left) = sigmoid(b * metric difference), b fitted on the other participant folds; "
    "human ceiling: agreement with the other people's majority on the same image and pair; "
    "95 % participant-bootstrap intervals."
)


# -------------------------------------------------------------------------------------
# Text report
# -------------------------------------------------------------------------------------


def _significance_lines(res: StudyAnalysis, scale: str) -> list[str]:
    k = len(res.items)
    n_pairs = k * (k - 1) // 2
    summ = res.jod_summary if scale == "jod" else res.summary
    if not res.supports_significance:
        return [f"Significant pairs at 95 %: not assessed ({res.counts['participants_in_fit']}"
                " included participant(s) are too few for a participant bootstrap)"]
    sig = [(res.items[i], res.items[j]) for i in range(k) for j in range(k)
           if summ.significant[i, j] and summ.p_better[i, j] > 0.5]
    out = [f"Significant pairs at 95 %: {len(sig)} of {n_pairs}"]
    flat = [(res.items[i], res.items[j]) for i in range(k) for j in range(i + 1, k)
            if summ.degenerate[i, j]]
    if flat:
        out.append("Uncertainty not measurable (interval of zero width: every bootstrap "
                   "replicate identical), not counted as significant: "
                   + "; ".join(f"{a} vs {b}" for a, b in flat))
    not_sig = [(res.items[i], res.items[j], summ.p_better[i, j]) for i in range(k)
               for j in range(i + 1, k) if not summ.significant[i, j] and not summ.degenerate[i, j]]
    if not_sig:
        out.append("Not separated: " + "; ".join(
            f"{a} vs {b} (P(first better)={p:.2f})" for a, b, p in not_sig))
    return out


def text_report(res: StudyAnalysis, source: str, scale: str = "bt") -> str:
    """A short plain-text report of the fit, its limits and the data checks."""
    c, s, unit = res.counts, res.settings, res.settings["level"]
    out = [f"Pairwise ranking of {source}", ""]
    if res.warnings:
        out += [f"WARNING: {w}" for w in res.warnings] + [""]
    out.append(f"participants: {c['participants']} ({c['participants_excluded']} excluded, "
               f"{c['participants_in_fit']} in the fit); votes in the fit: {c['votes_in_fit']} "
               f"(ties: {c['ties_in_fit']}, counted as half a win each); validation answers: "
               f"{c['validation_rows']} (never in the fit)")
    out.append(f"fit: Bradley–Terry by choix I-LSR, alpha={s['alpha']:.3g} (prior precision "
               f"{s['prior_precision_per_item']:.3g} per {unit}); Thurstone Case V in JOD; "
               f"{s['reps']} participant bootstrap replicates, seed {s['seed']}; "
               f"{s['interval']} intervals ('–' = zero width, not measurable)")
    out += [f"note: {n}" for n in res.notes]
    out += ["", f"Ranking ({SCALE_LABELS[scale]}):", table_markdown(res.table, unit, scale)]
    out += _significance_lines(res, scale)
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
    if res.votes_agreement is not None and len(res.votes_agreement):
        out += ["", "Agreement with people, vote by vote:",
                _table(*agreement_rows(res.votes_agreement), "md"), AGREEMENT_NOTE]
    if res.metrics is not None:
        out += ["", "Method-level rank agreement (Kendall tau-b, + = same order as people; "
                "95% bootstrap range):"]
        for _, r in res.metrics.iterrows():
            out.append(f"- {r['metric']}: tau={_fmt(r['tau'])} [{_fmt(r['tau_low'])}, "
                       f"{_fmt(r['tau_high'])}] over {r['n_units']} {unit}s")
    return "\n".join(out) + "\n"


# -------------------------------------------------------------------------------------
# All files
# -------------------------------------------------------------------------------------


def method_metric_means(metrics: pd.DataFrame, resolution: int | None,
                        images: list[str] | None) -> pd.DataFrame:
    """Per method and metric, the mean over the study's images: ``method, metric, value``."""
    m = metrics if resolution is None else metrics[metrics["resolution"] == resolution]
    if images:
        m = m[m["image"].astype(str).isin(images)]
    return m.groupby(["method", "metric"], as_index=False)["value"].mean()


def write_fit_outputs(res: StudyAnalysis, out: Path, source: str, scale: str = "bt",
                      metrics: pd.DataFrame | None = None) -> list[Path]:
    """Write tables, charts, checks and the report under ``out``; return the paths.

    ``scale`` (``bt`` or ``jod``) chooses the score of ranking.md/.tex, the chart and the
    pairwise p_better/significance tables; ranking.csv always holds both scores.
    ``metrics`` (the run's metrics.csv) adds the scatter of each metric against the crowd's
    score.
    """
    from . import plots

    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}")
    out.mkdir(parents=True, exist_ok=True)
    unit = res.settings["level"]
    written: list[Path] = []

    def text(name: str, body: str) -> None:
        write_text(out / name, body)
        written.append(out / name)

    text("ranking.md", table_markdown(res.table, unit, scale))
    text("ranking.csv", res.table.to_csv(index=False))
    text("ranking.tex", table_latex(res.table, unit, scale))
    summ = res.jod_summary if scale == "jod" else res.summary
    text("p_better.csv", pd.DataFrame(summ.p_better, index=res.items,
                                      columns=res.items).to_csv())
    text("significance.csv", pd.DataFrame(summ.significant, index=res.items,
                                          columns=res.items).to_csv())
    text("win_matrix.csv", pd.DataFrame(res.wins, index=res.items, columns=res.items).to_csv())
    text("pair_counts.csv", res.pairs.to_csv(index=False))
    text("per_person.csv", res.people.to_csv(index=False))
    text("exclusion_audit.csv", res.audit.to_csv(index=False))
    if res.metrics is not None:
        text("metric_agreement.csv", res.metrics.to_csv(index=False))
    agree = res.votes_agreement
    if agree is not None and len(agree):
        head, rows = agreement_rows(agree)
        text("agreement.md", _table(head, rows, "md", notes=[AGREEMENT_NOTE]))
        text("agreement.csv", agree.to_csv(index=False))
        text("agreement.tex", _table(head, rows, "latex", caption=AGREEMENT_NOTE))
        written += plots.agreement_chart(agree, out / "agreement")
    text("report.txt", text_report(res, source, scale))
    write_json(out / "fit.json", {"source": source, "settings": {**res.settings, "scale": scale},
                                  "counts": res.counts, "position_bias": res.position,
                                  "warnings": res.warnings, "notes": res.notes})
    written.append(out / "fit.json")
    written += plots.ranking_chart(res.table, out / "ranking", unit, scale=scale)
    order = [res.items.index(u) for u in res.table[unit]]  # best first, like the chart
    written += plots.win_heatmap([res.items[i] for i in order],
                                 res.wins[np.ix_(order, order)], out / "win_matrix")
    if metrics is not None and unit == "method":
        means = method_metric_means(metrics, res.settings.get("resolution"),
                                    res.settings.get("images"))
        if len(means):
            written += plots.metric_scatter(means, res.table, out / "metric_scatter", scale)
    return written
