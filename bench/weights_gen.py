"""Deterministic random-weight checkpoints in the published file formats.

    python -m bench.weights_gen OUT_DIR [--seed 0]

writes ``OUT_DIR/model_places2.pth`` (a bare state_dict, like the published DFNet file) and
``OUT_DIR/refinement.pth`` (``{'state_dict': …}``, like the published RefinementNet file).
This is the project's own implementation of the algorithm documented in
``../shared/reference/conformance/make_weights.py`` (DFNet uses SEED, RefinementNet
SEED + 1), so tests can build the conformance checkpoints without ``../shared``. For each
tensor NAME of shape S (names and shapes from the project's modules, which equal the
reference TSVs):

- ``rng = numpy.random.default_rng([SEED, zlib.crc32(NAME)])``;
- int64 buffers (``num_batches_tracked``): zeros;
- NAME ends in ``.weight`` with ``len(S) >= 2``: ``rng.normal(0, sqrt(2 / prod(S[1:])), S)``;
- NAME ends in ``.weight`` (1-D) or ``.running_var``: ``rng.uniform(0.9, 1.1, S)``;
- otherwise (bias, running_mean): ``rng.normal(0, 0.01, S)``;
- drawn in float64, stored as float32.

These weights are noise: they test the plumbing (formats, loaders, numerics), not quality.
"""

from __future__ import annotations

import argparse
import math
import zlib
from pathlib import Path

import numpy as np


def random_tensor(name: str, shape: tuple[int, ...], integer: bool, seed: int) -> np.ndarray:
    """The value the algorithm assigns to one tensor (float32, or int64 zeros)."""
    if integer:
        return np.zeros(shape, dtype=np.int64)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "weight" and len(shape) >= 2:
        values = rng.normal(0.0, math.sqrt(2.0 / math.prod(shape[1:])), shape)
    elif leaf in ("weight", "running_var"):
        values = rng.uniform(0.9, 1.1, shape)
    else:
        values = rng.normal(0.0, 0.01, shape)
    return values.astype(np.float32)


def random_state_dict(model, seed: int) -> dict:
    """A state_dict for ``model`` (an nn.Module) filled by the algorithm above."""
    import torch

    return {
        name: torch.from_numpy(random_tensor(name, tuple(t.shape), not t.is_floating_point(), seed))
        for name, t in model.state_dict().items()
    }


def write_random_weights(out_dir: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write both checkpoints into ``out_dir``; returns (dfnet_path, refinement_path)."""
    import torch

    from .methods.nets import DFNet, RefinementNet
    from .methods.weights import DFNET, REFINEMENT

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        dfnet, refinement = DFNet(), RefinementNet()
    # Saved in place, not through a temporary name: torch's zip format records the file's
    # name inside the archive, and the known sha256 digests are of these exact names.
    paths = out_dir / DFNET.filename, out_dir / REFINEMENT.filename
    torch.save(random_state_dict(dfnet, seed), paths[0])
    torch.save({"state_dict": random_state_dict(refinement, seed + 1)}, paths[1])
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_random_weights(args.out_dir, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
