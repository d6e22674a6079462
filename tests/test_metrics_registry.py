"""The metric registry: every metric declared once, declarations true to the computed values,
and the metric selection (default set, user selection, left-out reasons)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import smooth_photo

from bench import metrics
from bench.errors import UserError
from bench.masks import centre_square_mask
from bench.metrics import registry

# cvvdp on tiny images, on one torch thread (conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pair(n: int = 96, seed: int = 0):
    gt = smooth_photo(n, n, seed)
    mask = centre_square_mask(n, n)
    out = gt.copy()
    out[mask] = 128  # a flat grey fill: clearly worse than the ground truth
    return out, gt, mask


def test_every_spec_is_complete_and_json_serialisable():
    for name, s in metrics.METRICS.items():
        assert s.name == name and s.label and s.region in ("full", "hole", "selectable")
        assert s.range[0] < s.range[1] and isinstance(s.digits, int) and s.digits >= 0
        json.dumps(s.conventions)
        assert registry.label(name, arrow=True) == f"{s.label} {'↑' if s.higher_is_better else '↓'}"
    assert set(metrics.CORE_METRICS) <= set(metrics.METRICS)
    assert set(metrics.DEFAULT_METRICS) <= set(metrics.METRICS)
    assert metrics.HIGHER_IS_BETTER == {n: s.higher_is_better for n, s in metrics.METRICS.items()}
    assert [n for n, s in metrics.METRICS.items() if s.region == "selectable"] == ["lpips", "cvvdp", "flip"]


def test_unknown_metric_is_a_user_error_naming_the_known_ones():
    with pytest.raises(UserError, match="unknown metric 'psnrr'.*l1, psnr, ssim"):
        metrics.spec("psnrr")
    with pytest.raises(UserError, match="unknown metric"):
        metrics.resolve_metrics(["l1", "psnrr"])


def test_fmt_uses_the_declared_digits():
    assert metrics.fmt("l1", 2.4861) == "2.486"
    assert metrics.fmt("hole_l1", 2.4861) == "2.49"
    assert metrics.fmt("flip", 0.123456) == "0.1235"
    assert metrics.fmt("psnr", math.inf) == "–"


@pytest.mark.parametrize("region", ["full", "hole"])
def test_declared_direction_and_range_hold_for_computed_values(region):
    """Identical images score the best end of the declared range; a flat fill scores worse,
    in the declared direction. (LPIPS needs downloaded weights: covered in test_metrics.)"""
    pytest.importorskip("pycvvdp")
    pytest.importorskip("flip_evaluator")
    out, gt, mask = _pair()
    names = [n for n in metrics.METRICS if n != "lpips"]
    same = metrics.compute_metrics(gt.copy(), gt, mask, names, region=region)
    worse = metrics.compute_metrics(out, gt, mask, names, region=region)
    for name in names:
        s = metrics.spec(name)
        best = s.range[1] if s.higher_is_better else s.range[0]
        assert same[name] == pytest.approx(best), name
        assert s.orient(worse[name]) < s.orient(same[name]), name
        assert s.range[0] <= worse[name] <= s.range[1], name


def test_default_selection_leaves_out_what_cannot_run_with_the_reason(monkeypatch):
    monkeypatch.setattr(
        metrics.compute, "lpips_available", lambda net="alex": "LPIPS unavailable: no weights"
    )
    names, left_out = metrics.resolve_metrics(None)
    assert "lpips" not in names and left_out == {"lpips": "LPIPS unavailable: no weights"}
    assert names[:5] == metrics.CORE_METRICS
    names, left_out = metrics.resolve_metrics([], lpips=False)
    assert left_out["lpips"] == "LPIPS disabled by configuration"
    with pytest.raises(UserError, match="--metrics lpips: LPIPS unavailable: no weights"):
        metrics.resolve_metrics(["l1", "lpips"])
    # A selection is kept as given (order, no duplicates).
    assert metrics.resolve_metrics(["ssim", "l1", "ssim"]) == (("ssim", "l1"), {})


def test_missing_package_is_named(monkeypatch):
    real = metrics.compute.importlib.util.find_spec
    monkeypatch.setattr(
        metrics.compute.importlib.util,
        "find_spec",
        lambda name: None if name == "flip_evaluator" else real(name),
    )
    reason = metrics.unavailable_reason("flip")
    assert reason == (
        "FLIP unavailable: the flip-evaluator package is not installed; pip install flip-evaluator"
    )
    with pytest.raises(UserError, match="--metrics flip: FLIP unavailable"):
        metrics.resolve_metrics(["flip"])
    monkeypatch.setattr(metrics.compute.importlib.util, "find_spec", lambda name: None)
    names, left_out = metrics.resolve_metrics(None, lpips=False)
    assert names == metrics.CORE_METRICS
    assert left_out["cvvdp"] == "CVVDP unavailable: the cvvdp package is not installed; pip install cvvdp"


# -- the hole region ----------------------------------------------------------------------------
def test_hole_crop_of_the_protocol_hole_is_the_centred_half():
    for n in (1024, 2048):
        rows, cols = metrics.hole_crop(centre_square_mask(n, n))
        side = rows.stop - rows.start
        assert side == cols.stop - cols.start
        # hole round(N/3) + 2 * ceil(hole / 4): N/2 within a few pixels, centred.
        assert abs(side - n // 2) <= 4 and abs((rows.start + rows.stop) / 2 - n / 2) <= 1


def test_hole_crop_is_clipped_and_keeps_a_minimum_margin():
    mask = np.zeros((100, 120), bool)
    mask[2:6, 110:118] = True  # tiny hole near the top-right corner
    rows, cols = metrics.hole_crop(mask)
    assert (rows.start, rows.stop) == (0, 6 + metrics.compute.HOLE_MIN_MARGIN)
    assert (cols.start, cols.stop) == (110 - metrics.compute.HOLE_MIN_MARGIN, 120)


def test_region_changes_only_the_selectable_metrics():
    pytest.importorskip("pycvvdp")
    out, gt, mask = _pair(160)
    names = ("l1", "psnr", "ssim", "hole_l1", "cvvdp", "flip")
    full = metrics.compute_metrics(out, gt, mask, names, region="full")
    hole = metrics.compute_metrics(out, gt, mask, names, region="hole")
    for name in ("l1", "psnr", "ssim", "hole_l1"):
        assert full[name] == hole[name]
    # The untouched border dilutes the full-image scores: the crop judges the fill harder.
    assert hole["cvvdp"] < full["cvvdp"] and hole["flip"] > full["flip"]
    with pytest.raises(UserError, match="--metric-region 'middle'"):
        metrics.compute_metrics(out, gt, mask, names, region="middle")


def test_conventions_record_region_display_and_versions():
    pytest.importorskip("pycvvdp")
    from importlib.metadata import version

    conv = metrics.metric_conventions(["l1", "cvvdp", "flip"], "hole", "standard_4k", None)
    json.dumps(conv)
    assert conv["region"]["value"] == "hole" and conv["region"]["applies_to"] == ["cvvdp", "flip"]
    assert "0.25" in conv["region"]["hole"]
    assert conv["cvvdp"]["version"] == version("cvvdp")
    assert conv["flip"]["version"] == version("flip-evaluator")
    assert conv["cvvdp"]["display"]["name"] == "standard_4k" == conv["flip"]["display"]["name"]
    assert "region" not in metrics.metric_conventions(["l1", "ssim"], "hole")
    # Different settings, different conventions (so fingerprints differ).
    assert conv != metrics.metric_conventions(["l1", "cvvdp", "flip"], "full", "standard_4k", None)
    assert conv != metrics.metric_conventions(["l1", "cvvdp", "flip"], "hole", "standard_fhd", None)
