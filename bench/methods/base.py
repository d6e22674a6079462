"""The inpainter interface, the shared wrapper and the method registry.

Every method is a subclass of :class:`Inpainter` that implements ``_inpaint`` and declares
its conventions as class attributes. :meth:`Inpainter.__call__` is the one place that
validates input, zeroes the hole, converts colour order, pads, calls the method, crops,
checks the output and pastes the known region back, so no method can peek at the hole or
return a malformed array.

Methods are registered by name with :func:`register`. A name is either exact (``telea``,
``dfnet@512``) or a family taking an argument after a colon (``external:<folder>``,
``two-stage:<base>``); :func:`create` resolves both.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import MethodUnavailable, UserError
from ..io import check_image, check_mask


@dataclass(frozen=True)
class MethodContext:
    """Run-wide settings every method may use."""

    device: str = "cpu"  # "cpu" or "cuda" (resolved from "auto" by the caller)
    weights_dir: Path | None = None  # explicit --weights-dir; see weights.py for the search order
    seed: int = 0


@dataclass
class InpaintResult:
    """What the wrapper returns besides the image: facts the runner records."""

    image: np.ndarray
    changed_known: bool  # did the method alter pixels outside the hole (before pasting)?


class Inpainter:
    """Base class. Subclasses set the class attributes and implement ``_inpaint``.

    ``_inpaint(image, mask)`` receives the image in ``color_order``, zero in the hole, padded
    (zero, bottom/right) to a multiple of ``pad_multiple``, and ``mask`` bool (True = hole) of
    the same padded size. It returns uint8 of the same shape and colour order.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    color_order: ClassVar[str] = "RGB"  # "RGB" or "BGR"
    pad_multiple: ClassVar[int] = 1
    native_size: ClassVar[int | None] = None  # working resolution, None = full resolution
    uses_gpu: ClassVar[bool] = False
    deterministic: ClassVar[bool] = True
    # Part of every result's fingerprint (see ``identity``): bump it when a change outside
    # the method's code modules (e.g. in a library it calls) alters its results.
    version: ClassVar[str] = "1"
    # Modules besides those of the class and its bases whose code shapes the results.
    code_modules: ClassVar[tuple[str, ...]] = ()
    # Importable modules whose version shapes the results (e.g. ``cv2``).
    libraries: ClassVar[tuple[str, ...]] = ()

    def __init__(self, context: MethodContext | None = None, arg: str | None = None):
        self.context = context or MethodContext()
        self.arg = arg

    # -- availability and metadata -------------------------------------------------------
    @classmethod
    def unavailable_reason(cls, context: MethodContext, arg: str | None = None) -> str | None:
        """None when the method can run here; otherwise one line saying what is missing."""
        return None

    @classmethod
    def weights_files(cls, context: MethodContext, arg: str | None = None) -> list[Path]:
        """The checkpoint files this method would load here (their sha256 enter ``identity``)."""
        return []

    @classmethod
    def uses_methods(cls, context: MethodContext, arg: str | None = None) -> list[str]:
        """Names of other registered methods this one runs (their identities are part of its own)."""
        return []

    @classmethod
    def identity(cls, context: MethodContext, arg: str | None = None) -> dict:
        """Everything besides the input that this method's results depend on, cheaply, without
        loading a model: class, argument, version, conventions, device, the sha256 of its code
        and weights files, library versions and the identities of methods it runs.
        """
        modules = {c.__module__ for c in cls.__mro__ if issubclass(c, Inpainter)}
        return {
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "arg": arg,
            "version": cls.version,
            "color_order": cls.color_order,
            "pad_multiple": cls.pad_multiple,
            "native_size": cls.native_size,
            "device": context.device if cls.uses_gpu else "cpu",
            "code_sha256": _code_sha256(tuple(sorted(modules | set(cls.code_modules)))),
            "weights_sha256": {p.name: _file_sha256(p) for p in cls.weights_files(context, arg)},
            "libraries": {m: _library_version(m) for m in cls.libraries},
            "uses": {n: identity(n, context) for n in cls.uses_methods(context, arg)},
        }

    def metadata(self) -> dict:
        """Facts recorded in run.json; subclasses extend (weights file, sha256, …)."""
        return {
            "name": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "description": self.description,
            "color_order": self.color_order,
            "pad_multiple": self.pad_multiple,
            "native_size": self.native_size,
            "uses_gpu": self.uses_gpu,
            "deterministic": self.deterministic,
            "device": self.context.device if self.uses_gpu else "cpu",
        }

    def close(self) -> None:
        """Free models or other resources (called once at the end of a run)."""

    def set_item(self, image_id: str, resolution: int) -> None:
        """Told by the runner which item the next call is for; most methods ignore it.

        Methods whose results are looked up rather than computed (``external:``) need it.
        """

    # -- the shared wrapper ----------------------------------------------------------------
    def _inpaint(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run(self, image: np.ndarray, mask: np.ndarray) -> InpaintResult:
        check_image(image, f"{self.name} input")
        check_mask(mask, f"{self.name} mask", image.shape[:2])
        h, w = mask.shape
        work = image.copy()
        work[mask] = 0  # the method never sees the hole's content
        if self.color_order == "BGR":
            work = work[..., ::-1]
        m = self.pad_multiple
        ph, pw = -h % m, -w % m
        pmask = mask
        if ph or pw:
            work = np.pad(work, ((0, ph), (0, pw), (0, 0)))
            pmask = np.pad(mask, ((0, ph), (0, pw)))
        out = self._inpaint(np.ascontiguousarray(work), pmask)
        if not isinstance(out, np.ndarray) or out.shape != work.shape:
            got = getattr(out, "shape", type(out).__name__)
            raise RuntimeError(f"method {self.name} returned {got}, expected {work.shape}")
        if out.dtype != np.uint8:
            out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        out = out[:h, :w]
        if self.color_order == "BGR":
            out = out[..., ::-1]
        known = ~mask
        changed = bool((out[known] != image[known]).any())
        result = np.where(mask[..., None], out, image)
        return InpaintResult(np.ascontiguousarray(result, dtype=np.uint8), changed)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``inpaint(uint8[H,W,3] RGB, bool[H,W] hole) -> uint8[H,W,3] RGB``."""
        return self.run(image, mask).image


# -- identity helpers -----------------------------------------------------------------------
def _code_sha256(modules: tuple[str, ...]) -> str:
    """sha256 over the source of ``modules`` (a package: all its ``.py`` files), in order.

    Read on every call, not cached: an edit between two runs in one process must count.
    """
    h = hashlib.sha256()
    for mod in modules:
        # Found without importing it (``nets`` would import torch); ``__main__`` has no spec.
        module = sys.modules.get(mod)
        if module is not None:
            source, package = getattr(module, "__file__", None), hasattr(module, "__path__")
        else:
            spec = importlib.util.find_spec(mod)
            source, package = spec.origin, spec.submodule_search_locations is not None
        if source is None:  # built-in or frozen: nothing of ours to hash
            h.update(f"{mod}:<no source>\n".encode())
            continue
        source = Path(source)
        files = sorted(source.parent.rglob("*.py")) if package else [source]
        for f in files:
            h.update(f"{mod}:{f.relative_to(source.parent).as_posix()}\n".encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    from .weights import file_record  # cached by path, size and mtime

    return file_record(path)["sha256"]


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _library_version(module: str) -> str:
    """Version of the distribution(s) providing ``module``, found without importing it
    (importing torch in the driver only to read its version would cost seconds).
    """
    dists = sorted(set(_distributions().get(module, [])))
    return ", ".join(f"{d} {importlib.metadata.version(d)}" for d in dists) or "unknown"


# -- registry -------------------------------------------------------------------------------
@dataclass
class _Entry:
    factory: type[Inpainter]
    family: bool  # takes an argument after ':'
    summary: str = ""
    default: bool = field(default=False)  # part of the default benchmark


_REGISTRY: dict[str, _Entry] = {}

# Modules that register built-in methods; imported on first use so that listing the
# classical methods never pays for importing torch.
_BUILTIN_MODULES = (
    "bench.methods.classical",
    "bench.methods.patchmatch",
    "bench.methods.external",
    "bench.methods.two_stage",
    "bench.methods.slim_model",
)
_loaded = False


def register(name: str, *, family: bool = False, default: bool = False) -> Callable:
    """Class decorator: register an :class:`Inpainter` subclass under ``name``."""

    def deco(cls: type[Inpainter]) -> type[Inpainter]:
        # A family is stored under "name:" so that an exact name may share its head
        # (``two-stage`` and ``two-stage:<base>``).
        key = f"{name}:" if family else name
        if key in _REGISTRY and _REGISTRY[key].factory is not cls:
            raise ValueError(f"method name {key!r} registered twice")
        if not family:
            cls.name = name
        _REGISTRY[key] = _Entry(cls, family, (cls.description or cls.__doc__ or "").strip(), default)
        return cls

    return deco


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:  # a real missing dependency inside the module
                raise


def _resolve(name: str) -> tuple[_Entry, str | None]:
    _load_builtins()
    if name in _REGISTRY and not _REGISTRY[name].family:
        return _REGISTRY[name], None
    head, sep, arg = name.partition(":")
    if sep and f"{head}:" in _REGISTRY:
        if not arg:
            raise UserError(f"method {name!r}: '{head}:' needs an argument after the colon")
        return _REGISTRY[f"{head}:"], arg
    known = ", ".join(available_names())
    raise UserError(f"unknown method {name!r}; known methods: {known}")


def available_names() -> list[str]:
    """Registered names; families are shown as ``name:<arg>``."""
    _load_builtins()
    return sorted(f"{n}<arg>" if e.family else n for n, e in _REGISTRY.items())


def default_methods() -> list[str]:
    _load_builtins()
    return [n for n, e in _REGISTRY.items() if e.default]


def unavailable_reason(name: str, context: MethodContext) -> str | None:
    """None if ``name`` can run here, else a one-line reason (e.g. missing weights)."""
    entry, arg = _resolve(name)
    return entry.factory.unavailable_reason(context, arg)


def identity(name: str, context: MethodContext) -> dict:
    """What results of method ``name`` depend on besides the input (see ``Inpainter.identity``)."""
    entry, arg = _resolve(name)
    return {"name": name, **entry.factory.identity(context, arg)}


def create(name: str, context: MethodContext | None = None) -> Inpainter:
    """Instantiate the method called ``name``; ``MethodUnavailable`` if it cannot run here."""
    context = context or MethodContext()
    entry, arg = _resolve(name)
    reason = entry.factory.unavailable_reason(context, arg)
    if reason:
        raise MethodUnavailable(f"method {name!r} unavailable: {reason}")
    inst = entry.factory(context, arg)
    if entry.family:
        inst.name = name  # instance attribute: e.g. "external:photoshop"
    return inst


def describe() -> list[dict]:
    """One dict per registered method: name, summary, family flag, in default run."""
    _load_builtins()
    return [
        {"name": n + ("<arg>" if e.family else ""), "summary": e.summary.splitlines()[0] if e.summary else "",
         "default": e.default}
        for n, e in sorted(_REGISTRY.items())
    ]


__all__ = [
    "Inpainter",
    "InpaintResult",
    "MethodContext",
    "register",
    "create",
    "available_names",
    "default_methods",
    "unavailable_reason",
    "identity",
    "describe",
]
