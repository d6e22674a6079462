"""Torch modules of the two-stage pipeline and their checkpoint loaders.

Importing this package imports torch; the method registry imports it lazily.
"""

from __future__ import annotations

from pathlib import Path

from .dfnet import DFNet
from .loading import check_state_dict, load_into, read_checkpoint, unwrap_state_dict
from .refinement import RefinementNet


def load_dfnet(path: str | Path, device: str = "cpu") -> DFNet:
    """DFNet from ``model_places2.pth`` (or the same in another accepted format), eval mode."""
    return load_into(_fresh(DFNet), path).to(device)


def load_refinement(path: str | Path, device: str = "cpu") -> RefinementNet:
    """RefinementNet from ``refinement.pth`` (or another accepted format), eval mode."""
    return load_into(_fresh(RefinementNet), path).to(device)


def _fresh(cls):
    """An instance on the meta device: no random initialisation (loading replaces it) and
    no second copy of the weights (the loader adopts the checkpoint's tensors)."""
    import torch

    with torch.device("meta"):
        return cls()


__all__ = [
    "DFNet",
    "RefinementNet",
    "check_state_dict",
    "load_dfnet",
    "load_into",
    "load_refinement",
    "read_checkpoint",
    "unwrap_state_dict",
]
