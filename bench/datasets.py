"""Datasets: the embedded sample set and ``prepare`` (photos -> protocol ground truths + masks).

``prepare`` turns any folder of photos into, for each test resolution N, square N×N ground
truths (centre crop to the largest square, then reduce with the chosen resize mode) and hole
masks, plus ``manifest.csv`` (image, resolution, gt, mask, sha256 of both) and
``prepare.json`` (the settings). An image whose shorter side is below N is skipped for N and
reported — never upsampled.

Masks: ``"centre"`` makes the protocol's centred square hole (side round(fraction × N)).
A folder of mask files can be given instead: for each image stem, ``DIR/<N>/<stem>.png``
(exactly N×N) is used when present, else ``DIR/<stem>.png`` (same size as the photo, or
already square), which is cropped and resized with the image (always nearest, so it stays
binary).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from .errors import UserError
from .io import (
    check_mask,
    file_in_the_way,
    list_images,
    read_image,
    read_mask,
    sha256_file,
    write_image,
    write_json,
    write_mask,
    write_text,
)
from .masks import centre_square_mask
from .protocol import DEFAULT_HOLE_FRACTION, PROTOCOL_RESOLUTIONS
from .resize import RESIZE_MODES, centre_square, resize, resize_nearest

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["image", "resolution", "gt", "mask", "gt_sha256", "mask_sha256"]


# Where a wheel carries the repository folder datasets/sample (copied there by setup.py).
SAMPLE_RESOURCE = "sample_data"


def sample_dir() -> Path:
    """The embedded sample set (six CC-BY / CC-BY-SA photos, see its LICENSES.md).

    Installed from a wheel: inside the package (``bench/sample_data``); in a source checkout
    (editable install): the repository folder ``datasets/sample``.
    """
    installed = Path(str(resources.files("bench") / SAMPLE_RESOURCE))
    checkout = Path(__file__).resolve().parent.parent / "datasets" / "sample"
    for path in (installed, checkout):
        if path.is_dir():
            return path
    raise UserError(
        "the embedded sample set is missing from this installation; reinstall hrbench "
        "(its wheel carries the photos) or pass --images DIR"
    )


@dataclass(frozen=True)
class PrepareSpec:
    """Everything that determines the prepared files (recorded in prepare.json)."""

    resolutions: tuple[int, ...] = PROTOCOL_RESOLUTIONS
    resize: str = "nearest"
    mask: str = "centre"  # "centre" or a folder of mask files
    hole_fraction: float = DEFAULT_HOLE_FRACTION

    def __post_init__(self) -> None:
        # `--resolutions 1024,1024` must not prepare (and score) every photo twice
        object.__setattr__(self, "resolutions", tuple(dict.fromkeys(self.resolutions)))

    def validate(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise UserError(f"--resize {self.resize!r}: choose one of {', '.join(RESIZE_MODES)}")
        if not self.resolutions or any(int(n) < 16 for n in self.resolutions):
            raise UserError(f"--resolutions {list(self.resolutions)}: give sizes of at least 16 px")
        if not 0 < self.hole_fraction < 1:
            raise UserError(f"--hole-fraction {self.hole_fraction}: must be between 0 and 1")
        if self.mask != "centre" and not Path(self.mask).is_dir():
            raise UserError(f"--mask {self.mask}: not 'centre' and not an existing folder of masks")


@dataclass
class PrepareReport:
    manifest: pd.DataFrame
    skipped: list[dict] = field(default_factory=list)  # image, resolution, reason


def _user_mask(mask_dir: Path, stem: str, n: int, photo_shape: tuple[int, int]):
    per_res = mask_dir / str(n) / f"{stem}.png"
    if per_res.exists():
        return read_mask(per_res, (n, n))
    whole = mask_dir / f"{stem}.png"
    if not whole.exists():
        raise UserError(f"{mask_dir}: no mask for image {stem!r}; expected {per_res} or {whole}")
    m = read_mask(whole)
    if m.shape != photo_shape and m.shape[0] != m.shape[1]:
        raise UserError(
            f"{whole}: mask is {m.shape[1]}x{m.shape[0]}, photo is {photo_shape[1]}x{photo_shape[0]}; "
            "give a mask of the photo's size, a square one, or DIR/<N>/<stem>.png at N×N"
        )
    m = resize_nearest(centre_square(m), (n, n))
    check_mask(m, f"{whole} resized to {n}x{n}")
    return m


def _source_sha256(path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError as exc:  # unreadable: prepare() skips and reports it
        return f"unreadable ({exc.strerror})"


def _same_spec(out: Path, spec: PrepareSpec, sources: dict[str, str]) -> bool:
    info = out / "prepare.json"
    if not info.exists() or not (out / "manifest.csv").exists():
        return False
    try:
        old = json.loads(info.read_text())
    except json.JSONDecodeError:
        return False
    return old.get("spec") == json.loads(json.dumps(asdict(spec))) and old.get("sources") == sources


def prepare(
    images: Path | Sequence[Path],
    out: Path,
    spec: PrepareSpec = PrepareSpec(),
    progress: bool = True,
) -> PrepareReport:
    """Write ground truths, masks and ``manifest.csv`` under ``out``; reuse them if unchanged.

    ``images`` is a folder or a list of photo files. Reuse is decided by the settings and the
    sha256 of every source photo, so editing a photo or a setting re-prepares.
    """
    spec.validate()
    out = Path(out)
    blocking = file_in_the_way(out / "manifest.csv")
    if blocking is not None:
        raise UserError(f"--out: {blocking} is a file, not a folder; choose another --out")
    files = list_images(images) if isinstance(images, (str, Path)) else [Path(p) for p in images]
    stems = [f.stem for f in files]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise UserError(f"{files[0].parent}: several files share the name {dupes[0]!r}; rename them")
    sources = {f.stem: _source_sha256(f) for f in files}
    if spec.mask != "centre":  # an edited mask file must re-prepare like an edited photo
        mask_dir = Path(spec.mask)
        for m in sorted(mask_dir.rglob("*.png")):
            sources[f"mask {m.relative_to(mask_dir).as_posix()}"] = _source_sha256(m)
    if _same_spec(out, spec, sources):
        manifest = pd.read_csv(out / "manifest.csv")
        old = json.loads((out / "prepare.json").read_text())
        log.info("prepared data in %s is up to date (%d items)", out, len(manifest))
        return PrepareReport(manifest, old.get("skipped", []))

    rows, skipped = [], []
    mask_dir = None if spec.mask == "centre" else Path(spec.mask)
    bar = tqdm(files, desc="prepare", unit="img", disable=not progress, leave=False)
    for path in bar:
        try:
            photo = read_image(path)
        except UserError as exc:  # one bad photo must not stop the others: skip and report it
            skipped.append({"image": path.stem, "resolution": None, "reason": str(exc)})
            log.warning("skip %s: %s", path.name, exc)
            continue
        square = centre_square(photo)
        side = square.shape[0]
        for n in spec.resolutions:
            n = int(n)
            if side < n:
                reason = f"shorter side {side} px < {n} px (never upsampled)"
                skipped.append({"image": path.stem, "resolution": n, "reason": reason})
                log.info("skip %s at %d: %s", path.name, n, reason)
                continue
            gt = resize(square, (n, n), spec.resize) if side != n else square
            mask = (
                centre_square_mask(n, n, spec.hole_fraction)
                if mask_dir is None
                else _user_mask(mask_dir, path.stem, n, photo.shape[:2])
            )
            gt_rel, mask_rel = f"{n}/{path.stem}.png", f"{n}/{path.stem}_mask.png"
            write_image(out / gt_rel, gt)
            write_mask(out / mask_rel, mask)
            rows.append(
                {
                    "image": path.stem,
                    "resolution": n,
                    "gt": gt_rel,
                    "mask": mask_rel,
                    "gt_sha256": sha256_file(out / gt_rel),
                    "mask_sha256": sha256_file(out / mask_rel),
                }
            )
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    if manifest.empty and all(s["resolution"] is None for s in skipped):
        raise UserError(f"{images}: no photo could be read; the first: {skipped[0]['reason']}")
    if manifest.empty:
        raise UserError(
            f"{images}: no image is large enough for resolutions {list(spec.resolutions)}; "
            "use smaller --resolutions or larger photos"
        )
    write_text(out / "manifest.csv", manifest.to_csv(index=False))
    write_json(out / "prepare.json", {"spec": asdict(spec), "sources": sources, "skipped": skipped})
    return PrepareReport(manifest, skipped)
