"""Where checkpoints are looked for, what they are called, and whether a method can run.

Search order for a weights file (the first folder that has it wins):

1. the explicit folder: ``--weights-dir DIR`` / ``MethodContext.weights_dir``;
2. the folders in the environment variable ``HRBENCH_WEIGHTS`` (``os.pathsep``-separated);
3. the per-user cache folder: ``$XDG_CACHE_HOME/hrbench/weights`` (default
   ``~/.cache/hrbench/weights``).

The published checkpoints are hosted outside the package registries, so nothing is
downloaded: a method whose file is missing is reported unusable with one line saying which
file to put where. Every file used is recorded with its sha256 (``file_record``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..io import display_path, sha256_file
from .base import MethodContext

ENV_VAR = "HRBENCH_WEIGHTS"


@dataclass(frozen=True)
class WeightsFile:
    """One checkpoint the project knows how to load."""

    key: str
    filename: str
    network: str
    layout: str  # the file's format, in words
    parameters: int
    source: str


DFNET = WeightsFile(
    key="dfnet",
    filename="model_places2.pth",
    network="DFNet",
    layout="bare state_dict, 215 entries",
    parameters=32_880_504,
    source="the authors' release of 'Deep Two-Stage High-Resolution Image Inpainting' "
    "(a-mos/High_Resolution_Image_Inpainting, weights/)",
)
REFINEMENT = WeightsFile(
    key="refinement",
    filename="refinement.pth",
    network="RefinementNet",
    layout="{'state_dict': …}, 109 entries",
    parameters=36_858_507,
    source=DFNET.source,
)
FILES = {f.key: f for f in (DFNET, REFINEMENT)}

# sha256 of files whose identity we know. The published checkpoints' digests are not
# documented anywhere we could check, so only the project's random test files are listed
# (written by ``python -m bench.weights_gen DIR --seed 0`` with torch's zip format).
KNOWN_SHA256 = {
    "94ff3527489b31a4061c1e6306fada0c06dcd02db81c563137cf870af183ad7a":
        "random test weights (bench.weights_gen, seed 0) - not the published DFNet",
    "f04775a46ac5d7697fb290d2f6efb8423b07243c8f73a74185376a9a1fb72c6a":
        "random test weights (bench.weights_gen, seed 0) - not the published RefinementNet",
}

# Which files each method needs; ``two-stage:<base>`` takes its coarse fill from the base.
METHOD_FILES: dict[str, tuple[WeightsFile, ...]] = {
    "two-stage": (DFNET, REFINEMENT),
    "two-stage/no-shift": (DFNET, REFINEMENT),
    "two-stage:<base>": (REFINEMENT,),
    "dfnet": (DFNET,),
    "dfnet@512": (DFNET,),
}


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hrbench" / "weights"


def search_dirs(context: MethodContext | None = None) -> list[tuple[str, Path]]:
    """``(origin, folder)`` in search order; folders need not exist."""
    dirs: list[tuple[str, Path]] = []
    if context is not None and context.weights_dir is not None:
        dirs.append(("--weights-dir", Path(context.weights_dir)))
    for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if part.strip():
            dirs.append((ENV_VAR, Path(part.strip()).expanduser()))
    dirs.append(("user cache", user_cache_dir()))
    return dirs


def find(file: WeightsFile, context: MethodContext | None = None) -> Path | None:
    """The first existing ``file.filename`` along :func:`search_dirs`, else None."""
    for _, folder in search_dirs(context):
        path = folder / file.filename
        if path.is_file():
            return path
    return None


def missing_reason(files: tuple[WeightsFile, ...], context: MethodContext | None) -> str | None:
    """None if all ``files`` are found; else one line naming the file and where to put it."""
    missing = [f for f in files if find(f, context) is None]
    if not missing:
        return None
    target = search_dirs(context)[0][1]
    names = " and ".join(f"{f.filename} ({f.network})" for f in missing)
    return (
        f"weights {names} not found; put {'them' if len(missing) > 1 else 'it'} in {display_path(target)} "
        f"(or pass --weights-dir DIR, or set {ENV_VAR}); see 'hrbench weights'"
    )


def require(file: WeightsFile, context: MethodContext | None) -> Path:
    """The path of ``file``; :class:`~bench.errors.MethodUnavailable` if it is missing."""
    from ..errors import MethodUnavailable

    path = find(file, context)
    if path is None:
        raise MethodUnavailable(missing_reason((file,), context))
    return path


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_record(path: Path) -> dict:
    """Facts recorded in run metadata: path, size, sha256, and what the digest is known as."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:  # hashing 140 MB takes a while; once per file and version
        _SHA_CACHE[key] = sha256_file(path)
    digest = _SHA_CACHE[key]
    return {
        "path": display_path(path),
        "bytes": st.st_size,
        "sha256": digest,
        "known_as": KNOWN_SHA256.get(digest, "unknown (not a file this project has a digest for)"),
    }


def report(context: MethodContext | None = None, with_sha256: bool = True) -> dict:
    """Everything ``hrbench weights`` shows: search folders, files, usable methods."""
    files = []
    for f in FILES.values():
        path = find(f, context)
        entry = {"key": f.key, "filename": f.filename, "network": f.network,
                 "layout": f.layout, "parameters": f.parameters, "source": f.source,
                 "found": path is not None}
        if path is not None:
            entry.update(file_record(path) if with_sha256 else {"path": str(path)})
        files.append(entry)
    methods = [
        {"method": name, "needs": [f.filename for f in need],
         "reason": missing_reason(need, context)}
        for name, need in METHOD_FILES.items()
    ]
    return {
        "search_dirs": [{"origin": o, "path": str(p), "exists": p.is_dir()}
                        for o, p in search_dirs(context)],
        "files": files,
        "methods": methods,
    }
