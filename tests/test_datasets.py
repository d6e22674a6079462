import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.datasets import PrepareSpec, prepare, sample_dir
from bench.errors import UserError
from bench.io import read_image, read_mask, sha256_file


def test_prepare_writes_squares_masks_manifest_and_skips_small(photo_dir, tmp_path):
    out = tmp_path / "data"
    rep = prepare(photo_dir, out, PrepareSpec(resolutions=(32, 64)), progress=False)
    m = rep.manifest
    assert set(m.columns) >= {"image", "resolution", "gt", "mask", "gt_sha256", "mask_sha256"}
    # img2 is 50x60: fine for 32, skipped (never upsampled) for 64
    assert sorted(m[m.resolution == 64].image) == ["img0", "img1"]
    assert sorted(m[m.resolution == 32].image) == ["img0", "img1", "img2"]
    assert rep.skipped == [
        {"image": "img2", "resolution": 64, "reason": "shorter side 50 px < 64 px (never upsampled)"}
    ]
    for row in m.itertuples():
        gt = read_image(out / row.gt)
        mask = read_mask(out / row.mask)
        assert gt.shape == (row.resolution, row.resolution, 3)
        assert mask.sum() == round(row.resolution / 3) ** 2
        assert sha256_file(out / row.gt) == row.gt_sha256
    assert pd.read_csv(out / "manifest.csv").shape == m.shape


def test_prepare_nearest_is_centre_crop_then_centre_aligned_sampling(photo_dir, tmp_path):
    rep = prepare(photo_dir, tmp_path / "d", PrepareSpec(resolutions=(40,)), progress=False)
    src = np.asarray(Image.open(photo_dir / "img0.png"))  # 80x96 -> centre square 80x80 at column 8
    gt = read_image(tmp_path / "d" / rep.manifest.iloc[0]["gt"])
    # halving picks the second pixel of every 2-block (centre-aligned convention)
    assert np.array_equal(gt, src[1::2, 8 + 1 : 8 + 80 : 2])


def test_prepare_reuses_unchanged_and_redoes_changed(photo_dir, tmp_path):
    out = tmp_path / "d"
    prepare(photo_dir, out, PrepareSpec(resolutions=(32,)), progress=False)
    t0 = (out / "32" / "img0.png").stat().st_mtime_ns
    prepare(photo_dir, out, PrepareSpec(resolutions=(32,)), progress=False)
    assert (out / "32" / "img0.png").stat().st_mtime_ns == t0
    prepare(photo_dir, out, PrepareSpec(resolutions=(32,), resize="area"), progress=False)
    assert (out / "32" / "img0.png").stat().st_mtime_ns != t0


def test_prepare_with_mask_folder(photo_dir, tmp_path):
    masks = tmp_path / "masks"
    (masks / "32").mkdir(parents=True)
    for stem in ("img0", "img1", "img2"):
        m = np.zeros((32, 32), np.uint8)
        m[4:10, 20:30] = 255
        Image.fromarray(m).save(masks / "32" / f"{stem}.png")
    rep = prepare(photo_dir, tmp_path / "d", PrepareSpec(resolutions=(32,), mask=str(masks)), progress=False)
    mk = read_mask(tmp_path / "d" / rep.manifest.iloc[0]["mask"])
    assert mk.sum() == 60 and mk[4:10, 20:30].all()


def test_prepare_errors(photo_dir, tmp_path):
    with pytest.raises(UserError, match="folder not found"):
        prepare(tmp_path / "nope", tmp_path / "d", progress=False)
    with pytest.raises(UserError, match="no image is large enough"):
        prepare(photo_dir, tmp_path / "d", PrepareSpec(resolutions=(4096,)), progress=False)
    with pytest.raises(UserError, match="--resize"):
        prepare(photo_dir, tmp_path / "d", PrepareSpec(resize="bicubic"), progress=False)
    with pytest.raises(UserError, match="no mask for image"):
        (tmp_path / "m").mkdir()
        prepare(
            photo_dir,
            tmp_path / "d",
            PrepareSpec(resolutions=(32,), mask=str(tmp_path / "m")),
            progress=False,
        )


def test_embedded_sample_set_is_complete_and_licensed():
    d = sample_dir()
    photos = sorted(d.glob("*.jpg"))
    assert 6 <= len(photos) <= 8
    assert sum(p.stat().st_size for p in photos) <= 15 * 2**20
    lic = (d / "LICENSES.md").read_text()
    for p in photos:
        assert p.name in lic and sha256_file(p) in lic
        with Image.open(p) as im:
            assert min(im.size) >= 2048
