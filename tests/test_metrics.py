"""bench.metrics: equality with scikit-image, hand-checked L1/PSNR, hole-only metrics,
metric_size, validation, and LPIPS availability (never a value without real weights)."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from bench import metrics
from bench.errors import UserError
from bench.masks import centre_square_mask
from bench.metrics import compute
from bench.resize import resize_nearest

SSIM_TOL = 1e-7  # the brief asks for 1e-4; measured errors are ~1e-9 to 3e-8


def ref_ssim(out: np.ndarray, gt: np.ndarray, full: bool = False):
    return structural_similarity(
        out, gt, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=255, channel_axis=-1, full=full,
    )


def noisy(img: np.ndarray, rng: np.random.Generator, amp: int) -> np.ndarray:
    return np.clip(img.astype(np.int16) + rng.integers(-amp, amp + 1, img.shape), 0, 255).astype(
        np.uint8
    )


def jpeg(img: np.ndarray, quality: int = 75) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def natural_ish(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth gradients, blurred noise and a hard edge: statistics closer to photos."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([255 * xx / max(w - 1, 1), 255 * yy / max(h - 1, 1), 128 + 0 * xx], -1)
    texture = cv2.GaussianBlur(rng.normal(0, 40, (h, w, 3)), (0, 0), 1.2)
    img = base * 0.6 + texture
    img[: h // 2, : w // 3] += 60  # an edge
    return np.clip(img, 0, 255).astype(np.uint8)


# -- SSIM ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape", [(11, 11), (16, 16), (64, 48), (48, 64), (37, 100), (130, 201), (512, 512)]
)
def test_ssim_equals_skimage_random(shape):
    rng = np.random.default_rng(sum(shape))
    gt = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    for out in (noisy(gt, rng, 25), rng.integers(0, 256, gt.shape, dtype=np.uint8)):
        assert metrics.ssim(out, gt) == pytest.approx(ref_ssim(out, gt), abs=SSIM_TOL)


@pytest.mark.parametrize("shape", [(16, 16), (64, 48), (200, 131), (512, 512)])
def test_ssim_equals_skimage_natural_ish(shape):
    rng = np.random.default_rng(7)
    gt = natural_ish(*shape, rng)
    mask = centre_square_mask(*shape)
    filled = gt.copy()
    filled[mask] = cv2.GaussianBlur(gt, (0, 0), 3)[mask]
    for out in (jpeg(gt), noisy(gt, rng, 2), filled, np.roll(gt, 1, axis=1)):
        assert metrics.ssim(out, gt) == pytest.approx(ref_ssim(out, gt), abs=SSIM_TOL)


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
def test_ssim_equals_skimage_photos(name):
    """Photos shipped inside scikit-image (no download): 512x512, 300x451, 400x600."""
    gt = getattr(data, name)()
    mask = centre_square_mask(*gt.shape[:2])
    telea = cv2.inpaint(gt, mask.astype(np.uint8), 3, cv2.INPAINT_TELEA)
    for out in (jpeg(gt, 90), telea, cv2.GaussianBlur(gt, (5, 5), 2)):
        assert metrics.ssim(out, gt) == pytest.approx(ref_ssim(out, gt), abs=SSIM_TOL)
    # The strip centre comes from the first argument: the other order must agree too.
    assert metrics.ssim(gt, telea) == pytest.approx(ref_ssim(gt, telea), abs=SSIM_TOL)


@pytest.mark.parametrize("level", [0, 1, 128, 254, 255])
def test_ssim_flat_images(level):
    """Flat regions are where float32 moments lose most precision (variance ~ 0)."""
    rng = np.random.default_rng(level)
    gt = np.full((64, 80, 3), level, np.uint8)
    sparse = gt.copy()
    sparse[::7, ::5] = 255 - level
    for out in (noisy(gt, rng, 1), sparse):
        assert metrics.ssim(out, gt) == pytest.approx(ref_ssim(out, gt), abs=SSIM_TOL)


@pytest.mark.parametrize(
    "box",
    [
        (0, 0, 3, 3),  # corner: the window box is clipped to the interior
        (60, 70, 64, 80),  # opposite corner
        (30, 0, 31, 80),  # one full row
        (20, 40, 21, 41),  # one pixel
        (5, 5, 59, 75),  # most of the image
    ],
)
def test_ssim_differences_in_a_box(box):
    """Only a box differs: the skipped identical windows must count as exactly 1."""
    rng = np.random.default_rng(3)
    gt = natural_ish(64, 80, rng)
    out = gt.copy()
    t, left, b, r = box
    out[t:b, left:r] = rng.integers(0, 256, out[t:b, left:r].shape, dtype=np.uint8)
    assert metrics.ssim(out, gt) == pytest.approx(ref_ssim(out, gt), abs=SSIM_TOL)


def test_ssim_identical_is_exactly_one():
    gt = natural_ish(40, 50, np.random.default_rng(0))
    assert metrics.ssim(gt, gt.copy()) == 1.0
    assert ref_ssim(gt, gt.copy()) == 1.0


def test_ssim_map_matches_skimage_full_map():
    gt = data.chelsea()
    out = jpeg(gt)
    ref_mean, ref_map = ref_ssim(out, gt, full=True)
    ours = metrics.ssim_map(out, gt)
    assert ours.shape == gt.shape and ours.dtype == np.float32
    assert np.abs(ours - ref_map).max() < 1e-3  # per pixel, float32 arithmetic
    interior = ours[5:-5, 5:-5].astype(np.float64).mean()
    assert interior == pytest.approx(ref_mean, abs=SSIM_TOL)


def test_views_are_accepted():
    """Non-contiguous views (channel-reversed, transposed, cropped) give the same numbers."""
    gt = natural_ish(60, 60, np.random.default_rng(4))
    for view in (gt[..., ::-1], gt.transpose(1, 0, 2), gt[::-1, 3:63 - 3][:, ::-1][:54]):
        copy = np.ascontiguousarray(view)
        ref = np.ascontiguousarray(gt[: view.shape[0], : view.shape[1]])
        assert metrics.ssim(view, ref) == metrics.ssim(copy, ref)
        assert metrics.ssim(view, ref) == pytest.approx(ref_ssim(copy, ref), abs=SSIM_TOL)
        assert metrics.l1(view, ref) == metrics.l1(copy, ref)


def test_ssim_needs_11_pixels():
    img = np.zeros((10, 40, 3), np.uint8)
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(img, img)


# -- L1 / PSNR ----------------------------------------------------------------------------------
def test_l1_psnr_hand_checked():
    gt = np.zeros((2, 2, 3), np.uint8)
    out = gt.copy()
    out[0, 0, 0] = 12  # one value of twelve differs by 12
    assert metrics.l1(out, gt) == 1.0  # 12 / 12
    # MSE = 144 / 12 = 12 -> 10 log10(65025 / 12) = 10 log10(5418.75) = 37.33899...
    assert metrics.psnr(out, gt) == pytest.approx(37.33899, abs=1e-5)
    out[1, 1] = (255, 255, 255)  # now 12 + 3 * 255 = 777 over 12 values
    assert metrics.l1(out, gt) == pytest.approx(777 / 12)
    assert metrics.psnr(out, gt) == pytest.approx(10 * math.log10(65025 / ((144 + 3 * 65025) / 12)))


def test_l1_psnr_match_numpy_and_skimage():
    rng = np.random.default_rng(5)
    gt = rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)
    out = rng.integers(0, 256, gt.shape, dtype=np.uint8)
    assert metrics.l1(out, gt) == pytest.approx(np.abs(out.astype(float) - gt).mean(), rel=1e-12)
    ref = peak_signal_noise_ratio(gt, out, data_range=255)
    assert metrics.psnr(out, gt) == pytest.approx(ref, rel=1e-12)


def test_identical_images():
    gt = natural_ish(32, 32, np.random.default_rng(1))
    mask = centre_square_mask(32, 32)
    assert metrics.l1(gt, gt) == 0.0
    assert metrics.psnr(gt, gt) == math.inf
    assert metrics.psnr(gt, gt, mask) == math.inf
    values = metrics.compute_metrics(gt, gt.copy(), mask)
    assert values == {"l1": 0.0, "psnr": math.inf, "ssim": 1.0, "hole_l1": 0.0,
                      "hole_psnr": math.inf}


def test_hole_only_metrics():
    gt = np.full((4, 4, 3), 100, np.uint8)
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True  # 4 hole pixels
    out = gt.copy()
    out[~mask] = 200  # outside: off by 100 (12 pixels)
    out[1, 1] = (103, 103, 103)  # inside: one pixel off by 3 in all channels
    assert metrics.l1(out, gt, mask) == pytest.approx(3 * 3 / 12)  # 9 over 4 px x 3 ch
    assert metrics.l1(out, gt) == pytest.approx((12 * 3 * 100 + 9) / 48)
    assert metrics.psnr(out, gt, mask) == pytest.approx(10 * math.log10(65025 / (27 / 12)))
    out[1, 1] = gt[1, 1]
    assert metrics.psnr(out, gt, mask) == math.inf  # hole identical, outside not
    assert metrics.psnr(out, gt) < 10


# -- compute_metrics ----------------------------------------------------------------------------
def test_compute_metrics_values_and_keys():
    rng = np.random.default_rng(11)
    gt = natural_ish(96, 96, rng)
    mask = centre_square_mask(96, 96)
    out = gt.copy()
    out[mask] = 90
    values = metrics.compute_metrics(out, gt, mask)
    assert list(values) == ["l1", "psnr", "ssim", "hole_l1", "hole_psnr"]
    assert all(isinstance(v, float) for v in values.values())
    assert values["l1"] == metrics.l1(out, gt)
    assert values["hole_l1"] == metrics.l1(out, gt, mask)
    assert values["hole_psnr"] == metrics.psnr(out, gt, mask)
    assert values["ssim"] == pytest.approx(ref_ssim(out, gt), abs=SSIM_TOL)
    # Only the hole differs, so the whole-image L1 is the hole L1 scaled by the hole's share.
    assert values["l1"] == pytest.approx(values["hole_l1"] * mask.mean())
    assert set(values) <= set(metrics.HIGHER_IS_BETTER)


def test_compute_metrics_metric_size():
    rng = np.random.default_rng(12)
    gt = natural_ish(100, 100, rng)
    mask = centre_square_mask(100, 100)
    out = noisy(gt, rng, 20)
    small = metrics.compute_metrics(out, gt, mask, metric_size=40)
    o, g, m = (resize_nearest(a, (40, 40)) for a in (out, gt, mask))
    assert small == metrics.compute_metrics(o, g, m)
    assert small["ssim"] == pytest.approx(ref_ssim(o, g), abs=SSIM_TOL)
    assert small != metrics.compute_metrics(out, gt, mask)
    assert metrics.compute_metrics(out, gt, mask, metric_size=np.int64(100)) == (
        metrics.compute_metrics(out, gt, mask)
    )


@pytest.mark.parametrize("size", [0, 10, 101, 50.0, True])
def test_compute_metrics_bad_metric_size(size):
    gt = np.zeros((100, 100, 3), np.uint8)
    with pytest.raises(ValueError, match="metric_size"):
        metrics.compute_metrics(gt, gt, centre_square_mask(100, 100), metric_size=size)


def test_metric_size_losing_the_hole():
    gt = np.zeros((100, 100, 3), np.uint8)
    mask = np.zeros((100, 100), bool)
    mask[0, 0] = True  # nearest sampling at 20x20 never picks pixel 0
    with pytest.raises(ValueError, match="no hole pixels"):
        metrics.compute_metrics(gt, gt, mask, metric_size=20)


# -- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "out, match",
    [
        (np.zeros((20, 20, 3), np.float32), "uint8"),
        (np.zeros((20, 20), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((20, 20, 4), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((20, 21, 3), np.uint8), "differ in shape"),
        ([[0]], "numpy array"),
    ],
)
def test_bad_images(out, match):
    gt = np.zeros((20, 20, 3), np.uint8)
    for fn in (metrics.l1, metrics.psnr, metrics.ssim):
        with pytest.raises(ValueError, match=match):
            fn(out, gt)


@pytest.mark.parametrize(
    "mask, match",
    [
        (np.ones((20, 20), np.uint8), "bool"),
        (np.ones((20, 21), bool), "does not match"),
        (np.zeros((20, 20), bool), "no hole pixels"),
    ],
)
def test_bad_masks(mask, match):
    gt = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(ValueError, match=match):
        metrics.l1(gt, gt, mask)
    with pytest.raises(ValueError, match=match):
        metrics.compute_metrics(gt, gt, mask)


def test_conventions_are_recorded():
    names = ("l1", "psnr", "ssim", "hole_l1", "hole_psnr", "lpips")
    conv = json.loads(json.dumps(metrics.metric_conventions(names)))  # JSON for run.json
    assert conv["ssim"]["sigma"] == 1.5 and conv["ssim"]["window_size"] == 11
    assert conv["ssim"]["K1"] == 0.01 and conv["ssim"]["K2"] == 0.03
    assert "population" in conv["ssim"]["covariance"]
    for key in (*names, "metric_size"):
        assert key in conv
    assert conv["region"] == {**conv["region"], "value": "full", "applies_to": ["lpips"]}
    assert {k: v for k, v in metrics.HIGHER_IS_BETTER.items() if k in names} == {
        "l1": False, "psnr": True, "ssim": True, "hole_l1": False, "hole_psnr": True,
        "lpips": False,
    }


# -- LPIPS --------------------------------------------------------------------------------------
ALEX_FILE = "alexnet-owt-7be5be79.pth"


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    """Point torch's hub cache at an empty folder; fail loudly on any download attempt."""
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    if torch.hub.get_dir() != str(tmp_path / "torch" / "hub"):
        pytest.skip("torch.hub.set_dir() was called in this process; TORCH_HOME is ignored")

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_lpips_unavailable_message(empty_torch_home):
    reason = metrics.lpips_available()
    assert reason is not None
    assert reason.startswith("LPIPS unavailable: ")
    assert "\n" not in reason
    assert ALEX_FILE in reason and str(empty_torch_home) in reason
    assert "https://download.pytorch.org/models/" + ALEX_FILE in reason
    with pytest.raises(UserError, match="LPIPS unavailable"):
        metrics.LPIPSMetric()
    assert metrics.lpips_available("squeeze").startswith("LPIPS unavailable: unknown network")


@pytest.mark.slow  # builds AlexNet and two LPIPS networks: several seconds on 2 cores
@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")
def test_lpips_with_a_local_backbone_file(empty_torch_home):
    """A random-weight backbone in torchvision's file format stands in for the real one.

    Checks that the cached file is found and loaded (no download), and that the value equals
    the lpips package's own forward pass on the same weights with [-1, 1] inputs.
    """
    import lpips
    import torch
    import torchvision

    torch.manual_seed(0)
    features = torchvision.models.alexnet(weights=None).features
    empty_torch_home.mkdir(parents=True)
    # Only the `features.*` part that LPIPS uses (the real file also holds the classifier).
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()},
               empty_torch_home / ALEX_FILE)
    assert metrics.lpips_available() is None

    metric = metrics.LPIPSMetric()
    rng = np.random.default_rng(0)
    gt = natural_ish(64, 72, rng)
    out = noisy(gt, rng, 30)
    assert metric(gt, gt.copy()) == 0.0
    value = metric(out, gt)
    assert value > 0

    ref = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    for part in (ref.net.slice1, ref.net.slice2, ref.net.slice3, ref.net.slice4, ref.net.slice5):
        for idx, module in part.named_children():
            module.load_state_dict(features[int(idx)].state_dict())
    ref.eval()

    def tensor(a):
        return torch.tensor(a, dtype=torch.float32).permute(2, 0, 1)[None] / 255 * 2 - 1

    with torch.no_grad():
        expected = float(ref(tensor(out), tensor(gt)))
    assert value == pytest.approx(expected, rel=1e-5)
    meta = metric.metadata()
    assert meta["backbone_file"] == ALEX_FILE and len(meta["backbone_sha256"]) == 64
    compute._instrument.cache_clear()  # built once per process: drop any earlier instance
    for region, crop in (("full", np.s_[:, :]), ("hole", compute.hole_crop(centre_square_mask(64, 72)))):
        values = metrics.compute_metrics(out, gt, centre_square_mask(64, 72), ("lpips",), region=region)
        assert values["lpips"] == pytest.approx(metric(out[crop], gt[crop]))
    compute._instrument.cache_clear()


def test_prepare_metrics_builds_each_model_based_metric_once(monkeypatch):
    """What a worker's warm-up builds: the model-based metrics of the run, nothing else."""
    built = []

    def fake_instrument(name, display, device):
        built.append((name, display, device))

    monkeypatch.setattr(compute, "_instrument", fake_instrument)
    metrics.prepare_metrics(("l1", "psnr", "ssim", "cvvdp", "flip"), "standard_4k", "cpu")
    assert built == [("cvvdp", "standard_4k", "cpu"), ("flip", "standard_4k", "cpu")]
    with pytest.raises(UserError):
        metrics.prepare_metrics(("no-such-metric",))
