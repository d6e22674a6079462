"""Inpainting methods behind one registry (see ``base.py``)."""

from .base import (
    Inpainter,
    InpaintResult,
    MethodContext,
    available_names,
    create,
    default_methods,
    describe,
    identity,
    register,
    unavailable_reason,
)

__all__ = [
    "InpaintResult",
    "Inpainter",
    "MethodContext",
    "available_names",
    "create",
    "default_methods",
    "describe",
    "identity",
    "register",
    "unavailable_reason",
]
