"""``external:<folder>`` — results made by any other tool (Photoshop, HiFill, ProFill …).

Nothing is computed: for each benchmark item the result is read from ``<folder>``, found by
the item's image name (the ground truth's file stem in the run's manifest) and resolution:

    <folder>/<resolution>/<image>.<ext>      e.g. photoshop/1024/aitzgorri.png   (preferred)
    <folder>/<image>_<resolution>.<ext>      e.g. photoshop/aitzgorri_1024.png   (flat)

``<ext>`` is any image suffix ``bench.io`` reads (.png, .jpg, …); prefer PNG, since JPEG
artefacts count against the tool. Exactly one file must match: two candidates for the same
item (e.g. both layouts, or .png and .jpg) are refused as ambiguous. ``<folder>`` is taken
as given (relative to the working directory). The file must have the ground truth's size;
the runner pastes the known region back and records whether the tool changed it.

The runner names the item with :meth:`Inpainter.set_item` before each call; outside a run
(no item named) the method cannot know which file to read and says so.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..io import IMAGE_SUFFIXES, read_image
from .base import Inpainter, MethodContext, register


def _stem(image_id: str) -> str:
    """The image name without an image suffix (``aitzgorri.png`` -> ``aitzgorri``)."""
    path = Path(image_id)
    return path.stem if path.suffix.lower() in IMAGE_SUFFIXES else image_id


def find_result(folder: Path, image_id: str, resolution: int) -> Path:
    """The one file holding the result for ``(image_id, resolution)`` under the layout rule
    of the module docstring (suffix matched case-insensitively); ``UserError`` if no file or
    several files match."""
    stem = _stem(image_id)
    places = ((folder / str(resolution), stem), (folder, f"{stem}_{resolution}"))
    found: list[Path] = []
    for where, name in places:
        if where.is_dir():
            found += sorted(
                f for f in where.iterdir()
                if f.is_file() and f.stem == name and f.suffix.lower() in IMAGE_SUFFIXES
            )
    if not found:
        raise UserError(
            f"{folder / str(resolution) / (stem + '.png')}: no external result for image "
            f"{stem!r} at {resolution} px (also looked for {folder / f'{stem}_{resolution}.png'} "
            "and other image suffixes); put the tool's output there"
        )
    if len(found) > 1:
        names = ", ".join(str(f) for f in found)
        raise UserError(f"{folder}: several results for {stem!r} at {resolution} px ({names}); keep one")
    return found[0]


@register("external", family=True)
class External(Inpainter):
    """Precomputed results from another tool, read from a folder by image name and resolution."""

    description = "Precomputed results from any other tool, read from <folder> by file name"

    def __init__(self, context: MethodContext | None = None, arg: str | None = None):
        super().__init__(context, arg)
        self.folder = Path(arg or "")
        self._item: tuple[str, int] | None = None

    @classmethod
    def unavailable_reason(cls, context: MethodContext, arg: str | None = None) -> str | None:
        folder = Path(arg or "")
        if not folder.is_dir():
            return (f"{folder}: folder not found; external:<folder> needs the tool's results as "
                    "<folder>/<resolution>/<image>.png")
        return None

    @classmethod
    def identity(cls, context: MethodContext, arg: str | None = None) -> dict:
        # The results are the folder's files: any file added, replaced or touched counts.
        folder = Path(arg or "")
        listing = sorted(
            f"{p.relative_to(folder).as_posix()}:{st.st_size}:{st.st_mtime_ns}"
            for p in folder.rglob("*")
            if p.is_file() and (st := p.stat())
        )
        digest = hashlib.sha256("\n".join(listing).encode()).hexdigest()
        return {**super().identity(context, arg), "folder_listing_sha256": digest}

    def set_item(self, image_id: str, resolution: int) -> None:
        self._item = (image_id, int(resolution))

    def _inpaint(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self._item is None:
            raise UserError(
                f"{self.name}: results are looked up by image name and resolution, which only "
                "'hrbench run' provides; use it inside a benchmark run"
            )
        path = find_result(self.folder, *self._item)
        out = read_image(path)
        if out.shape != image.shape:
            raise UserError(
                f"{path}: result is {out.shape[1]}x{out.shape[0]} but the ground truth is "
                f"{image.shape[1]}x{image.shape[0]}; export the tool's result at the input's size"
            )
        return out

    def metadata(self) -> dict:
        return {
            **super().metadata(),
            "folder": str(self.arg),
            "layout": "<folder>/<resolution>/<image>.<ext> or <folder>/<image>_<resolution>.<ext>",
        }
