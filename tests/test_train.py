"""Training recipe (issue 5): irregular masks, training data, losses, slim net, CLI smoke run."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_photo
from PIL import Image

from bench.cli import main
from bench.masks import hole_fraction, irregular_mask
from bench.methods.nets.slim import SlimRefineNet, parameter_count
from bench.methods.two_stage import refine, refine_shift, shifted_stack
from bench.train.data import (
    hole_table,
    largest_squares,
    pick_patch,
    select_images,
    window_stack,
)
from bench.train.losses import LossWeights, RefinementLoss, find_vgg16_weights, hole_l1, total_variation


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors: one thread is faster than two fighting over a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- irregular masks --------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(96, 128), (256, 256)])
@pytest.mark.parametrize("coverage", [(0.1, 0.3), (0.4, 0.6), (0.2, 0.25)])
def test_irregular_mask_coverage_within_range(size, coverage):
    for seed in range(12):
        m = irregular_mask(*size, seed, coverage)
        assert m.dtype == bool and m.shape == size
        # never above the top of the range; reaches the bottom unless shapes run out
        assert coverage[0] - 1e-9 <= hole_fraction(m) <= coverage[1] + 1e-9, (seed, hole_fraction(m))


def test_irregular_mask_seeded():
    a = irregular_mask(128, 128, 7, (0.2, 0.5))
    b = irregular_mask(128, 128, 7, (0.2, 0.5))
    c = irregular_mask(128, 128, 8, (0.2, 0.5))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    rng = np.random.default_rng(7)
    first, second = irregular_mask(128, 128, rng), irregular_mask(128, 128, rng)
    assert not np.array_equal(first, second)  # a Generator is advanced in place


def test_irregular_mask_varied_coverage():
    fracs = [hole_fraction(irregular_mask(128, 128, s, (0.1, 0.6))) for s in range(30)]
    assert np.std(fracs) > 0.08  # coverage is drawn from the range, not fixed


def test_irregular_mask_rejects_bad_range():
    with pytest.raises(ValueError):
        irregular_mask(64, 64, 0, (0.5, 0.2))


# -- training data ---------------------------------------------------------------------------
def test_largest_squares_are_largest_and_inside():
    rng = np.random.default_rng(0)
    for top, left, side in largest_squares(300, 500, 3, rng):
        assert side == 300 and top == 0 and 0 <= left <= 200


def test_window_stack_equals_crop_of_full_stack():
    rng = np.random.default_rng(1)
    n, patch, shift = 256, 64, refine_shift(256)
    matched = rng.integers(0, 256, (n, n, 3), dtype=np.uint8)
    hole = rng.random((n, n)) < 0.3
    full = shifted_stack(
        torch.from_numpy(matched).permute(2, 0, 1)[None].float().div(255),
        torch.from_numpy(hole.astype(np.float32))[None, None],
        shift,
    )[0]
    for top, left in [(0, 0), (192, 192), (100, 3), (20, 150)]:
        win = window_stack(matched, hole, top, left, patch, shift)
        assert torch.equal(win, full[:, top : top + patch, left : left + patch])


def test_pick_patch_hole_fraction_in_range():
    rng = np.random.default_rng(2)
    hole = irregular_mask(256, 256, 3, (0.3, 0.5))
    table = hole_table(hole)
    for _ in range(20):
        pos = pick_patch(table, 64, (0.1, 0.9), rng)
        assert pos is not None
        top, left = pos
        assert 0.1 <= hole[top : top + 64, left : left + 64].mean() <= 0.9
    assert pick_patch(hole_table(np.zeros((128, 128), bool)), 64, (0.1, 0.9), rng) is None


def test_select_images_excludes_by_name_and_content(tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"p{i}.png"
        Image.fromarray(smooth_photo(40, 40, seed=i)).save(p)
        paths.append(p)
    copy = tmp_path / "renamed.png"
    copy.write_bytes(paths[2].read_bytes())
    from bench.io import sha256_file

    kept, excluded = select_images([*paths, copy], {"p0.png"}, {sha256_file(paths[2])})
    assert [p.name for p in kept] == ["p1.png"]
    assert sorted(p.name for p in excluded) == ["p0.png", "p2.png", "renamed.png"]


# -- losses ---------------------------------------------------------------------------------------
def test_losses_zero_for_perfect_output_and_hole_only():
    gt = torch.rand(2, 3, 32, 32)
    hole = torch.zeros(2, 1, 32, 32)
    hole[..., 8:16, 8:16] = 1
    assert hole_l1(gt, gt, hole) == 0
    wrong_outside = gt.clone()
    wrong_outside[..., :4, :4] += 0.5  # outside the hole (and its dilation): no hole loss, no TV
    assert hole_l1(wrong_outside, gt, hole) == 0
    assert total_variation(torch.full((1, 3, 32, 32), 0.3), hole[:1]) == 0
    loss = RefinementLoss(LossWeights(), vgg=None)
    total, terms = loss(gt + 0.1 * hole, gt, hole)
    assert not loss.uses_vgg and "perceptual" not in terms
    assert total.item() == pytest.approx(6 * terms["hole_l1"] + 0.1 * terms["tv"], rel=1e-6)


def test_vgg_weights_absent_is_none_and_explicit_missing_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert find_vgg16_weights(None) is None
    with pytest.raises(FileNotFoundError):
        find_vgg16_weights(tmp_path / "nope.pth")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    f = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    f.write_bytes(b"x")
    assert find_vgg16_weights(None) == f


# -- the slim net ---------------------------------------------------------------------------------
def _random_input(n: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    matched = rng.integers(0, 256, (n, n, 3), dtype=np.uint8)
    hole = np.zeros((n, n), bool)
    hole[n // 4 : n // 2, n // 3 : 3 * n // 4] = True
    return matched, hole


def test_slim_zero_init_step0_equals_coarse_base():
    net = SlimRefineNet()
    matched, hole = _random_input(256)
    # float output, training mode: exactly the matched image
    m = torch.from_numpy(matched).permute(2, 0, 1)[None].float().div(255)
    h = torch.from_numpy(hole.astype(np.float32))[None, None]
    stack = shifted_stack(m, h, refine_shift(256))
    assert torch.equal(net.forward_stack(stack), m)
    assert torch.equal(net(stack[:, 1:], stack[:, :1]), m)
    # through the real pipeline (eval mode, ×255 and truncation): the coarse base, bit for bit
    net.eval()
    assert np.array_equal(refine(net, matched, hole), matched)
    assert np.array_equal(refine(net, matched, hole, no_shift=True), matched)


def test_slim_eval_offset_rounds_instead_of_truncating():
    net = SlimRefineNet().eval()
    torch.nn.init.constant_(net.last.bias, -0.2 / 255)  # a slightly negative correction
    matched, hole = _random_input(256, seed=3)
    matched = np.clip(matched, 1, 254)
    out = refine(net, matched, hole)
    assert np.array_equal(out, matched)  # rounds back to the same level, not one darker
    torch.nn.init.constant_(net.last.bias, -0.7 / 255)
    out = refine(net, matched, hole)
    assert np.array_equal(out[hole], matched[hole] - 1)
    assert np.array_equal(out[~hole], matched[~hole])  # known region untouched


def test_slim_is_small_and_learns_a_correction():
    assert parameter_count(SlimRefineNet()) * 4 < 15e6
    torch.manual_seed(0)
    net = SlimRefineNet(widths=(8, 8, 16, 16, 16), head=8)
    stack = torch.rand(2, 20, 32, 32)
    stack[:, :1] = (stack[:, :1] > 0.5).float()
    gt = stack[:, 1:4] + 0.1 * stack[:, :1]  # target: brighter inside the hole
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    first = None
    for _ in range(30):
        loss = hole_l1(net.forward_stack(stack), gt, stack[:, :1])
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first
    with pytest.raises(ValueError):
        net.forward_stack(torch.rand(1, 20, 48, 48))


# -- slim method registration ---------------------------------------------------------------
def test_load_slim_round_trip_and_errors(tmp_path):
    from bench.errors import UserError
    from bench.methods.slim_model import load_slim
    from bench.train.refine import save_model

    net = SlimRefineNet(widths=(8, 8, 8, 8, 8), head=4)
    torch.nn.init.constant_(net.last.bias, 0.01)
    path = tmp_path / "m.pth"
    save_model(net, path, {"coarse": "telea", "step": 3})
    loaded, meta = load_slim(path)
    assert meta["step"] == 3 and not loaded.training
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    with pytest.raises(UserError, match="not found"):
        load_slim(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"weights": {}}, bad)
    with pytest.raises(UserError, match="not a slim"):
        load_slim(bad)


def test_slim_methods_registered():
    from bench.methods.base import available_names, default_methods

    names = available_names()
    assert "two-stage-slim" in names and "two-stage-slim/no-shift" in names
    assert "two-stage-slim" in default_methods()


def test_slim_method_runs_with_given_weights(tmp_path, monkeypatch):
    from bench.methods import slim_model
    from bench.methods.base import MethodContext, create, unavailable_reason
    from bench.train.refine import save_model

    path = tmp_path / "slim.pth"
    save_model(SlimRefineNet(), path, {"coarse": "telea", "step": 0})
    monkeypatch.setattr(slim_model._SlimTwoStage, "weights_path", path)
    img = smooth_photo(200, 180, seed=4)
    hole = np.zeros((200, 180), bool)
    hole[60:120, 50:110] = True
    method = create("two-stage-slim", MethodContext())
    out = method(img, hole)
    base = create("telea")  # zero-init net = the coarse base: telea at 512, upscaled
    from bench.methods.two_stage import upscaled_coarse

    padded = np.zeros((256, 256, 3), np.uint8)
    padded[:200, :180] = np.where(hole[..., None], 0, img)
    phole = np.zeros((256, 256), bool)
    phole[:200, :180] = hole
    expect = upscaled_coarse(base, padded, phole)[:200, :180]
    assert np.array_equal(out[hole], expect[hole])
    assert np.array_equal(out[~hole], img[~hole])
    assert method.metadata()["shifted_copies"] is True
    monkeypatch.setattr(slim_model._SlimTwoStage, "weights_path", tmp_path / "absent.pth")
    assert "missing" in unavailable_reason("two-stage-slim", MethodContext())


def test_shipped_weights_small_if_present():
    from bench.methods.slim_model import SHIPPED_WEIGHTS, load_slim

    if not SHIPPED_WEIGHTS.is_file():
        pytest.skip("no shipped slim weights in this checkout")
    assert SHIPPED_WEIGHTS.stat().st_size <= 15 * 1024 * 1024
    net, meta = load_slim(SHIPPED_WEIGHTS)
    assert meta.get("coarse") and meta.get("step", 0) > 0


# -- the command, end to end -------------------------------------------------------------------
def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _tiny_run_args(tmp_path: Path) -> list[str]:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(smooth_photo(150, 170, seed=10 + i)).save(photos / f"ph{i}.png")
    return ["train", "refine", "--images", str(photos), "--out", str(tmp_path / "run"), "--sizes", "128",
            "--patch", "64", "--val-sizes", "128", "--val-count", "1", "--val-every", "2",
            "--batch", "2", "--widths", "8,8,8,8,8", "--head", "4", "--no-progress", "--threads", "1"]


def test_train_refine_smoke(tmp_path, caplog):
    args = _tiny_run_args(tmp_path)
    out = tmp_path / "run"
    assert main([*args, "--steps", "3"]) == 0
    for name in ("config.json", "losses.csv", "validation.csv", "loss.png", "best_model.pth",
                 "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (out / name).is_file(), name
    val = _read_csv(out / "validation.csv")
    step0 = [r for r in val if r["step"] == "0" and r["image"] != "mean"]
    assert step0 and all(r["model_l1"] == r["base_l1"] for r in step0)  # zero-init: the base
    assert {r["step"] for r in val} == {"0", "2", "3"}
    losses = _read_csv(out / "losses.csv")
    assert losses[-1]["step"] == "3" and float(losses[-1]["hole_l1"]) > 0
    assert "VGG16 weights not found" in caplog.text
    import json

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] == 0 and cfg["val_images"] == ["ph2.png"] and "ph2.png" not in cfg["train_images"]


@pytest.mark.slow
def test_train_refine_resume(tmp_path):
    args = _tiny_run_args(tmp_path)
    out = tmp_path / "run"
    assert main([*args, "--steps", "2"]) == 0
    # an existing run is not overwritten without --resume
    assert main([*args, "--steps", "4"]) == 2
    assert main([*args, "--steps", "4", "--resume", "--lr", "1e-5"]) == 0
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert state["step"] == 4 and state["optimizer"]["param_groups"][0]["lr"] == 1e-5
    assert _read_csv(out / "losses.csv")[-1]["step"] == "4"
    # a setting that defines the model cannot change on resume
    assert main([*args, "--steps", "6", "--resume", "--seed", "1"]) == 2


def test_slim_evaluation_table(tmp_path):
    from bench.train.evaluate import main as eval_main
    from bench.train.refine import save_model

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(smooth_photo(260, 300, seed=20 + i)).save(photos / f"e{i}.png")
    wdir = tmp_path / "w"
    wdir.mkdir()
    save_model(SlimRefineNet(widths=(8, 8, 8, 8, 8), head=4), wdir / "slim_refine.pth",
               {"coarse": "telea", "step": 0})
    out = tmp_path / "res" / "eval.md"
    assert eval_main(["--images", str(photos), "--sizes", "256", "--weights-dir", str(wdir),
                      "--out", str(out), "--no-progress"]) == 0
    text = out.read_text()
    rows = _read_csv(out.with_suffix(".csv"))
    assert {r["method"] for r in rows} == {"two-stage-slim", "telea@512", "telea", "two-stage-slim/no-shift"}
    by = {(r["method"], r["image"]): float(r["l1"]) for r in rows}
    # an untrained (zero-init) net is exactly its base at 512, so it cannot be "ahead"
    assert by[("two-stage-slim", "e0")] == by[("telea@512", "e0")]
    assert "at every size: **no**" in text and "| 256 | two-stage-slim | 2 |" in text
    assert eval_main(["--images", str(tmp_path / "none"), "--out", str(out)]) == 2
