"""`hrbench inpaint` never overwrites its inputs (defect 2) and names folder outputs clearly."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from conftest import smooth_photo

from bench.cli import main as cli_main
from bench.io import read_image, write_image, write_mask


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def pair(tmp_path):
    """photo.png + photo_mask.png in one folder (the layout that lost a photo in defect 2)."""
    img = smooth_photo(96, 128, seed=4)
    hole = np.zeros((96, 128), bool)
    hole[30:60, 40:80] = True
    write_image(tmp_path / "photo.png", img)
    write_mask(tmp_path / "photo_mask.png", hole)
    return tmp_path / "photo.png", tmp_path / "photo_mask.png"


@pytest.mark.parametrize("method", ["telea", "patchmatch"])
@pytest.mark.parametrize("spelling", ["dir", "dir/"])
def test_folder_output_in_the_image_folder_keeps_the_image(pair, method, spelling, capsys):
    if method == "patchmatch":
        pytest.importorskip("patchmatch", reason="pypatchmatch is not installed here")
    image, mask = pair
    before = {p: _digest(p) for p in (image, mask)}
    out_arg = str(image.parent) + ("/" if spelling == "dir/" else "")
    rc = cli_main(["inpaint", str(image), str(mask), "-o", out_arg, "--method", method])
    assert rc == 0, capsys.readouterr().err
    assert {p: _digest(p) for p in (image, mask)} == before
    written = image.parent / f"photo_{method}.png"
    result = read_image(written)
    assert result.shape == (96, 128, 3)
    # the known region is the input's; the hole was filled (not left black)
    assert np.array_equal(result[:30], read_image(image)[:30])
    assert result[30:60, 40:80].mean() > 20


@pytest.mark.parametrize("target", ["image", "mask", "image-symlink", "image-hardlink", "dotted"])
def test_output_resolving_to_an_input_is_refused(pair, target, capsys):
    image, mask = pair
    before = {p: _digest(p) for p in (image, mask)}
    out = {
        "image": image,
        "mask": mask,
        "dotted": image.parent / "." / ".." / image.parent.name / image.name,
        "image-symlink": image.parent / "link.png",
        "image-hardlink": image.parent / "hard.png",
    }[target]
    if target == "image-symlink":
        out.symlink_to(image)
    if target == "image-hardlink":
        os.link(image, out)
    # --force never allows replacing an input
    rc = cli_main(["inpaint", str(image), str(mask), "-o", str(out), "--method", "telea", "--force"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0
    assert err.startswith("hrbench: error: -o ") and "input" in err
    assert {p: _digest(p) for p in (image, mask)} == before


def test_existing_output_needs_force(pair, capsys):
    image, mask = pair
    out = image.parent / "result.png"
    out.write_bytes(b"precious")
    rc = cli_main(["inpaint", str(image), str(mask), "-o", str(out), "--method", "telea"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--force" in err and err.count("\n") == 0
    assert out.read_bytes() == b"precious"
    assert cli_main(["inpaint", str(image), str(mask), "-o", str(out), "--method", "telea", "--force"]) == 0
    assert read_image(out).shape == (96, 128, 3)


def test_default_method_runs_on_a_fresh_install(pair, tmp_path, capsys):
    image, mask = pair
    out = tmp_path / "out"
    out.mkdir()
    assert cli_main(["inpaint", str(image), str(mask), "-o", str(out)]) == 0
    assert (out / "photo_two-stage-slim.png").is_file()


def test_unknown_output_type_is_one_line(pair, capsys):
    image, mask = pair
    rc = cli_main(["inpaint", str(image), str(mask), "-o", str(image.parent / "x.gif"), "--method", "telea"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and ".gif" in err and err.count("\n") == 0


def test_output_under_a_file_is_one_line_before_any_work(pair, capsys, monkeypatch):
    """`-o notes.txt/out.png` (a file where a folder must be) was a traceback after the fill."""
    import bench.methods

    image, mask = pair
    (image.parent / "notes.txt").write_text("keep")
    monkeypatch.setattr(bench.methods, "create", lambda *a, **k: pytest.fail("method created"))
    out = image.parent / "notes.txt" / "out.png"
    rc = cli_main(["inpaint", str(image), str(mask), "-o", str(out), "--method", "telea"])
    err = capsys.readouterr().err.strip()
    notes = image.parent / "notes.txt"
    assert rc == 2 and err == f"hrbench: error: {out}: {notes} is a file, not a folder; choose another " \
        "output path"
    assert (image.parent / "notes.txt").read_text() == "keep"
