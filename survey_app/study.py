"""``hrbench survey create``: build a study folder from a benchmark run; ``sync_study``
imports a loaded study into the database.

A study folder is self-contained and read-only once made::

    STUDY/study.json       what to show: items, pairs, validation questions, settings
    STUDY/images/0000.png  display images, prepared once (file names are item numbers)
    STUDY/instance/        created by ``serve``: secret key, admin token, survey.db

Items are ``method × image`` at one resolution, plus for every image its ground truth and a
deliberately broken copy (the hole filled with one flat colour, or with a heavily blurred
ground truth). Pairs are every two methods on the same image (``compare``) and the ground
truth against the broken copy (``validation``; the correct answer is the ground truth).

Display images: ``full`` scales the whole picture down (INTER_AREA, never up) to fit
``max_side`` pixels; ``crop`` cuts a square at 1:1 around the hole (side ``crop_size``, or
1.5 × the hole when that is larger, clipped to the image), the same box for every item of
one image. The original resolution and the crop box are recorded per item.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import logging
import math
import os
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from tqdm import tqdm

from bench.errors import UserError
from bench.io import file_in_the_way, read_image, read_mask, sha256_file, write_image, write_json
from bench.masks import hole_bbox
from bench.resize import resize

from .models import Item, Pair, Study
from .platforms import RETURN_URL_RE

if TYPE_CHECKING:
    from .db import Database

log = logging.getLogger(__name__)

FORMAT = "hrbench-study/1"
DISPLAY_MODES = ("full", "crop")
BROKEN_FILLS = ("flat", "blur")
GT_METHOD = "ground_truth"
RESERVED_METHODS = (GT_METHOD, "broken_flat", "broken_blur")
DEFAULT_QUESTION = "Which image looks better (more natural, fewer visible defects)?"
# Smallest browser window (CSS px, width x height) that shows two 1:1 crops side by side
# large enough to judge; phones (390 px wide, or 390 px tall in landscape) fall below it.
MIN_VIEWPORT = (720, 400)
_FILE_RE = re.compile(r"^[0-9]{4,6}\.png$")


@dataclass(frozen=True)
class StudySpec:
    """A loaded ``study.json`` (validated). ``items``/``pairs`` are the JSON dicts."""

    folder: Path
    uid: str
    name: str
    question: str
    seed: int
    trials_per_participant: int
    validation: int
    repeat_swapped: bool
    completion_url: str | None
    items: list[dict] = field(repr=False)
    pairs: list[dict] = field(repr=False)
    raw: dict = field(repr=False)
    # Quality control and screening (defaults apply to studies made before they existed).
    practice: bool = True
    validation_tolerance: int = 0  # validation failures allowed; one more excludes
    allow_phone: bool = False
    min_viewport: tuple[int, int] = MIN_VIEWPORT

    def image_path(self, file: str) -> Path:
        return self.folder / "images" / file


# ----------------------------------------------------------------------------- reading a run


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise UserError(f"{path}: not found; pass a run folder written by `hrbench run`")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in required if rows and c not in rows[0]]
    if not rows or missing:
        raise UserError(
            f"{path}: expected columns {', '.join(required)} "
            f"({'missing ' + ', '.join(missing) if missing else 'file is empty'}); "
            "rerun `hrbench run` to rewrite it"
        )
    return rows


def _inside(base: Path, rel: str, where: str) -> Path:
    """``base / rel``, refusing paths that leave ``base`` (a run folder is data, not code)."""
    path = (base / rel).resolve()
    if not path.is_relative_to(base.resolve()):
        raise UserError(f"{where}: path {rel!r} points outside {base}; fix the CSV")
    return path


@dataclass(frozen=True)
class _Source:
    method: str
    image: str
    path: Path


def _collect(
    run: Path, resolution: int, methods: list[str] | None, images: list[str] | None
) -> tuple[list[str], list[str], dict[tuple[str, str], Path], dict[str, tuple[Path, Path]]]:
    """Methods, images, output paths and (gt, mask) paths for one resolution of a run."""
    items_csv = run / "items.csv"
    manifest_csv = run / "data" / "manifest.csv"
    rows = _read_csv(items_csv, ("method", "resolution", "image", "status", "output"))
    manifest = _read_csv(manifest_csv, ("image", "resolution", "gt", "mask"))

    def res_of(row: dict[str, str], where: Path) -> int:
        try:
            return int(float(row["resolution"]))
        except ValueError:
            raise UserError(f"{where}: resolution {row['resolution']!r} is not a number") from None

    data: dict[str, tuple[Path, Path]] = {}
    for row in manifest:
        if res_of(row, manifest_csv) == resolution:
            data[row["image"]] = (
                _inside(run / "data", row["gt"], str(manifest_csv)),
                _inside(run / "data", row["mask"], str(manifest_csv)),
            )
    if not data:
        found = sorted({res_of(r, manifest_csv) for r in manifest})
        raise UserError(
            f"{manifest_csv}: no images at resolution {resolution}; "
            f"choose --resolution from {found}"
        )
    outputs: dict[tuple[str, str], Path] = {}
    available: set[str] = set()
    for row in rows:
        if res_of(row, items_csv) != resolution:
            continue
        available.add(row["method"])
        if row["status"] == "ok" and row["image"] in data:
            outputs[(row["method"], row["image"])] = _inside(run, row["output"], str(items_csv))
    if methods is None:
        methods = sorted({m for m, _ in outputs})
    for m in methods:
        if m in RESERVED_METHODS:
            raise UserError(f"--methods: {m!r} is a reserved name in studies; rename the method")
        if not any(k[0] == m for k in outputs):
            raise UserError(
                f"{items_csv}: method {m!r} has no successful output at {resolution}; "
                f"choose from {sorted(available) or 'none'}"
            )
    if len(set(methods)) < 2:
        raise UserError("--methods: a pairwise study needs at least two different methods")
    if images is None:
        images = sorted(data)
    for im in images:
        if im not in data:
            raise UserError(
                f"--images: {im!r} is not in {manifest_csv} at {resolution}; "
                f"choose from {sorted(data)}"
            )
    return list(dict.fromkeys(methods)), list(dict.fromkeys(images)), outputs, data


# ----------------------------------------------------------------------------- display images


def crop_box(mask: np.ndarray, crop_size: int) -> tuple[int, int, int, int]:
    """Square ``(top, left, bottom, right)`` around the hole, clipped to the image.

    Side: ``max(crop_size, ceil(1.5 * hole side))`` but at most ``min(H, W)``, so the hole
    is always inside with some context around it.
    """
    h, w = mask.shape
    top, left, bottom, right = hole_bbox(mask)
    side = max(crop_size, math.ceil(1.5 * max(bottom - top, right - left)))
    side = min(side, h, w)
    cy, cx = (top + bottom) // 2, (left + right) // 2
    t = min(max(cy - side // 2, 0), h - side)
    lft = min(max(cx - side // 2, 0), w - side)
    return t, lft, t + side, lft + side


def fit_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(h, w) scaled down to fit ``max_side`` (never up), each at least 1."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def display_hole(mask: np.ndarray, box: tuple[int, int, int, int] | None,
                 shown: tuple[int, int]) -> list[int]:
    """The hole's bounding box ``[x, y, w, h]`` in display pixels.

    ``box``: the 1:1 crop (``crop`` display) or None; ``shown``: the (h, w) a ``full``
    display is scaled to. The page centres its 1:1 view on this box.
    """
    top, left, bottom, right = hole_bbox(mask)
    if box is not None:
        return [left - box[1], top - box[0], right - left, bottom - top]
    sy, sx = shown[0] / mask.shape[0], shown[1] / mask.shape[1]
    x, y = math.floor(left * sx), math.floor(top * sy)
    return [x, y, max(1, math.ceil(right * sx) - x), max(1, math.ceil(bottom * sy) - y)]


def broken_fill(gt: np.ndarray, mask: np.ndarray, kind: str) -> np.ndarray:
    """The ground truth with its hole visibly broken (``uint8[H, W, 3]``).

    ``flat``: the mean colour of the known pixels. ``blur``: a Gaussian blur of the ground
    truth with sigma = max(H, W) / 40 (a smear no careful viewer prefers to the original).
    """
    out = gt.copy()
    if kind == "flat":
        out[mask] = gt[~mask].reshape(-1, 3).mean(axis=0).round().astype(np.uint8)
    elif kind == "blur":
        sigma = max(gt.shape[:2]) / 40
        out[mask] = cv2.GaussianBlur(gt, (0, 0), sigmaX=sigma, sigmaY=sigma)[mask]
    else:
        raise ValueError(f"unknown broken fill {kind!r}; choose one of {BROKEN_FILLS}")
    return out


def prepare_display(
    image: np.ndarray, display: str, box: tuple[int, int, int, int] | None, max_side: int
) -> np.ndarray:
    """The picture as shown: cropped at 1:1 (``crop``) or scaled to fit (``full``)."""
    if display == "crop":
        assert box is not None
        t, lft, b, r = box
        return np.ascontiguousarray(image[t:b, lft:r])
    h, w = fit_size(image.shape[0], image.shape[1], max_side)
    return image if (h, w) == image.shape[:2] else resize(image, (h, w), mode="area")


# ----------------------------------------------------------------------------- create / load


def create_study(
    run: str | Path,
    out: str | Path,
    *,
    resolution: int,
    methods: list[str] | None = None,
    images: list[str] | None = None,
    trials_per_participant: int = 25,
    validation: int = 2,
    display: str = "full",
    max_side: int = 4096,
    crop_size: int = 512,
    repeat_swapped: bool = True,
    seed: int = 0,
    question: str = DEFAULT_QUESTION,
    name: str | None = None,
    completion_url: str | None = None,
    practice: bool = True,
    validation_tolerance: int = 0,
    allow_phone: bool = False,
    min_viewport: tuple[int, int] = MIN_VIEWPORT,
    progress: bool = True,
) -> StudySpec:
    """Create the study folder ``out`` from run folder ``run``; return the loaded spec.

    ``trials_per_participant`` counts every scored answer a person gives, the ``validation``
    questions and the swapped repeat included (the paper: 25 with 2 validation); the
    ``practice`` trial (a validation pair with feedback, not scored) comes on top.
    ``validation_tolerance``: validation failures a person may make and stay included.
    The default ``max_side`` keeps the paper's resolutions (up to 2048 px) at 1:1.
    """
    run, out = Path(run), Path(out)
    if not run.is_dir():
        raise UserError(f"{run}: run folder not found; pass the --out folder of `hrbench run`")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file, not a folder; choose a new --out folder")
    blocking = file_in_the_way(out)
    if blocking is not None:
        raise UserError(f"{out}: {blocking} is a file, not a folder; choose another --out")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: folder exists and is not empty; choose a new --out")
    if display not in DISPLAY_MODES:
        raise UserError(f"--display: {display!r}; choose one of {DISPLAY_MODES}")
    if trials_per_participant < 1:
        raise UserError("--trials-per-participant: must be at least 1")
    if not 0 <= validation < trials_per_participant:
        raise UserError("--validation: must be >= 0 and smaller than --trials-per-participant")
    if max_side < 64 or crop_size < 64:
        raise UserError("--max-side/--crop-size: must be at least 64 pixels")
    if completion_url is not None and not RETURN_URL_RE.match(completion_url):
        raise UserError("--completion-url: must be an http(s):// URL without spaces or quotes")
    if not question.strip() or len(question) > 500:
        raise UserError("--question: must be 1 to 500 characters")
    if not 0 <= validation_tolerance <= validation:
        raise UserError("--validation-tolerance: must be between 0 and --validation")
    if min(min_viewport) < 1:
        raise UserError("--min-viewport: width and height must be at least 1 CSS pixel")

    methods, images, outputs, data = _collect(run, resolution, methods, images)
    rng = random.Random(seed)
    items: list[dict] = []
    pairs: list[dict] = []
    (out / "images").mkdir(parents=True, exist_ok=True)

    def add_item(method: str, image: str, kind: str, pixels: np.ndarray, box, orig, src: str,
                 hole: list[int]):
        file = f"{len(items):04d}.png"
        write_image(out / "images" / file, pixels)
        items.append(
            {
                "key": f"{method}/{image}",
                "method": method,
                "image": image,
                "kind": kind,
                "file": file,
                "width": int(pixels.shape[1]),
                "height": int(pixels.shape[0]),
                "orig_width": int(orig[1]),
                "orig_height": int(orig[0]),
                "crop": list(map(int, box)) if box else None,
                "hole": hole,
                "source": src,
                "sha256": sha256_file(out / "images" / file),
            }
        )
        return items[-1]["key"]

    for image in tqdm(images, desc="study images", unit="image", disable=not progress):
        gt_path, mask_path = data[image]
        gt = read_image(gt_path)
        mask = read_mask(mask_path, gt.shape[:2])
        box = crop_box(mask, crop_size) if display == "crop" else None
        hole = display_hole(mask, box, fit_size(gt.shape[0], gt.shape[1], max_side))
        keys: list[str] = []
        for m in methods:
            if (m, image) not in outputs:
                log.warning("no successful output of %s for %s; its pairs are left out", m, image)
                continue
            pix = read_image(outputs[(m, image)])
            if pix.shape != gt.shape:
                raise UserError(
                    f"{outputs[(m, image)]}: output is {pix.shape[1]}x{pix.shape[0]} but the "
                    f"ground truth is {gt.shape[1]}x{gt.shape[0]}; rerun that method"
                )
            src = str(outputs[(m, image)].relative_to(run.resolve()))
            keys.append(
                add_item(m, image, "method", prepare_display(pix, display, box, max_side), box,
                         gt.shape, src, hole)
            )
        pairs.extend({"a": a, "b": b, "kind": "compare"} for a, b in itertools.combinations(keys, 2))
        if validation:
            fill = rng.choice(BROKEN_FILLS)
            gt_rel = str(gt_path.relative_to(run.resolve()))
            gt_key = add_item(GT_METHOD, image, "reference",
                              prepare_display(gt, display, box, max_side), box, gt.shape, gt_rel,
                              hole)
            bad_key = add_item(f"broken_{fill}", image, "broken",
                               prepare_display(broken_fill(gt, mask, fill), display, box, max_side),
                               box, gt.shape, f"{gt_rel} ({fill} fill)", hole)
            pairs.append({"a": gt_key, "b": bad_key, "kind": "validation", "correct": gt_key})
    if not any(p["kind"] == "compare" for p in pairs):
        raise UserError(f"{run}: no image has outputs of two chosen methods; nothing to compare")

    config = {
        # Relative to the study folder, so `survey fit STUDY` finds it from any directory.
        "run": os.path.relpath(run.resolve(), out.resolve()),
        "run_json_sha256": sha256_file(run / "run.json") if (run / "run.json").is_file() else None,
        "resolution": resolution,
        "methods": methods,
        "images": images,
        "trials_per_participant": trials_per_participant,
        "validation": validation,
        "repeat_swapped": repeat_swapped,
        "display": display,
        "max_side": max_side,
        "crop_size": crop_size,
        "seed": seed,
        "completion_url": completion_url,
        "practice": practice,
        "validation_tolerance": validation_tolerance,
        "allow_phone": allow_phone,
        "min_viewport": list(min_viewport),
    }
    digest = hashlib.sha256(
        json.dumps({"config": {k: v for k, v in config.items() if k != "run"}, "question": question,
                    "items": [(i["key"], i["sha256"]) for i in items], "pairs": pairs},
                   sort_keys=True).encode()
    ).hexdigest()
    doc = {
        "format": FORMAT,
        "uid": digest[:16],
        "name": name or f"{run.name} at {resolution}",
        "question": question,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "items": items,
        "pairs": pairs,
    }
    write_json(out / "study.json", doc)
    log.info("study %s: %d items, %d pairs in %s", doc["uid"], len(items), len(pairs), out)
    return load_study(out)


def load_study(folder: str | Path) -> StudySpec:
    """Read and validate ``folder/study.json``; every problem is a one-line ``UserError``."""
    folder = Path(folder)
    path = folder / "study.json"
    if not path.is_file():
        raise UserError(f"{path}: not found; create the study with `hrbench survey create`")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); recreate the study") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UserError(f"{path}: not a {FORMAT} file; recreate the study")
    try:
        cfg = doc["config"]
        items, pairs = list(doc["items"]), list(doc["pairs"])
        keys = set()
        for it in items:
            if not _FILE_RE.fullmatch(str(it["file"])):
                raise UserError(f"{path}: item {it['key']!r} has a bad file name {it['file']!r}")
            if not (folder / "images" / it["file"]).is_file():
                raise UserError(f"{folder / 'images' / it['file']}: missing; recreate the study")
            for k in ("width", "height", "orig_width", "orig_height"):
                int(it[k])
            keys.add(it["key"])
        for p in pairs:
            if p["a"] not in keys or p["b"] not in keys or p["kind"] not in ("compare", "validation"):
                raise UserError(f"{path}: pair {p} refers to unknown items or kind")
            if p["kind"] == "validation" and p.get("correct") not in (p["a"], p["b"]):
                raise UserError(f"{path}: validation pair {p} has no correct answer")
        spec = StudySpec(
            folder=folder.resolve(),
            uid=str(doc["uid"]),
            name=str(doc["name"]),
            question=str(doc["question"]),
            seed=int(cfg["seed"]),
            trials_per_participant=int(cfg["trials_per_participant"]),
            validation=int(cfg["validation"]),
            repeat_swapped=bool(cfg["repeat_swapped"]),
            completion_url=cfg.get("completion_url"),
            items=items,
            pairs=pairs,
            raw=doc,
            practice=bool(cfg.get("practice", True)),
            validation_tolerance=int(cfg.get("validation_tolerance", 0)),
            allow_phone=bool(cfg.get("allow_phone", False)),
            min_viewport=tuple(int(v) for v in cfg.get("min_viewport", MIN_VIEWPORT)),
        )
        if len(spec.min_viewport) != 2:
            raise ValueError("min_viewport must be [width, height]")
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: malformed ({type(exc).__name__}: {exc}); recreate the study") from None
    return spec


def sync_study(db: Database, spec: StudySpec) -> int:
    """Insert the study from ``spec`` into the database unless its uid is present.

    Returns the study's database id. Safe to call from several processes at once: the
    losers of the insert race see the unique ``uid`` and read the winner's row.
    """
    with db.session_scope() as s:
        found = s.scalar(select(Study.id).where(Study.uid == spec.uid))
    if found is not None:
        return found
    try:
        with db.session_scope(write=True) as s:
            found = s.scalar(select(Study.id).where(Study.uid == spec.uid))
            if found is not None:
                return found
            study = Study(
                uid=spec.uid,
                name=spec.name,
                question=spec.question,
                n_trials=spec.trials_per_participant,
                n_validation=spec.validation,
                repeat_swapped=spec.repeat_swapped,
                seed=spec.seed,
                config_json=json.dumps(spec.raw.get("config", {}), sort_keys=True),
            )
            s.add(study)
            s.flush()
            ids: dict[str, int] = {}
            for it in spec.items:
                row = Item(
                    study_id=study.id,
                    key=it["key"],
                    method=it["method"],
                    image=it["image"],
                    kind=it["kind"],
                    file=it["file"],
                    width=it["width"],
                    height=it["height"],
                    orig_width=it["orig_width"],
                    orig_height=it["orig_height"],
                )
                s.add(row)
                s.flush()
                ids[it["key"]] = row.id
            for p in spec.pairs:
                s.add(
                    Pair(
                        study_id=study.id,
                        item_a_id=ids[p["a"]],
                        item_b_id=ids[p["b"]],
                        kind=p["kind"],
                        correct_item_id=ids[p["correct"]] if p.get("correct") else None,
                    )
                )
            log.info("imported study %s: %d items, %d pairs", spec.uid, len(ids), len(spec.pairs))
            return study.id
    except IntegrityError:
        with db.session_scope() as s:
            return s.scalar(select(Study.id).where(Study.uid == spec.uid))
