"""``hrbench inpaint`` (one image, any method) and ``hrbench weights`` (what can run here)."""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from .devices import DEVICES, resolve_device
from .errors import UserError

log = logging.getLogger("hrbench.inpaint")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inpaint",
        help="inpaint one image (the use the authors' GIMP plugin served)",
        description="Fill the hole of IMAGE given by MASK (white = hole) and write OUT.",
    )
    p.add_argument("image", type=Path, help="input image (RGB; any hole content is ignored)")
    p.add_argument("mask", type=Path, help="mask image, same size, white (>= 128) = hole")
    p.add_argument("-o", "--output", required=True,
                   help="output file (.png or .jpg), or a folder (an existing one, or a path ending "
                   "in '/'): then OUT/<image stem>_<method>.png")
    p.add_argument("--method", default="two-stage-slim",
                   help="method name, see `hrbench methods` (default: two-stage-slim, which ships "
                   "with the package)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing output file (never the input image or mask)")
    p.add_argument("--weights-dir", type=Path, default=None,
                   help="folder with model_places2.pth / refinement.pth")
    p.add_argument("--device", choices=DEVICES, default="auto")
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
    actions = w.add_subparsers(dest="weights_action", metavar="ACTION")
    f = actions.add_parser(
        "fetch",
        help="download a metric's weights into torch's cache (needs network access)",
        description="Download LPIPS's ImageNet backbone through torch.hub into "
        "torch.hub.get_dir()/checkpoints, where `hrbench run` finds it offline.",
    )
    f.add_argument("name", choices=["lpips"], help="what to fetch")
    f.add_argument("--net", choices=["alex", "vgg"], default="alex", help="LPIPS network (default alex)")
    f.set_defaults(func=cmd_weights_fetch)


def _output_path(out: str, image: Path, method: str) -> Path:
    """The file to write for ``-o out``: a folder gets ``<stem>_<method>.png``."""
    from .records import method_slug

    path = Path(out)
    if path.is_dir() or out.endswith(("/", os.sep)):
        return path / f"{image.stem}_{method_slug(method)}.png"
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise UserError(f"-o {out}: unknown image type {path.suffix!r}; use .png or .jpg, or a folder")
    return path


def check_output(out: Path, inputs: dict[str, Path], force: bool) -> None:
    """Refuse to write ``out`` over an input (ever) or over an existing file (without --force)."""
    from .io import check_writable_file, refuse_input

    refuse_input(out, inputs)
    if out.is_dir():
        raise UserError(f"-o {out}: is a folder; give a file name ending in .png or .jpg")
    check_writable_file(out)
    if out.exists() and not force:
        raise UserError(f"-o {out}: file exists; pass --force to replace it, or choose another name")


def cmd_inpaint(args: argparse.Namespace) -> int:
    from .io import read_image, read_mask, write_image
    from .methods import MethodContext, create

    if args.weights_dir is not None and not args.weights_dir.is_dir():
        raise UserError(f"--weights-dir {args.weights_dir}: folder not found")
    out = _output_path(args.output, args.image, args.method)
    check_output(out, {"image": args.image, "mask": args.mask}, args.force)
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


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    from .io import display_path
    from .metrics import fetch_backbone

    path = fetch_backbone(args.net, progress=True)
    print(f"LPIPS backbone ({args.net}): {display_path(path)}")
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
