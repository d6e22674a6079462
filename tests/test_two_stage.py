"""The two-stage pipeline: shifts, geometry, weights lookup, methods, CLI and conformance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
import torch
from torch import nn

from bench.cli import main as cli_main
from bench.errors import MethodUnavailable
from bench.io import read_image, read_mask, write_image, write_mask
from bench.methods import MethodContext, create, unavailable_reason, weights
from bench.methods import two_stage as ts
from bench.methods.nets import load_dfnet

DATA = Path(__file__).resolve().parent / "data" / "conformance"  # copied from ../shared
NEURAL = ("two-stage", "two-stage/no-shift", "two-stage:telea", "dfnet", "dfnet@512")


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """No weights anywhere: empty env var, a fresh per-user cache."""
    monkeypatch.delenv(weights.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> Path:
    """The conformance checkpoints (seed 0), written by the project's generator."""
    from bench.weights_gen import write_random_weights

    out = tmp_path_factory.mktemp("weights")
    write_random_weights(out, seed=0)
    return out


# -- shifted stack ----------------------------------------------------------------------------
def _scipy_stack(img: np.ndarray, hole: np.ndarray, s: int) -> np.ndarray:
    """The published construction: uint8 arrays, scipy.ndimage.shift(order=0), dstack."""
    mask = hole[..., None].astype(np.uint8) * 255
    parts = [mask, img]
    for sh in ((-s, 0, 0), (s, 0, 0), (0, s, 0), (0, -s, 0)):
        parts.append(scipy.ndimage.shift(img, sh, order=0, mode="constant", cval=1))
        parts.append(scipy.ndimage.shift(mask, sh, order=0, mode="constant", cval=255))
    return np.dstack(parts)


def _to_t(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float().div(255)


@pytest.mark.parametrize(("h", "w", "s"), [(256, 384, 50), (64, 40, 13), (32, 32, 0), (20, 30, 25)])
def test_shifted_stack_equals_published_construction(h, w, s):
    rng = np.random.default_rng(h + w + s)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    hole = rng.random((h, w)) > 0.6
    out = ts.shifted_stack(_to_t(img), _to_t(hole[..., None].astype(np.uint8) * 255), s)
    assert out.shape == (1, 20, h, w) and out.dtype == torch.float32
    assert torch.equal(out, _to_t(_scipy_stack(img, hole, s)))


def test_shifted_stack_directions_fill_and_batch():
    matched = torch.rand(2, 3, 8, 6)
    hole = (torch.rand(2, 1, 8, 6) > 0.5).float()
    out = ts.shifted_stack(matched, hole, 2)
    fill = torch.tensor(1.0) / 255
    assert torch.equal(out[:, 4:7, :6], matched[:, :, 2:])  # up: out[y] = in[y + s]
    assert torch.equal(out[:, 8:11, 2:], matched[:, :, :6])  # down
    assert torch.equal(out[:, 12:15, :, 2:], matched[..., :4])  # right: out[x] = in[x - s]
    assert torch.equal(out[:, 16:19, :, :4], matched[..., 2:])  # left
    assert (out[:, 4:7, 6:] == fill).all() and (out[:, 7, 6:] == 1).all()
    assert (out[:, 16:19, :, 4:] == fill).all() and (out[:, 19, :, 4:] == 1).all()
    plain = ts.shifted_stack(matched, hole, 2, no_shift=True)
    for k in range(4):
        assert torch.equal(plain[:, 4 + 4 * k : 7 + 4 * k], matched)
        assert torch.equal(plain[:, 7 + 4 * k : 8 + 4 * k], hole)


def test_refine_shift_and_geometry():
    assert ts.refine_shift(1024) == 200 and ts.refine_shift(768) == 150
    assert ts.refine_shift(2048) == 400
    with pytest.raises(ValueError, match="fractional"):
        ts.refine_shift(700)
    assert ts.fit_geometry(768, 1024) == (384, 512, 64, 0)
    assert ts.fit_geometry(1024, 768) == (512, 384, 0, 64)
    assert ts.fit_geometry(1024, 1024) == (512, 512, 0, 0)
    assert ts.fit_geometry(256, 768) == (170, 512, 171, 0)  # odd margin: extra pixel after
    img = np.arange(768 * 1024 * 3, dtype=np.uint32).reshape(768, 1024, 3).astype(np.uint8)
    assert ts.resize_to_fit(img).shape == (384, 512, 3)
    assert ts.resize_to_fit(img[..., :1]).shape == (384, 512, 1)


class _HalfRefiner(nn.Module):
    """Refinement stand-in with the documented interface: predicts 0.5 in the hole."""

    def forward(self, image19, mask):
        assert image19.shape[1] == 19 and mask.shape[1] == 1
        return mask * 0.5 + (1 - mask) * image19[:, :3]


def test_refine_accepts_any_module_with_the_interface():
    rng = np.random.default_rng(0)
    matched = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    hole = np.zeros((256, 256), bool)
    hole[100:150, 60:200] = True
    out = ts.refine(_HalfRefiner(), matched, hole)
    assert (out[hole] == 127).all()  # 0.5 * 255 = 127.5, truncated as published
    assert np.array_equal(out[~hole], matched[~hole])


def test_method_coarse_with_a_classical_base():
    img = np.full((512, 768, 3), 90, np.uint8)
    hole = np.zeros((512, 768), bool)
    hole[200:300, 300:500] = True
    base = create("telea")
    coarse = ts.method_coarse(base, img, hole)
    assert coarse.shape == (341, 512, 3)  # 512 * 512 // 768 rows
    small_hole = ts.resize_to_fit(hole.view(np.uint8)) > 0
    assert np.array_equal(coarse, base(ts.resize_to_fit(img), small_hole))
    up = ts.upscaled_coarse(base, img, hole)
    assert up.shape == img.shape and np.array_equal(up, ts.upscale_coarse(coarse, 512, 768))
    assert up[hole].min() > 60  # filled from the grey surroundings, not left black


# -- weights lookup ------------------------------------------------------------------------------
def test_weights_search_order(no_weights, monkeypatch):
    explicit, env, cache = (no_weights / n for n in ("explicit", "env", "cache"))
    for d in (explicit, env, cache / "hrbench" / "weights"):
        d.mkdir(parents=True)
        (d / "refinement.pth").write_bytes(b"x")
    monkeypatch.setenv(weights.ENV_VAR, str(env))
    ctx = MethodContext(weights_dir=explicit)
    assert weights.find(weights.REFINEMENT, ctx) == explicit / "refinement.pth"
    assert weights.find(weights.REFINEMENT, MethodContext()) == env / "refinement.pth"
    monkeypatch.delenv(weights.ENV_VAR)
    assert weights.find(weights.REFINEMENT, MethodContext()) == (
        cache / "hrbench" / "weights" / "refinement.pth")
    assert weights.find(weights.DFNET, ctx) is None
    rec = weights.file_record(explicit / "refinement.pth")
    assert rec["sha256"] == "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"


@pytest.mark.parametrize("name", NEURAL)
def test_missing_weights_give_one_line_reason(no_weights, name):
    ctx = MethodContext(weights_dir=no_weights / "w")
    reason = unavailable_reason(name, ctx)
    assert reason is not None and "\n" not in reason
    need = "model_places2.pth" if name != "two-stage:telea" else "refinement.pth"
    assert need in reason and str(no_weights / "w") in reason
    with pytest.raises(MethodUnavailable, match=need):
        create(name, ctx)


def test_weights_report_and_cli(no_weights, capsys):
    rep = weights.report(MethodContext())
    assert {m["method"] for m in rep["methods"]} >= {"two-stage", "dfnet", "dfnet@512"}
    assert all(m["reason"] for m in rep["methods"])
    assert cli_main(["weights"]) == 0
    out = capsys.readouterr().out
    assert "model_places2.pth" in out and "unusable: weights" in out


def test_inpaint_cli_missing_weights_is_one_line(no_weights, capsys):
    img = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[20:40, 20:40] = True
    write_image(no_weights / "i.png", img)
    write_mask(no_weights / "m.png", mask)
    rc = cli_main(["inpaint", str(no_weights / "i.png"), str(no_weights / "m.png"),
                   "-o", str(no_weights / "o.png"), "--method", "two-stage"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "model_places2.pth" in err
    assert not (no_weights / "o.png").exists()


def test_inpaint_cli_bad_checkpoint_is_one_line(no_weights, capsys):
    wdir = no_weights / "w"
    wdir.mkdir()
    torch.save({"state_dict": {"bogus": torch.zeros(1)}}, wdir / "refinement.pth")
    torch.save({"bogus": torch.zeros(1)}, wdir / "model_places2.pth")
    img = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[20:40, 20:40] = True
    write_image(no_weights / "i.png", img)
    write_mask(no_weights / "m.png", mask)
    rc = cli_main(["inpaint", str(no_weights / "i.png"), str(no_weights / "m.png"),
                   "-o", str(no_weights / "o.png"), "--weights-dir", str(wdir), "--method", "two-stage"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0
    assert "does not fit DFNet" in err and "unexpected keys: 1 (bogus)" in err


# -- with the random-weight checkpoints (slow: 33 M + 37 M parameter networks on CPU) -------
@pytest.mark.slow
@pytest.mark.parametrize("case", ["square1024", "odd700x1000"])
def test_conformance_coarse_exact(random_weights, case):
    image = read_image(DATA / case / "image.png")
    hole = read_mask(DATA / case / "mask.png")
    h, w = hole.shape
    pad = ((0, -h % 256), (0, -w % 256))
    coarse = ts.dfnet_coarse(load_dfnet(random_weights / "model_places2.pth"),
                             np.pad(image, (*pad, (0, 0))), np.pad(hole, pad))
    assert np.array_equal(coarse, read_image(DATA / case / "coarse512.png"))


@pytest.mark.slow
@pytest.mark.parametrize("case", ["square1024", "odd700x1000"])
def test_conformance_full_pipeline_through_cli(random_weights, tmp_path, case):
    out = tmp_path / "out.png"
    rc = cli_main(["inpaint", str(DATA / case / "image.png"), str(DATA / case / "mask.png"),
                   "-o", str(out), "--weights-dir", str(random_weights), "--device", "cpu",
                   "--method", "two-stage"])
    assert rc == 0
    got = read_image(out).astype(np.int16)
    expected = read_image(DATA / case / "expected.png").astype(np.int16)
    diff = np.abs(got - expected)
    assert diff.max() <= 1
    assert (diff == 0).mean() >= 0.9999


@pytest.mark.slow
def test_all_neural_methods_run(random_weights):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)
    hole = np.zeros((200, 240), bool)
    hole[60:140, 90:170] = True
    ctx = MethodContext(weights_dir=random_weights)
    outs = {}
    for name in NEURAL:
        method = create(name, ctx)
        res = method.run(img, hole)
        meta = method.metadata()
        method.close()
        assert res.image.shape == img.shape and not res.changed_known, name
        assert np.array_equal(res.image[~hole], img[~hole])
        assert all(len(r["sha256"]) == 64 for r in meta["weights"].values())
        outs[name] = res.image
    assert not np.array_equal(outs["two-stage"], outs["two-stage/no-shift"])
    assert not np.array_equal(outs["dfnet"], outs["dfnet@512"])


@pytest.mark.gpu
def test_conformance_on_cuda(random_weights):
    """Same vectors on the GPU (fp32, TF32 off). cuDNN picks its own algorithms, so only
    the 1/255 bound is the CPU's; the share of exact values is allowed to be lower."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    method = create("two-stage", MethodContext(device="cuda", weights_dir=random_weights))
    for case in ("square1024", "odd700x1000"):
        got = method(read_image(DATA / case / "image.png"), read_mask(DATA / case / "mask.png"))
        diff = np.abs(got.astype(np.int16) - read_image(DATA / case / "expected.png"))
        assert diff.max() <= 1 and (diff == 0).mean() >= 0.999, case
    method.close()
