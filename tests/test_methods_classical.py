"""Classical baselines (telea, ns, biharmonic, patchmatch), external:<folder>, registry names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.restoration import inpaint_biharmonic

from bench.errors import MethodUnavailable, UserError
from bench.masks import centre_square_mask
from bench.methods import MethodContext, available_names, create, default_methods, unavailable_reason
from bench.methods.classical import _dst_basis, biharmonic_fill

CLASSICAL = ["telea", "ns", "biharmonic", "patchmatch"]


def gradient_image(n: int = 96) -> np.ndarray:
    """A smooth linear ramp, different per channel, uint8 in [20, 235]."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float64) / (n - 1)
    img = np.stack([20 + 200 * x, 20 + 150 * y + 50 * x, 235 - 120 * x - 90 * y], -1)
    return np.rint(img).astype(np.uint8)


def textured_image(n: int = 96, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    base = 128 + 60 * np.sin(x / 5.0)[..., None] * np.cos(y / 7.0)[..., None] * np.array([1, 0.5, -1])
    return np.clip(base + rng.normal(0, 8, (n, n, 3)), 0, 255).astype(np.uint8)


# -- registry -------------------------------------------------------------------------------
def test_registry_names_and_defaults():
    names = available_names()
    for name in CLASSICAL:
        assert name in names
    assert "external:<arg>" in names
    defaults = default_methods()
    assert set(CLASSICAL) <= set(defaults)
    assert not any(d.startswith("external") for d in defaults)


def test_unknown_method_is_a_user_error():
    with pytest.raises(UserError, match="unknown method 'telae'.*telea"):
        create("telae")
    with pytest.raises(UserError, match="needs an argument"):
        create("external:")


@pytest.mark.parametrize("name", CLASSICAL)
def test_create_and_metadata(name):
    inst = create(name, MethodContext(seed=7))
    assert inst.name == name
    meta = inst.metadata()
    assert meta["name"] == name and meta["uses_gpu"] is False and meta["color_order"] == "RGB"
    assert meta["description"]
    if name in ("telea", "ns"):
        assert meta["radius"] == 3 and meta["opencv"]
    if name == "patchmatch":
        assert meta["seed"] == 7 and meta["patch_radius"] == 3 and meta["package"] == "pypatchmatch"
        assert meta["deterministic"] is True


# -- every method fills the hole and leaves the known region alone ------------------------------
@pytest.mark.parametrize("name", CLASSICAL)
def test_fills_hole_known_region_untouched(name):
    img = textured_image(80)
    mask = centre_square_mask(80, 80)
    inst = create(name)
    res = inst.run(img, mask)
    out = res.image
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~mask], img[~mask])
    assert not res.changed_known  # these methods never alter known pixels themselves
    # the hole was zeroed before the call; a real fill is not black and not the original
    assert out[mask].mean() > 60
    # the result does not depend on what was in the hole: the wrapper hides it
    scrambled = img.copy()
    scrambled[mask] = 255 - scrambled[mask]
    np.testing.assert_array_equal(inst(scrambled, mask), out)


@pytest.mark.parametrize("name,bound", [("biharmonic", 0.5), ("telea", 8.0), ("ns", 6.0)])
def test_smooth_gradient_reconstructed(name, bound):
    """A linear ramp is biharmonic, so biharmonic reproduces it up to the 8-bit rounding of
    the input (measured mean 0.18, max 1). Telea and NS only diffuse along their marching
    front (measured mean 6.6 and 4.7); both must still beat filling the hole with the known
    region's mean colour (14.0) by a wide margin."""
    img = gradient_image(96)
    mask = centre_square_mask(96, 96)
    out = create(name)(img, mask)
    err = np.abs(out.astype(float) - img)[mask]
    mean_fill = np.abs(img[~mask].mean(axis=0) - img.astype(float))[mask].mean()
    assert err.mean() < bound, err.mean()
    assert err.mean() < 0.6 * mean_fill
    if name == "biharmonic":
        assert err.max() <= 1


def test_patchmatch_seeded_and_deterministic():
    img = textured_image(64, seed=3)
    mask = centre_square_mask(64, 64)
    a = create("patchmatch", MethodContext(seed=1))(img, mask)
    b = create("patchmatch", MethodContext(seed=1))(img, mask)
    np.testing.assert_array_equal(a, b)
    # copies texture from the image: hole statistics close to the known region's
    assert abs(a[mask].astype(float).mean() - img[~mask].mean()) < 15


def test_patchmatch_unavailable_without_package(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "patchmatch", None)  # import now fails, as if not installed
    reason = unavailable_reason("patchmatch", MethodContext())
    assert reason and "pip install" in reason
    with pytest.raises(MethodUnavailable, match="patchmatch"):
        create("patchmatch")


# -- biharmonic equals scikit-image ---------------------------------------------------------
def _masks(h: int, w: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    out = {}
    m = np.zeros((h, w), bool)
    m[20:41, 30:55] = True
    out["rectangle"] = m  # DST + capacitance path
    m = np.zeros((h, w), bool)
    m[20:21, 10:40] = True
    out["one-row rectangle"] = m
    m = np.zeros((h, w), bool)
    m[0:12, 30:55] = True
    out["rectangle at border"] = m  # sparse path with truncated stencils
    m = np.zeros((h, w), bool)
    m[1:10, 1:9] = True
    m[30:50, 40:w - 2] = True
    m[45:h, 5:15] = True
    out["three regions"] = m
    yy, xx = np.mgrid[:h, :w]
    out["disk"] = (yy - h // 2) ** 2 + (xx - w // 2) ** 2 < 15**2
    out["random pixels"] = rng.random((h, w)) < 0.2
    return out


@pytest.mark.parametrize("kind", list(_masks(64, 80)))
def test_biharmonic_equals_skimage(kind):
    """Same linear system, solved differently: agreement to 1e-9 on the [0, 1] scale (measured
    ~1e-12; the bound leaves room for BLAS differences, and 1e-9 is 2.5e-7 of one 8-bit level,
    so the uint8 outputs are identical unless a value sits exactly on a rounding boundary)."""
    rng = np.random.default_rng(11)
    img = rng.random((64, 80, 3))  # worst case: noise gives the largest, least smooth fills
    mask = _masks(64, 80)[kind]
    ref = inpaint_biharmonic(img, mask, channel_axis=-1)
    ours = biharmonic_fill(img, mask)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(ours[~mask], img[~mask])


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (3, 2), (1, 30), (30, 1), (20, 24), (21, 25)])
def test_biharmonic_rectangles_of_every_parity_equal_skimage(shape):
    """The rectangle solver splits the problem by mirror symmetry; odd and even sides, thin
    and single-pixel holes all take that path and must agree with scikit-image."""
    rng = np.random.default_rng(4)
    img = rng.random((40, 50, 3))
    mask = np.zeros((40, 50), bool)
    mask[3 : 3 + shape[0], 4 : 4 + shape[1]] = True
    ref = inpaint_biharmonic(img, mask, channel_axis=-1)
    np.testing.assert_allclose(biharmonic_fill(img, mask), ref, rtol=0, atol=1e-9)


def test_biharmonic_method_equals_skimage_uint8():
    img = textured_image(72, seed=2)
    mask = centre_square_mask(72, 72)
    ref = inpaint_biharmonic(img, mask, channel_axis=-1)  # float in [0, 1]
    ours = create("biharmonic")(img, mask)
    diff = np.abs(ours.astype(int) - np.rint(ref * 255).astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999


def test_dst_basis_is_scipy_orthonormal_dst1():
    from scipy import fft

    v = np.random.default_rng(0).random(9)
    s = _dst_basis(9)
    np.testing.assert_allclose(s @ v, fft.dst(v, type=1, norm="ortho"), atol=1e-12)
    np.testing.assert_allclose(s @ s, np.eye(9), atol=1e-12)


@pytest.mark.slow
def test_biharmonic_rectangle_path_matches_sparse_path_at_1024():
    """The DST path (used for the protocol's centre hole) against the general sparse solver
    at full benchmark scale: 341^2 hole at 1024 px."""
    from bench.methods import classical

    rng = np.random.default_rng(0)
    n = 1024
    img = rng.random((n, n, 3))
    mask = centre_square_mask(n, n)
    fast = biharmonic_fill(img, mask)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    crop = (slice(rows[0] - 2, rows[-1] + 3), slice(cols[0] - 2, cols[-1] + 3))
    slow = classical._solve_sparse(img[crop], mask[crop])
    clipped = np.clip(slow, img[~mask].min(axis=0), img[~mask].max(axis=0))
    np.testing.assert_allclose(fast[mask], clipped, rtol=0, atol=1e-6)


# -- external:<folder> --------------------------------------------------------------------------
def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_external_unavailable_when_folder_missing(tmp_path):
    missing = tmp_path / "nope"
    reason = unavailable_reason(f"external:{missing}", MethodContext())
    assert reason and str(missing) in reason and "not found" in reason
    with pytest.raises(MethodUnavailable, match="not found"):
        create(f"external:{missing}")


def test_external_reads_both_layouts(tmp_path):
    img = textured_image(64)
    mask = centre_square_mask(64, 64)
    result = gradient_image(64)
    _save(tmp_path / "tool" / "64" / "cat.png", result)
    _save(tmp_path / "tool" / "dog_64.png", 255 - result)
    inst = create(f"external:{tmp_path / 'tool'}")
    assert inst.name == f"external:{tmp_path / 'tool'}"
    assert inst.metadata()["folder"] == str(tmp_path / "tool")
    inst.set_item("cat", 64)
    res = inst.run(img, mask)
    np.testing.assert_array_equal(res.image[mask], result[mask])
    np.testing.assert_array_equal(res.image[~mask], img[~mask])  # known region pasted back
    assert res.changed_known  # the tool's file differs outside the hole: recorded
    inst.set_item("dog", 64)
    np.testing.assert_array_equal(inst(img, mask)[mask], (255 - result)[mask])


def test_external_missing_file_names_expected_path(tmp_path):
    (tmp_path / "tool").mkdir()
    inst = create(f"external:{tmp_path / 'tool'}")
    inst.set_item("cat", 1024)
    img = textured_image(32)
    with pytest.raises(UserError) as err:
        inst(img, centre_square_mask(32, 32))
    assert str(tmp_path / "tool" / "1024" / "cat.png") in str(err.value)
    assert "cat_1024.png" in str(err.value)


def test_external_size_mismatch_and_ambiguity(tmp_path):
    folder = tmp_path / "tool"
    _save(folder / "64" / "cat.png", gradient_image(48))
    inst = create(f"external:{folder}")
    inst.set_item("cat", 64)
    img = textured_image(64)
    with pytest.raises(UserError, match="48x48 but the ground truth is 64x64"):
        inst(img, centre_square_mask(64, 64))
    _save(folder / "cat_64.png", gradient_image(64))
    with pytest.raises(UserError, match="several results"):
        inst(img, centre_square_mask(64, 64))


def test_external_without_item_is_a_user_error(tmp_path):
    (tmp_path / "tool").mkdir()
    inst = create(f"external:{tmp_path / 'tool'}")
    with pytest.raises(UserError, match="hrbench run"):
        inst(textured_image(32), centre_square_mask(32, 32))
