"""Shared fixtures: the ../shared folder (skipped when absent) and small synthetic photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

# The throwaway PostgreSQL server (pg_server, pg_url) and the SQLite/PostgreSQL
# parametrisation of survey databases (db_url, module_db_url); a module beside this file.
from pg_server import db_url, module_db_url, pg_server, pg_url  # noqa: F401
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="module")
def one_torch_thread():
    """cvvdp on tiny images: torch's thread team only adds start-up cost (and on a loaded
    machine, spinning), as in a benchmark worker, which gets one thread per core."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The project's shared folder (corpus, reference); CI has it, a user's machine may not."""
    if not (SHARED / "corpus" / "images").is_dir():
        pytest.skip(f"shared corpus not found beside the checkout ({SHARED}); test needs it")
    return SHARED


def smooth_photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like uint8 RGB image (gradients + low-frequency waves + mild noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for _ in range(3):
        fx, fy, ph = rng.uniform(1, 4, 2).tolist() + [rng.uniform(0, 6.28)]
        v = (
            120
            + 60 * np.sin(2 * np.pi * fx * x / w + ph) * np.cos(2 * np.pi * fy * y / h)
            + 40 * (x / w - y / h)
        )
        chans.append(v)
    img = np.stack(chans, -1) + rng.normal(0, 2, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    """Three small photos: 96x80, 80x96 (portrait) and 50x60 (too small for 64)."""
    d = tmp_path / "photos"
    d.mkdir()
    for i, (h, w) in enumerate([(80, 96), (96, 80), (50, 60)]):
        Image.fromarray(smooth_photo(h, w, seed=i)).save(d / f"img{i}.png")
    return d
