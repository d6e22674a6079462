"""Reading and writing images and masks, with validation and atomic writes.

Conventions (fixed for the whole project):
- images in memory are ``uint8[H, W, 3]`` RGB;
- masks in memory are ``bool[H, W]`` with ``True`` = hole;
- mask files are 8-bit greyscale (or RGB, first channel used) with 255 = hole. A mask file
  may be anti-aliased: a pixel is a hole when its value is >= 128 (``MASK_THRESHOLD``).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import UserError

MASK_THRESHOLD = 128
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# Decompression-bomb guard: our largest legitimate inputs are ~50 MP photos.
Image.MAX_IMAGE_PIXELS = 200_000_000


def _open(path: Path) -> Image.Image:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found; check the path")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected an image file")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: cannot read image ({exc}); re-export it as PNG or JPEG") from None
    return img


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as ``uint8[H, W, 3]`` RGB.

    Accepted and converted: 8-bit RGB, palette, and greyscale (replicated to three channels,
    a photo in grey is still a valid photo). Refused: images with an alpha channel that is
    not fully opaque (the transparent pixels have no defined colour) and 16-bit / float images
    (converting would silently lose precision; convert them to 8-bit yourself).
    """
    path = Path(path)
    img = _open(path)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F") or (
        mode == "RGB" and img.info.get("bitdepth", 8) > 8
    ):
        raise UserError(
            f"{path}: {mode} image with more than 8 bits per channel; "
            "convert it to 8-bit RGB (e.g. PNG 24-bit) first"
        )
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"))
        if (rgba[..., 3] != 255).any():
            raise UserError(
                f"{path}: image has transparent pixels (alpha channel); "
                "flatten it onto a background or save without alpha"
            )
        return np.ascontiguousarray(rgba[..., :3])
    if mode not in ("RGB", "L", "P", "1", "CMYK", "YCbCr"):
        raise UserError(f"{path}: unsupported image mode {mode}; save it as 8-bit RGB")
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def read_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mask file as ``bool[H, W]`` (True = hole; file value >= 128 is a hole).

    ``shape`` (H, W), when given, must match. Empty masks (no hole) and full masks (no known
    pixel) are refused: neither is an inpainting problem.
    """
    path = Path(path)
    img = _open(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        arr = arr / arr.max() * 255 if arr.max() > 0 else arr
    else:
        arr = np.asarray(img.convert("RGB"))[..., 0] if img.mode != "L" else np.asarray(img)
    mask = np.asarray(arr) >= MASK_THRESHOLD
    check_mask(mask, path, shape)
    return mask


def check_mask(mask: np.ndarray, where: object, shape: tuple[int, int] | None = None) -> None:
    """Validate a boolean hole mask; raise ``UserError`` naming ``where`` otherwise."""
    if shape is not None and tuple(mask.shape[:2]) != tuple(shape):
        raise UserError(
            f"{where}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
            f"{shape[1]}x{shape[0]}; masks must have the image's size"
        )
    if not mask.any():
        raise UserError(f"{where}: mask has no hole (no pixel >= {MASK_THRESHOLD}); white = hole")
    if mask.all():
        raise UserError(f"{where}: mask covers the whole image; nothing is known to inpaint from")


def check_image(image: np.ndarray, where: object = "image") -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise UserError(f"{where}: expected uint8 HxWx3 RGB, got {image.dtype} {image.shape}")


def _create_temp(path: Path) -> Path:
    """Create an empty, uniquely named file beside ``path`` and return its path.

    Created with mode 0666 so the kernel applies the process umask (0644 normally), as a plain
    ``open(path, "w")`` would; ``tempfile.mkstemp`` would force 0600 on every output.
    """
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{path.suffix or '.tmp'}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{path.parent}: could not create a temporary file beside {path.name}")


def file_in_the_way(path: str | os.PathLike) -> Path | None:
    """The first existing non-folder among the folders above ``path`` (which writing ``path``
    would have to create or enter), or None."""
    return next((p for p in Path(path).parents if p.exists() and not p.is_dir()), None)


def check_writable_file(path: str | os.PathLike) -> None:
    """One clear line, before any work, when ``path`` cannot be written as a file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a file name to write")
    blocking = file_in_the_way(path)
    if blocking is not None:
        raise UserError(f"{path}: {blocking} is a file, not a folder; choose another output path")


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``.

    A reader never sees a half-written file, and a crash leaves the old file (or none).
    """
    path = Path(path)
    check_writable_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """``a`` and ``b`` name one file: the same path once links are resolved, or one inode."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def refuse_input(out: str | os.PathLike, inputs: dict[str, str | os.PathLike], option: str = "-o") -> None:
    """Raise ``UserError`` if writing ``out`` would replace one of ``inputs`` (role -> path)."""
    for role, path in inputs.items():
        if same_file(out, path):
            raise UserError(
                f"{option} {out}: this is the input {role} ({path}); choose another output file"
            )


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write ``uint8[H, W, 3]`` RGB (or ``uint8/bool[H, W]``) atomically; format from suffix."""
    path = Path(path)
    arr = image.astype(np.uint8) * 255 if image.dtype == bool else image
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")
    with atomic_path(path) as tmp:
        # PNG level 1: ~5x faster than the default at 2048 px for ~10 % larger files.
        opts = {"quality": 95} if fmt == "JPEG" else {"compress_level": 1}
        Image.fromarray(arr).save(tmp, format=fmt, **opts)


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a bool mask as 8-bit PNG, 255 = hole."""
    write_image(path, mask.astype(bool))


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: object) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def literal_text():
    """Matplotlib settings under which figure text is drawn as written, never as mathtext.

    Photo and method names are the user's and may hold ``$`` (``external:`` folders too);
    mathtext would fail on them after a whole run. Use as a decorator on functions that
    build figures (the setting is read when a text is created, not when it is saved).
    """
    import matplotlib  # lazy: most users of io never draw

    return matplotlib.rc_context({"text.parse_math": False})


def save_figure(fig, stem: str | os.PathLike, formats=("png", "pdf"), dpi: int = 150,
                tight: bool = True) -> list[Path]:
    """Write a matplotlib figure as ``stem.<fmt>`` for each format, atomically; close it.

    ``tight`` crops to the drawn content (``bbox_inches="tight"``), which costs a second
    layout pass; figures redrawn often (training curves) may skip it.
    """
    import matplotlib.pyplot as plt  # lazy: most users of io never draw

    stem = Path(stem)
    paths = []
    try:
        for fmt in formats:
            path = stem.parent / f"{stem.name}.{fmt}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight" if tight else None)
            paths.append(path)
    finally:
        plt.close(fig)
    return paths


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def display_path(path: str | os.PathLike) -> str:
    """``path`` as a person (and a committed results file) should see it.

    Inside the current folder: relative; inside the home folder: ``~/…``; else absolute.
    Keeps machine-specific prefixes out of messages and of ``run.json``.
    """
    p = Path(path).expanduser().absolute()
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        try:
            rel = p.relative_to(base)
        except ValueError:
            continue
        return prefix + str(rel) if (prefix or str(rel) != ".") else "."
    return str(p)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder``, sorted by name; a clear error if there are none."""
    folder = Path(folder)
    if folder.is_file():
        raise UserError(f"{folder}: a file, not a folder; pass the folder that holds the images")
    if not folder.is_dir():
        raise UserError(f"{folder}: folder not found; pass an existing folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found in this folder")
    return files
