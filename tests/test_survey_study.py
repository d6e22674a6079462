"""``hrbench survey create``: items, pairs, validation images, display preparation, errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from survey_helpers import make_fake_run

from bench.errors import UserError
from bench.io import read_image, read_mask
from bench.masks import centre_square_mask
from survey_app.study import broken_fill, create_study, crop_box, fit_size, load_study


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_fake_run(tmp_path_factory.mktemp("run") / "run", size=(96, 160))


def test_items_pairs_and_validation(run, tmp_path):
    spec = create_study(run, tmp_path / "s", resolution=128, progress=False)
    methods = [i for i in spec.items if i["kind"] == "method"]
    assert len(methods) == 9  # 3 methods x 3 images
    assert sum(i["kind"] == "reference" for i in spec.items) == 3
    assert sum(i["kind"] == "broken" for i in spec.items) == 3
    cmp = [p for p in spec.pairs if p["kind"] == "compare"]
    val = [p for p in spec.pairs if p["kind"] == "validation"]
    assert len(cmp) == 9 and len(val) == 3
    by_key = {i["key"]: i for i in spec.items}
    for p in cmp:  # compared items always show the same photo
        assert by_key[p["a"]]["image"] == by_key[p["b"]]["image"]
    for p in val:
        assert by_key[p["correct"]]["method"] == "ground_truth"
    for it in spec.items:
        assert (it["orig_height"], it["orig_width"]) == (96, 160)
        assert (spec.folder / "images" / it["file"]).is_file()
    assert spec.trials_per_participant == 25 and spec.validation == 2


def test_validation_broken_only_inside_the_hole(run, tmp_path):
    spec = create_study(run, tmp_path / "s", resolution=128, max_side=4096, progress=False)
    mask = read_mask(run / "data" / "128" / "alpha_mask.png")
    items = {i["key"]: i for i in spec.items}
    gt = read_image(spec.image_path(items["ground_truth/alpha"]["file"]))
    bad_key = next(k for k in items if k.startswith("broken_") and k.endswith("/alpha"))
    bad = read_image(spec.image_path(items[bad_key]["file"]))
    assert np.array_equal(gt[~mask], bad[~mask])
    assert np.abs(gt[mask].astype(int) - bad[mask]).mean() > 5


def test_broken_fills():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    mask = centre_square_mask(60, 80)
    flat = broken_fill(gt, mask, "flat")
    assert len(np.unique(flat[mask].reshape(-1, 3), axis=0)) == 1
    blur = broken_fill(gt, mask, "blur")
    assert blur[mask].std() < gt[mask].std() / 3
    with pytest.raises(ValueError):
        broken_fill(gt, mask, "nope")


def test_full_display_scales_down_never_up(run, tmp_path):
    spec = create_study(run, tmp_path / "s", resolution=128, max_side=80, progress=False)
    assert all((i["width"], i["height"]) == (80, 48) for i in spec.items)
    big = create_study(run, tmp_path / "b", resolution=128, max_side=1280, progress=False)
    assert all((i["width"], i["height"]) == (160, 96) for i in big.items)
    assert fit_size(2048, 3072, 1280) == (853, 1280)


def test_crop_display_is_one_to_one_around_the_hole(run, tmp_path):
    spec = create_study(run, tmp_path / "s", resolution=128, display="crop", crop_size=64,
                        progress=False)
    mask = read_mask(run / "data" / "128" / "alpha_mask.png")
    t, left, b, r = crop_box(mask, 64)
    rows, cols = np.nonzero(mask)
    assert t <= rows.min() and rows.max() < b and left <= cols.min() and cols.max() < r
    items = {i["key"]: i for i in spec.items}
    it = items["good/alpha"]
    assert it["crop"] == [t, left, b, r] and (it["height"], it["width"]) == (b - t, r - left)
    full = read_image(run / "outputs" / "good" / "128" / "alpha.png")
    shown = read_image(spec.image_path(it["file"]))
    assert np.array_equal(shown, full[t:b, left:r])


def test_crop_box_clips_to_the_image():
    mask = np.zeros((100, 300), bool)
    mask[40:60, 0:20] = True
    t, left, b, r = crop_box(mask, 80)
    assert (b - t, r - left) == (80, 80) and left == 0 and 0 <= t and b <= 100


def test_subset_options_and_determinism(run, tmp_path):
    a = create_study(run, tmp_path / "a", resolution=128, methods=["good", "flat"],
                     images=["beta"], validation=0, progress=False)
    assert {i["method"] for i in a.items} == {"good", "flat"}
    assert [p["kind"] for p in a.pairs] == ["compare"]
    b = create_study(run, tmp_path / "b", resolution=128, methods=["good", "flat"],
                     images=["beta"], validation=0, progress=False)
    assert a.uid == b.uid  # content-addressed: same inputs, same study


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"resolution": 512}, "no images at resolution"),
        ({"resolution": 128, "methods": ["good", "missing"]}, "method 'missing'"),
        ({"resolution": 128, "methods": ["good"]}, "at least two"),
        ({"resolution": 128, "images": ["zeta"]}, "'zeta'"),
        ({"resolution": 128, "display": "tiny"}, "--display"),
        ({"resolution": 128, "validation": 25}, "--validation"),
        ({"resolution": 128, "completion_url": "javascript:alert(1)"}, "--completion-url"),
    ],
)
def test_user_errors(run, tmp_path, kwargs, match):
    with pytest.raises(UserError, match=match):
        create_study(run, tmp_path / "s", progress=False, **kwargs)


def test_run_folder_problems(run, tmp_path):
    with pytest.raises(UserError, match="run folder not found"):
        create_study(tmp_path / "nope", tmp_path / "s", resolution=128)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "x").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        create_study(run, tmp_path / "s", resolution=128)
    # A file as --out, or a file above it, is one line, not a traceback.
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        create_study(run, tmp_path / "afile", resolution=128)
    with pytest.raises(UserError, match="is a file, not a folder"):
        create_study(run, tmp_path / "afile" / "sub", resolution=128)
    # A manifest that points outside the run folder is refused.
    bad = make_fake_run(tmp_path / "bad", images=("alpha",))
    rows = list(csv.DictReader(open(bad / "data" / "manifest.csv")))
    rows[0]["gt"] = "../../../etc/passwd"
    with open(bad / "data" / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(UserError, match="outside"):
        create_study(bad, tmp_path / "t", resolution=128)


def test_load_study_refuses_tampered_file_names(run, tmp_path):
    spec = create_study(run, tmp_path / "s", resolution=128, progress=False)
    doc = json.loads((spec.folder / "study.json").read_text())
    doc["items"][0]["file"] = "../../study.json"
    (spec.folder / "study.json").write_text(json.dumps(doc))
    with pytest.raises(UserError, match="bad file name"):
        load_study(spec.folder)
    (spec.folder / "study.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_study(spec.folder)
