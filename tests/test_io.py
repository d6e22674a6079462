"""Bad input: every case ends in one clear UserError naming the file, never a traceback."""

import numpy as np
import pytest
from PIL import Image

from bench.errors import UserError
from bench.io import list_images, read_image, read_mask, write_image


def _save(path, arr, mode=None):
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


def test_rgb_roundtrip_and_grey_converted(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    write_image(tmp_path / "a.png", rgb)
    assert np.array_equal(read_image(tmp_path / "a.png"), rgb)
    grey = rgb[..., 0]
    out = read_image(_save(tmp_path / "g.png", grey))
    assert out.shape == (20, 30, 3) and np.array_equal(out[..., 2], grey)


def test_rgba_opaque_accepted_transparent_refused(tmp_path):
    rgba = np.full((8, 8, 4), 200, np.uint8)
    rgba[..., 3] = 255
    assert read_image(_save(tmp_path / "o.png", rgba)).shape == (8, 8, 3)
    rgba[0, 0, 3] = 10
    with pytest.raises(UserError, match=r"t\.png: image has transparent pixels"):
        read_image(_save(tmp_path / "t.png", rgba))


def test_16bit_refused(tmp_path):
    arr = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    p = tmp_path / "deep.png"
    Image.fromarray(arr).save(p)
    with pytest.raises(UserError, match="deep.png: .*more than 8 bits"):
        read_image(p)


def test_corrupt_missing_and_folder(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(UserError, match="bad.png: cannot read image"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(UserError, match="missing.png: file not found"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(UserError, match="is a folder"):
        read_image(tmp_path)
    with pytest.raises(UserError, match="no images"):
        list_images(_empty(tmp_path))


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_mask_threshold_rule_and_validation(tmp_path):
    m = np.zeros((10, 10), np.uint8)
    m[2:5, 2:5] = 127  # below the threshold: known
    m[5:8, 5:8] = 128  # at the threshold: hole
    mask = read_mask(_save(tmp_path / "m.png", m))
    assert mask.sum() == 9 and mask[5:8, 5:8].all()
    with pytest.raises(UserError, match="m.png: mask is 10x10 but the image is 12x10"):
        read_mask(tmp_path / "m.png", (10, 12))
    with pytest.raises(UserError, match="e.png: mask has no hole"):
        read_mask(_save(tmp_path / "e.png", np.zeros((4, 4), np.uint8)))
    with pytest.raises(UserError, match="f.png: mask covers the whole image"):
        read_mask(_save(tmp_path / "f.png", np.full((4, 4), 255, np.uint8)))
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[1, 1, 0] = 255
    assert read_mask(_save(tmp_path / "rgb.png", rgb)).sum() == 1  # first channel is used


def test_write_is_atomic(tmp_path, monkeypatch):
    p = tmp_path / "x.png"
    write_image(p, np.zeros((4, 4, 3), np.uint8))
    before = p.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(RuntimeError):
        write_image(p, np.ones((4, 4, 3), np.uint8))
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["x.png"]  # no temp file left behind


def test_display_path_hides_machine_prefixes(tmp_path, monkeypatch):
    from pathlib import Path

    from bench.io import display_path

    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert display_path(tmp_path / "work" / "a" / "b.pth") == "a/b.pth"
    assert display_path(tmp_path / "work") == "."
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert display_path(Path.home() / ".cache" / "x") == "~/.cache/x"
    assert display_path("/") == "/"


def test_writing_where_a_file_or_folder_is_in_the_way_is_one_line(tmp_path):
    """`table -o FOLDER`, `plot --out FILE` were tracebacks from the atomic rename or mkdir."""
    from bench.io import write_text

    (tmp_path / "f").write_text("keep")
    with pytest.raises(UserError, match="is a folder; give a file name"):
        write_text(tmp_path, "x")
    with pytest.raises(UserError, match=r"f is a file, not a folder"):
        write_text(tmp_path / "f" / "sub" / "t.md", "x")
    assert (tmp_path / "f").read_text() == "keep" and [p.name for p in tmp_path.iterdir()] == ["f"]
