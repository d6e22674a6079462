"""Files a run writes: modes follow the umask (defect 6), `plot` validates first (defect 5),
and every run-folder path the README promises is there."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.io import save_figure, write_image, write_json, write_text

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def umask():
    """Set a umask for the test, restore the old one after."""
    old = os.umask(0o022)
    try:
        yield lambda m: os.umask(m)
    finally:
        os.umask(old)


def _modes(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode)
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One small telea + ns run (3 photos, 32 and 64 px; img2 only at 32) written under umask 027."""
    from conftest import smooth_photo
    from PIL import Image

    base = tmp_path_factory.mktemp("files")
    photos = base / "photos"
    photos.mkdir()
    for i, (h, w) in enumerate([(80, 96), (96, 80), (50, 60)]):  # img2: too small for 64
        Image.fromarray(smooth_photo(h, w, seed=i)).save(photos / f"img{i}.png")
    old = os.umask(0o027)
    try:
        rc = main(["run", "--images", str(photos), "--out", str(base / "run"), "--methods", "telea", "ns",
                   "--resolutions", "32,64", "--no-lpips", "-q", "--jobs", "1"])
    finally:
        os.umask(old)
    assert rc == 0
    return base / "run"


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_io_writers_follow_the_umask(tmp_path, umask, mask, expected):
    import matplotlib.pyplot as plt

    umask(mask)
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    write_text(tmp_path / "b.csv", "x\n1\n")
    write_json(tmp_path / "c.json", {"x": 1})
    save_figure(plt.figure(), tmp_path / "d")
    modes = _modes(tmp_path)
    assert set(modes) == {"a.png", "b.csv", "c.json", "d.png", "d.pdf"}  # no temporary left over
    assert set(modes.values()) == {expected}, modes


def test_run_files_follow_the_umask(run_dir):
    modes = _modes(run_dir)
    for name in ("metrics.csv", "items.csv", "run.json", "table.md"):
        assert modes.get(name) == 0o640, (name, modes.get(name))
    pngs = [k for k in modes if k.endswith(".png")]
    assert len(pngs) >= 10  # ground truths, masks, outputs
    assert {modes[k] for k in modes} == {0o640}, {k: oct(v) for k, v in modes.items() if v != 0o640}


def test_table_and_study_files_follow_the_umask(run_dir, tmp_path, umask):
    umask(0o022)
    assert main(["table", str(run_dir), "--format", "latex", "-o", str(tmp_path / "t.tex")]) == 0
    assert main(["survey", "create", "--run", str(run_dir), "--resolution", "64",
                 "--out", str(tmp_path / "study"), "--trials-per-participant", "3",
                 "--validation", "1"]) == 0
    assert stat.S_IMODE((tmp_path / "t.tex").stat().st_mode) == 0o644
    # the caption is built from this run's run.json: the protocol it actually used
    caption = (tmp_path / "t.tex").read_text().split(r"\caption{")[1]
    assert "nearest-neighbour resampling" in caption and "hole of side N/3" in caption
    study = _modes(tmp_path / "study")
    assert study.get("study.json") == 0o644
    assert {v for k, v in study.items() if not k.startswith("instance")} == {0o644}


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--resolution", "777"], "--resolution 777: the run has no outputs at that size; it has 32, 64"),
        (["--image", "nope"], "--image nope: the run has no outputs for it; images: img0, img1, img2"),
        (["--image", "img2", "--resolution", "64"], "--image img2: the run has no outputs for it at 64 px; "
         "images: img0, img1"),
        (["--image", "img2"], "qualitative_32"),
    ],
)
def test_plot_validates_before_writing(run_dir, tmp_path, capsys, extra, needle):
    out = tmp_path / "figs"
    rc = main(["plot", str(run_dir), "--out", str(out), *extra])
    err = capsys.readouterr().err.strip()
    if needle.startswith("qualitative"):
        assert rc == 0 and (out / f"{needle}.png").is_file() and (out / f"{needle}.pdf").is_file()
        return
    assert rc == 2 and err == f"hrbench: error: {needle}"
    assert not out.exists()  # nothing written before the mistake was found


@pytest.mark.parametrize("name", ["metrics.csv", "run.json"])
def test_table_output_never_replaces_the_run_it_reads(run_dir, capsys, name):
    before = (run_dir / name).read_bytes()
    rc = main(["table", str(run_dir), "-o", str(run_dir / "." / name)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("hrbench: error: -o ") and "input" in err
    assert (run_dir / name).read_bytes() == before


def test_readme_run_folder_paths_exist(run_dir):
    """Every file or folder the README's "Run folder" paragraph names is in a fresh run."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    para = readme[readme.index("**Run folder.**"):]
    para = para[: para.index("\n\n")]
    promised = {p for p in re.findall(r"`([\w.]+/?)`", para) if "." in p or p.endswith("/")}
    # logs/ holds tracebacks of failed items only (the paragraph says so)
    promised.discard("logs/")
    assert {"run.json", "metrics.csv", "items.csv", "table.md", "outputs/"} <= promised
    missing = sorted(p for p in promised if not (run_dir / p).exists())
    assert not missing, f"README promises {missing} in a run folder, `hrbench run` did not write them"


def test_names_with_dollar_signs_are_drawn_as_written(tmp_path):
    """A photo named like mathtext (two '$') used to end the run in a matplotlib traceback
    after every item was done; figures now draw user-given names literally."""
    from conftest import smooth_photo
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(smooth_photo(64, 64, seed=3)).save(photos / "a$\\frac{$b.png")
    out = tmp_path / "run"
    rc = main(["run", "--images", str(photos), "--out", str(out), "--methods", "telea",
               "--resolutions", "32", "--metrics", "l1", "psnr", "ssim", "-q", "--jobs", "1"])
    assert rc == 0
    names = {p.name for p in (out / "plots").iterdir()}
    assert {"metrics_vs_resolution.png", "runtime_vs_resolution.png", "qualitative_32.png"} <= names
