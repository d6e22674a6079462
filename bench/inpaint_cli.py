"""``hrbench inpaint`` (one image, any method) and ``hrbench weights`` (what can run here)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from .errors import UserError
from .io import IMAGE_SUFFIXES

log = logging.getLogger("hrbench.inpaint")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inpaint",
        help="inpaint one image (the use the authors' GIMP plugin served)",
        description="Fill the hole of IMAGE given by MASK (white = hole) and write OUT.",
    )
    p.add_argument("image", type=Path, help="input image (RGB; any hole content is ignored)")
    p.add_argument("mask", type=Path, help="mask image, same size, white (>= 128) = hole")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output file (.png or .jpg), or an existing folder")
    p.add_argument("--method", default="two-stage", help="method name (default: two-stage)")
    p.add_argument("--weights-dir", type=Path, default=None,
                   help="folder with model_places2.pth / refinement.pth")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(func=cmd_inpaint)

    w = subparsers.add_parser(
        "weights",
        help="show where checkpoints are looked for and which methods can run",
        description="List the weights search folders, the checkpoint files (with sha256) "
        "and, for each neural method, whether it is usable here and why not.",
    )
    w.add_argument("--weights-dir", type=Path, default=None)
    w.add_argument("--no-sha256", action="store_true", help="skip hashing the files found")
    w.set_defaults(func=cmd_weights)


def _output_path(out: Path, image: Path) -> Path:
    if out.is_dir():
        return out / f"{image.stem}.png"
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"-o {out}: unknown image type {out.suffix!r}; use .png or .jpg")
    return out


def cmd_inpaint(args: argparse.Namespace) -> int:
    from .io import read_image, read_mask, write_image
    from .methods import MethodContext, create
    from .runner import resolve_device

    if args.weights_dir is not None and not args.weights_dir.is_dir():
        raise UserError(f"--weights-dir {args.weights_dir}: folder not found")
    out = _output_path(args.output, args.image)
    image = read_image(args.image)
    mask = read_mask(args.mask, image.shape[:2])
    context = MethodContext(device=resolve_device(args.device), weights_dir=args.weights_dir)
    method = create(args.method, context)
    t0 = time.perf_counter()
    try:
        result = method(image, mask)
    finally:
        method.close()
    write_image(out, result)
    log.info("%s: %s (%dx%d) in %.1f s -> %s", args.method, args.image.name,
             image.shape[1], image.shape[0], time.perf_counter() - t0, out)
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from .methods import MethodContext, weights

    if args.weights_dir is not None and not args.weights_dir.is_dir():
        raise UserError(f"--weights-dir {args.weights_dir}: folder not found")
    rep = weights.report(MethodContext(weights_dir=args.weights_dir),
                         with_sha256=not args.no_sha256)
    lines = ["Search order (first folder holding a file wins):"]
    for i, d in enumerate(rep["search_dirs"], 1):
        lines.append(f"  {i}. {d['path']}  [{d['origin']}{'' if d['exists'] else ', missing'}]")
    lines.append("Files:")
    for f in rep["files"]:
        lines.append(f"  {f['filename']}  {f['network']}, {f['layout']}, "
                     f"{f['parameters']:,} parameters")
        if f["found"]:
            lines.append(f"    found: {f['path']}")
            if "sha256" in f:
                lines.append(f"    sha256 {f['sha256']}  ({f['known_as']})")
        else:
            lines.append(f"    not found; source: {f['source']}")
    lines.append("Methods:")
    for m in rep["methods"]:
        state = "usable" if m["reason"] is None else f"unusable: {m['reason']}"
        lines.append(f"  {m['method']:<20} {state}")
    print("\n".join(lines))
    return 0
