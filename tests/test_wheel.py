"""Installed, not only cloned (defect 4): a built wheel carries the sample set and runs.

Builds the wheel from a copy of the source tree (so the shared checkout gets no build/ or
egg-info), installs it into a fresh virtual environment outside the source tree and runs
`hrbench run` there from a temporary folder, so nothing can come from the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
# Not needed to build the wheel, and large or machine-local.
_SKIP = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".venv*",
                               "results", "tests", "test-artifacts", ".*_cache", "instance",
                               "runs", "studies")


def _sh(*cmd, cwd: Path, timeout: int = 900) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    tail = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{cmd}: exit {proc.returncode}\n{tail}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools in this environment")
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    shutil.copytree(REPO, src, ignore=_SKIP)
    _sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "-q", "-w", base / "dist", ".", cwd=src)
    (whl,) = (base / "dist").glob("hrbench-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    # no importable top-level `datasets` (would shadow the popular library), no benchmarks/
    assert not top & {"datasets", "benchmarks", "tests"}, top
    photos = {Path(n).name for n in names if n.startswith("bench/sample_data/")}
    expected = {p.name for p in (REPO / "datasets" / "sample").iterdir()}
    assert photos == expected and "LICENSES.md" in photos


@pytest.mark.slow
def test_installed_wheel_runs_the_sample_benchmark(wheel, tmp_path):
    venv = tmp_path / "venv"
    # --system-site-packages: torch and friends come from this environment; hrbench itself
    # must come from the wheel (checked below).
    _sh(sys.executable, "-m", "venv", "--system-site-packages", venv, cwd=tmp_path)
    py = venv / "bin" / "python"
    _sh(py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel, cwd=tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    where = _sh(py, "-c", "import bench, bench.datasets as d; print(bench.__file__); print(d.sample_dir())",
                cwd=work).split()
    assert all(Path(p).is_relative_to(venv) for p in where), where

    out = _sh(venv / "bin" / "hrbench", "run", "--methods", "telea", "--resolutions", "1024",
              "--out", "run", "-q", cwd=work)
    assert "| telea |" in out and "n = 6 images" in out
    run = work / "run"
    table = (run / "table.md").read_text()
    assert table.splitlines()[0] == "| Method | 1024 L1 ↓ | 1024 PSNR ↑ | 1024 SSIM ↑ |"
    # the same numbers as the committed reference run (same photos, same protocol)
    ref = pd.read_csv(REPO / "results" / "reference" / "metrics.csv")
    got = pd.read_csv(run / "metrics.csv")
    assert {"l1", "psnr", "ssim"} <= set(got.metric)
    ref = ref[(ref.method == "telea") & (ref.resolution == 1024) & ref.metric.isin(set(got.metric))]
    both = ref.merge(got, on=["image", "metric"], suffixes=("_ref", ""))
    assert len(both) == len(ref) >= 6 * 3
    assert (both["value"] - both["value_ref"]).abs().max() < 1e-4
