"""Which torch device to compute on: the one place that turns ``auto|cpu|cuda`` into a device."""

from __future__ import annotations

from .errors import UserError

DEVICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    try:
        import torch
    except ModuleNotFoundError:  # the classical methods run without torch
        return False
    return torch.cuda.is_available()


def resolve_device(name: str, option: str = "--device") -> str:
    """``"cpu"`` or ``"cuda"`` for ``name`` in :data:`DEVICES`; ``auto`` picks CUDA when visible.

    Asking for ``cuda`` where torch sees no CUDA device is a user error (one line, naming
    ``option``), never a silent fall-back to the CPU.
    """
    if name not in DEVICES:
        raise UserError(f"{option} {name!r}: choose one of {', '.join(DEVICES)}")
    if name == "cpu":
        return "cpu"
    if cuda_available():
        return "cuda"
    if name == "cuda":
        raise UserError(f"{option} cuda: torch sees no CUDA device; use {option} cpu or auto")
    return "cpu"
