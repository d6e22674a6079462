"""``hrbench train refine``: train the slim refinement network (see :mod:`bench.train.refine`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..cli_args import add_list_option
from ..errors import UserError

log = logging.getLogger(__name__)


def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LOW,HIGH fractions, e.g. 0.1,0.5") from None
    if not 0 <= lo <= hi <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= LOW <= HIGH <= 1")
    return lo, hi


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train networks (the refinement stage)")
    tsub = train.add_subparsers(dest="train_command", metavar="WHAT", required=True)
    p = tsub.add_parser(
        "refine",
        help="train the slim refinement net over a coarse base at 512",
        description="Train the slim two-stage refinement network on a folder of photos. "
        "The embedded sample set is always excluded (by name and content) so it stays unseen.",
    )
    p.add_argument("--images", type=Path, required=True, help="folder of training photos")
    p.add_argument("--steps", type=int, required=True,
                   help="total optimiser steps (a resumed run continues to it)")
    p.add_argument("--out", type=Path, default=Path("runs/train_refine"),
                   help="output folder (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--coarse", default="telea",
                   help="registered method used as the coarse base at 512 (default telea)")
    p.add_argument("--exclude-list", type=Path, help="text file of image names (one a line) never to use")
    add_list_option(p, "--val-images", default=[], metavar="NAME", help="names held out for validation")
    p.add_argument("--val-count", type=int, default=3,
                   help="hold out the last K images when --val-images is empty")
    add_list_option(p, "--val-sizes", item_type=int, default=(1024, 2048), metavar="N",
                    help="validation sizes (default 1024 2048)")
    p.add_argument("--val-every", type=int, default=250, help="validate and checkpoint every N steps")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate")
    p.add_argument("--patch", type=int, default=256, help="training patch side (multiple of 32)")
    add_list_option(p, "--sizes", item_type=int, default=(1024, 1280, 1536, 1792, 2048), metavar="N",
                    help="square sizes a training square is reduced to (multiples of 128)")
    p.add_argument("--mask-coverage", type=_range, default=(0.1, 0.5), help="hole fraction of the square")
    p.add_argument("--patch-hole", type=_range, default=(0.1, 0.9), help="hole fraction of a patch")
    p.add_argument("--squares-per-image", type=int, default=3)
    p.add_argument("--patches-per-square", type=int, default=2)
    p.add_argument("--vgg-weights", type=Path,
                   help="torchvision vgg16 state_dict file for perceptual/style loss")
    p.add_argument("--no-shift", action="store_true", help="ablation: plain copies instead of shifted ones")
    add_list_option(p, "--widths", item_type=int, default=None, metavar="W",
                    help="5 encoder widths of the slim net")
    p.add_argument("--head", type=int, default=None, help="full-resolution decoder width")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop (with a checkpoint) after this long")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_refine)


def _cmd_refine(args: argparse.Namespace) -> int:
    from ..methods.nets.slim import DEFAULT_HEAD, DEFAULT_WIDTHS
    from .data import DataConfig, read_exclude_list
    from .refine import TrainConfig, train

    for name in ("steps", "batch", "val_every", "squares_per_image", "patches_per_square"):
        if getattr(args, name) < (0 if name == "steps" else 1):
            raise UserError(f"--{name.replace('_', '-')}: {getattr(args, name)} is out of range")
    widths = args.widths or DEFAULT_WIDTHS
    if len(widths) != 5:
        raise UserError(f"--widths: need 5 widths, got {len(widths)}")
    exclude = sorted(read_exclude_list(args.exclude_list)) if args.exclude_list else []
    cfg = TrainConfig(
        images=args.images,
        out=args.out,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        coarse=args.coarse,
        device=args.device,
        threads=args.threads,
        val_every=args.val_every,
        val_count=args.val_count,
        val_images=list(args.val_images),
        val_sizes=tuple(args.val_sizes),
        max_minutes=args.max_minutes,
        exclude=exclude,
        vgg_weights=args.vgg_weights,
        no_shift=args.no_shift,
        widths=tuple(widths),
        head=args.head or DEFAULT_HEAD,
        resume=args.resume,
        data=DataConfig(
            patch=args.patch,
            sizes=tuple(args.sizes),
            mask_coverage=args.mask_coverage,
            patch_hole=args.patch_hole,
            squares_per_image=args.squares_per_image,
            patches_per_square=args.patches_per_square,
        ),
    )
    summary = train(cfg, progress=not args.no_progress)
    log.info("trained to step %d in %.0f s; best mean validation L1 %.4f; best weights: %s",
             summary["step"], summary["elapsed_s"], summary["best_val_l1"], summary["best_model"])
    return 0
