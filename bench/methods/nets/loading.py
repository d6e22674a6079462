"""Strict checkpoint loading for the published file formats.

Accepted: a bare state_dict (``model_places2.pth``), a dict holding it under
``state_dict`` (``refinement.pth``), and either with every key prefixed ``module.`` (saved
from ``DataParallel``). Anything else — a missing or unexpected key, a shape or dtype
mismatch, a file that is not a torch checkpoint — is a :class:`~bench.errors.UserError`
naming the file and listing what differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ...errors import UserError

_MAX_LISTED = 8  # keys listed per kind in an error message (the count is always given)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Load ``path`` (on CPU, tensors only) and return its state_dict, unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; check the path or run 'hrbench weights'")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable torch checkpoint ({first[:200]})") from None
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj: object, where: object = "checkpoint") -> dict[str, torch.Tensor]:
    """Bare state_dict, ``{'state_dict': …}``, optional ``module.`` prefix → plain state_dict."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise UserError(f"{where}: expected a state_dict (a mapping of names to tensors), "
                        f"got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"{where}: entries that are not tensors: {_listing(bad)}")
    keys = list(obj)
    if keys and all(k.startswith("module.") for k in keys):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], where: object) -> None:
    """Raise UserError unless ``state`` has exactly ``model``'s keys, shapes and dtypes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {_shape(state[k])} (expected {_shape(v)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    dtypes = [
        f"{k} {state[k].dtype} (expected {v.dtype})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) == tuple(v.shape)
        and state[k].dtype != v.dtype and not (state[k].is_floating_point() and v.is_floating_point())
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {_listing(shapes)}")
    if dtypes:
        problems.append(f"dtype mismatches: {_listing(dtypes)}")
    if problems:
        raise UserError(
            f"{where}: does not fit {type(model).__name__} — " + "; ".join(problems)
            + f"; use the published {type(model).__name__} checkpoint (see 'hrbench weights')"
        )


def load_into(model: nn.Module, path: str | Path) -> nn.Module:
    """Strictly load the checkpoint at ``path`` into ``model``; returns ``model`` in eval mode.

    ``model`` may live on the ``meta`` device: the loaded tensors are then adopted as its
    parameters (``assign=True``), so the weights are held in memory once, not twice.
    """
    state = read_checkpoint(path)
    check_state_dict(model, state, path)
    on_meta = any(t.is_meta for t in model.state_dict().values())
    model.load_state_dict(state, strict=True, assign=on_meta)
    return model.eval()


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(d) for d in t.shape) or "scalar"


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" … and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"{len(items)} ({shown}{more})"
