"""Core subcommands: prepare, run, table, plot, methods."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields
from pathlib import Path

# Library modules are imported inside the handlers so that `hrbench --help` is instant.
from .cli_args import add_list_option
from .devices import DEVICES
from .protocol import DEFAULT_HOLE_FRACTION, PROTOCOL_RESOLUTIONS
from .tables import FORMATS

log = logging.getLogger("hrbench")


def _add_protocol_args(p: argparse.ArgumentParser, defaults: bool) -> None:
    d = (lambda v: v) if defaults else (lambda v: None)
    add_list_option(
        p,
        "--resolutions",
        item_type=int,
        default=d(list(PROTOCOL_RESOLUTIONS)),
        metavar="N",
        help="test sizes N (N×N squares); default 1024 1536 1792 2048",
    )
    p.add_argument(
        "--resize",
        choices=["nearest", "area"],
        default=d("nearest"),
        help="how photos are reduced to N×N (paper: nearest)",
    )
    p.add_argument(
        "--mask",
        default=d("centre"),
        metavar="centre|DIR",
        help="'centre' square hole, or a folder of masks (DIR/<N>/<stem>.png or DIR/<stem>.png)",
    )
    p.add_argument(
        "--hole-fraction",
        type=float,
        default=d(DEFAULT_HOLE_FRACTION),
        help="centre hole side / N (default 1/3)",
    )


def cmd_prepare(args) -> int:
    from .datasets import PrepareSpec, prepare

    spec = PrepareSpec(tuple(args.resolutions), args.resize, args.mask, args.hole_fraction)
    rep = prepare(Path(args.images), Path(args.out), spec)
    for s in rep.skipped:
        where = f" at {s['resolution']}" if s["resolution"] else ""  # None: unreadable photo
        print(f"skipped {s['image']}{where}: {s['reason']}", file=sys.stderr)
    counts = rep.manifest.groupby("resolution").size().to_dict()
    print(
        f"prepared {len(rep.manifest)} items in {args.out}: "
        + ", ".join(f"{n} px × {c}" for n, c in counts.items())
    )
    return 0


def cmd_run(args) -> int:
    from .io import display_path
    from .runner import RunConfig, run

    cfg = RunConfig.from_toml(args.config) if args.config else RunConfig()
    cli = {
        "images": args.images,
        "out": args.out,
        "methods": args.methods,
        "resolutions": args.resolutions,
        "resize": args.resize,
        "mask": args.mask,
        "hole_fraction": args.hole_fraction,
        "metric_size": args.metric_size,
        "metrics": args.metrics,
        "metric_region": args.metric_region,
        "display": args.display,
        "jobs": args.jobs,
        "device": args.device,
        "weights_dir": args.weights_dir,
        "seed": args.seed,
        "cluster": args.cluster,
    }
    names = {f.name for f in fields(cfg)}
    for k, v in cli.items():
        if v is not None and k in names:
            setattr(cfg, k, v)
    if args.no_lpips:
        cfg.lpips = False
    if args.no_outputs:
        cfg.save_outputs = False
    if args.no_plots:
        cfg.plots = False
    summary = run(cfg.checked(), progress=not args.quiet, redo=not args.no_redo)
    if summary.table_md:
        print(summary.table_md.read_text(encoding="utf-8"))
    print(
        f"run folder: {display_path(summary.run_dir)}  ({summary.counts_line()}; {summary.wall_s:.1f} s)",
        file=sys.stderr,
    )
    for name, reason in summary.skipped_methods.items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    for s in summary.unreadable_images:
        print(f"skipped image {s['image']}: {s['reason']}", file=sys.stderr)
    if summary.n_failed:
        print(
            f"hrbench: {summary.n_failed} items failed; see {display_path(summary.run_dir / 'items.csv')} "
            "and logs/; rerun the same command to retry them",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_table(args) -> int:
    from .report import table

    text = table(args.run, args.format, tuple(args.metrics) if args.metrics else None, ci=args.ci)
    if args.output:
        from .io import refuse_input, write_text

        run = Path(args.run)
        refuse_input(args.output, {"metrics.csv": run / "metrics.csv", "run.json": run / "run.json"})
        write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_plot(args) -> int:
    from .plots import plot_run

    for p in plot_run(args.run, args.out, args.image, args.resolution):
        print(p)
    return 0


def cmd_methods(args) -> int:
    from .methods import MethodContext, describe, unavailable_reason

    ctx = MethodContext(weights_dir=Path(args.weights_dir) if args.weights_dir else None)
    for d in describe():
        name = d["name"]
        reason = None if name.endswith(":<arg>") else unavailable_reason(name, ctx)
        state = "available" if reason is None else f"unavailable ({reason})"
        mark = "*" if d["default"] else " "
        print(f"{mark} {name:28s} {state}  {d['summary']}")
    print("(* = in the default benchmark)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="photos -> protocol ground truths, masks and manifest")
    p.add_argument("--images", required=True, help="folder of photos")
    p.add_argument("--out", required=True, help="output folder")
    _add_protocol_args(p, defaults=True)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("run", help="run methods × images × resolutions (default: the embedded sample set)")
    p.add_argument("--config", help="TOML file with run settings (command-line flags override it)")
    add_list_option(
        p, "--methods", metavar="METHOD", help="method names (see `hrbench methods`); default set if omitted"
    )
    p.add_argument("--images", help="folder of photos (default: the embedded sample set)")
    p.add_argument("--out", help="run folder (default results/sample-run); rerunning resumes it")
    _add_protocol_args(p, defaults=False)
    p.add_argument("--metric-size", type=int, help="downsample (nearest) to M×M before scoring")
    add_list_option(
        p,
        "--metrics",
        metavar="METRIC",
        help="metrics to compute: l1 psnr ssim hole_l1 hole_psnr lpips cvvdp flip "
        "(default: l1 psnr ssim hole_l1 hole_psnr cvvdp, and lpips if its weights are cached)",
    )
    p.add_argument(
        "--metric-region",
        choices=["full", "hole"],
        help="pixels lpips/cvvdp/flip see: the whole image, or a crop around the hole "
        "(bounding box + 1/4 of its side each way; default hole)",
    )
    p.add_argument(
        "--display",
        metavar="NAME|WxH,DIAGin,DISTm",
        help="display model of cvvdp and flip: a cvvdp name or e.g. 2560x1440,27in,0.7m,250cd "
        "(default standard_fhd: 24-inch 1920x1080 at 0.6 m)",
    )
    p.add_argument("--jobs", type=int, help="worker processes (default 0 = one per CPU core, at most 4)")
    p.add_argument("--device", choices=DEVICES, help="for neural methods (default auto)")
    p.add_argument("--weights-dir", help="folder with checkpoints (see `hrbench weights`)")
    p.add_argument("--seed", type=int, help="seed for randomised methods (default 0)")
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run the items on Dask: tcp://HOST:PORT (a running scheduler), local:N (N worker "
        "processes here) or slurm (jobs from the config's [cluster] table); see README",
    )
    p.add_argument("--no-lpips", action="store_true", help="do not compute LPIPS even if available")
    p.add_argument("--no-outputs", action="store_true", help="do not save output images")
    p.add_argument("--no-plots", action="store_true", help="do not write plots/ at the end")
    p.add_argument(
        "--no-redo",
        action="store_true",
        help="stop (exit 2) instead of redoing items the folder holds with other settings",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("table", help="Table 1 of a run (md, csv or LaTeX)")
    p.add_argument("run", help="run folder")
    p.add_argument("--format", choices=FORMATS, default="md")
    add_list_option(
        p, "--metrics", metavar="METRIC", help="metrics to show (default: those of l1 psnr ssim the run has)"
    )
    p.add_argument("--ci", action="store_true", help="show 95 %% confidence intervals of the means")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("plot", help="figures of a run (PNG + PDF)")
    p.add_argument("run", help="run folder")
    p.add_argument("--out", help="folder for figures (default RUN/plots)")
    p.add_argument("--image", help="image for the qualitative figure (default: first)")
    p.add_argument("--resolution", type=int, help="resolution for the qualitative figure (default: largest)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("methods", help="list registered methods and whether they can run here")
    p.add_argument("--weights-dir", help="folder with checkpoints")
    p.set_defaults(func=cmd_methods)
