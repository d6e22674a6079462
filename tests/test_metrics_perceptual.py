"""cvvdp and flip equal direct calls of their packages, display models, no network at run
time, `hrbench weights fetch lpips` (download mocked), what run.json records, and the
qualitative figure's 1:1 crops."""

from __future__ import annotations

import json
import socket
import urllib.error

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench import metrics
from bench.cli import main
from bench.errors import UserError
from bench.masks import centre_square_mask
from bench.metrics import compute

pycvvdp = pytest.importorskip("pycvvdp")
flip_evaluator = pytest.importorskip("flip_evaluator")
torch = pytest.importorskip("torch")

from conftest import smooth_photo  # noqa: E402

# cvvdp on tiny images, on one torch thread (conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(3)
    gt = smooth_photo(120, 136, 5)
    mask = centre_square_mask(120, 136)
    out = gt.copy()
    out[mask] = np.clip(gt[mask].astype(int) + rng.integers(-40, 41, gt[mask].shape), 0, 255)
    return out, gt, mask


def direct_cvvdp(out, gt, **display):
    metric = pycvvdp.cvvdp(quiet=True, device=torch.device("cpu"), **display)
    jod, _ = metric.predict(out, gt, dim_order="HWC")
    return float(jod)


def direct_flip(out, gt, ppd):
    return float(flip_evaluator.evaluate(gt / 255.0, out / 255.0, "LDR", parameters={"ppd": ppd})[1])


# -- equality with the packages -----------------------------------------------------------------
@pytest.mark.parametrize("region", ["full", "hole"])
def test_cvvdp_and_flip_equal_direct_calls_named_display(pair, region):
    out, gt, mask = pair
    values = metrics.compute_metrics(out, gt, mask, ("cvvdp", "flip"), region=region)
    crop = metrics.hole_crop(mask) if region == "hole" else np.s_[:, :]
    assert values["cvvdp"] == direct_cvvdp(out[crop], gt[crop], display_name="standard_fhd")
    ppd = pycvvdp.vvdp_display_geometry.load("standard_fhd").get_ppd()
    assert values["flip"] == pytest.approx(direct_flip(out[crop], gt[crop], ppd), abs=1e-7)
    assert values["cvvdp"] < 10 and values["flip"] > 0


def test_cvvdp_and_flip_equal_direct_calls_custom_display(pair):
    out, gt, mask = pair
    spec = "2560x1440,27in,0.7m,250cd,100lux"
    values = metrics.compute_metrics(out, gt, mask, ("cvvdp", "flip"), display=spec)
    geometry = pycvvdp.vvdp_display_geometry((2560, 1440), distance_m=0.7, diagonal_size_inches=27)
    photometry = pycvvdp.vvdp_display_photo_eotf(250, contrast=1000, source_colorspace="sRGB", E_ambient=100)
    expected = direct_cvvdp(out, gt, display_photometry=photometry, display_geometry=geometry)
    assert values["cvvdp"] == expected
    assert values["flip"] == pytest.approx(direct_flip(out, gt, geometry.get_ppd()), abs=1e-7)
    assert values["cvvdp"] != metrics.compute_metrics(out, gt, mask, ("cvvdp",))["cvvdp"]


def test_metric_objects_are_built_once_per_process(pair, monkeypatch):
    out, gt, mask = pair
    compute._instrument.cache_clear()
    built = []
    real = metrics.perceptual.CvvdpMetric.__init__

    def counting(self, *a, **k):
        built.append(1)
        real(self, *a, **k)

    monkeypatch.setattr(metrics.perceptual.CvvdpMetric, "__init__", counting)
    for _ in range(3):
        metrics.compute_metrics(out, gt, mask, ("cvvdp",))
    assert len(built) == 1
    compute._instrument.cache_clear()


def test_no_network_at_run_time(pair, monkeypatch):
    """cvvdp ships its calibration: building and running it (and flip) opens no socket."""
    out, gt, mask = pair
    compute._instrument.cache_clear()

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    values = metrics.compute_metrics(out, gt, mask, ("cvvdp", "flip"), display="standard_4k")
    assert set(values) == {"cvvdp", "flip"}
    compute._instrument.cache_clear()


# -- display models -----------------------------------------------------------------------------
def test_default_display_is_the_24_inch_full_hd_monitor():
    d = metrics.parse_display(None)
    assert d.name == metrics.DEFAULT_DISPLAY == "standard_fhd"
    assert d.resolution == (1920, 1080) and d.diagonal_in == 24 and d.distance_m == 0.6
    assert d.ppd == pytest.approx(pycvvdp.vvdp_display_geometry.load("standard_fhd").get_ppd())
    assert 35 < d.ppd < 40
    json.dumps(d.as_dict())


@pytest.mark.parametrize(
    "text, needle",
    [
        ("nope", "unknown; use a cvvdp display name"),
        ("standard_hdr_pq", "HDR model"),
        ("2560x1440,27in", "missing distance_m"),
        ("2560x1440,27in,0.7m,fast", "'fast' not understood"),
        ("2560x1440,27in,0.7m,0.8m", "'0.8m' repeated"),
        ("0x1440,27in,0.7m", "positive"),
    ],
)
def test_bad_display_is_one_line_user_error(text, needle):
    with pytest.raises(UserError, match=needle) as err:
        metrics.parse_display(text)
    assert "\n" not in str(err.value)


# -- LPIPS fetch (download mocked) --------------------------------------------------------------
@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    if torch.hub.get_dir() != str(tmp_path / "torch" / "hub"):
        pytest.skip("torch.hub.set_dir() was called in this process; TORCH_HOME is ignored")
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_fetch_lpips_downloads_through_torch_hub(torch_home, monkeypatch, capsys):
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        with open(dst, "wb") as fh:
            fh.write(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    assert main(["weights", "fetch", "lpips"]) == 0
    ((url, dst, prefix),) = calls
    assert url.endswith("/alexnet-owt-7be5be79.pth") and prefix == "7be5be79"
    assert dst == str(torch_home / "alexnet-owt-7be5be79.pth")
    assert "alexnet-owt-7be5be79.pth" in capsys.readouterr().out
    # Present now: found offline, no second download.
    assert metrics.fetch_backbone() == torch_home / "alexnet-owt-7be5be79.pth"
    assert len(calls) == 1


def test_fetch_lpips_without_network_is_one_line(torch_home, monkeypatch, capsys):
    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert main(["weights", "fetch", "lpips"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("hrbench: error: could not download the LPIPS backbone https://")
    assert "Name or service not known" in err and str(torch_home.parent.parent.name) in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not torch_home.exists() or not any(torch_home.iterdir())
    assert metrics.lpips_available() is not None


# -- run.json and metrics.csv from a real run ---------------------------------------------------
@pytest.fixture(scope="module")
def perceptual_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("prun")
    photos = root / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(smooth_photo(140, 150, seed=10 + i)).save(photos / f"p{i}.png")
    args = [
        "run",
        "--images",
        str(photos),
        "--methods",
        "telea",
        "--resolutions",
        "128",
        "--metrics",
        "l1",
        "psnr",
        "ssim",
        "cvvdp",
        "flip",
        "--display",
        "standard_4k",
        "--out",
        str(root / "run"),
        "--jobs",
        "1",
        "-q",
        "--no-plots",
    ]
    assert main(args) == 0
    return root / "run"


def test_run_records_versions_settings_and_package_values(perceptual_run):
    from importlib.metadata import version

    from bench.io import read_image, read_mask

    info = json.loads((perceptual_run / "run.json").read_text())
    assert info["metrics"] == ["l1", "psnr", "ssim", "cvvdp", "flip"]
    assert info["versions"]["cvvdp"] == version("cvvdp")
    assert info["versions"]["flip-evaluator"] == version("flip-evaluator")
    conv = info["metric_conventions"]
    assert conv["region"]["value"] == "hole"
    assert conv["cvvdp"]["display"]["name"] == "standard_4k"
    assert conv["flip"]["display"]["ppd"] == pytest.approx(metrics.parse_display("standard_4k").ppd, abs=1e-4)
    assert info["config"]["display"] == "standard_4k" and info["config"]["metric_region"] == "hole"

    df = pd.read_csv(perceptual_run / "metrics.csv")
    assert sorted(df.metric.unique()) == ["cvvdp", "flip", "l1", "psnr", "ssim"]
    item = pd.read_csv(perceptual_run / "data" / "manifest.csv").iloc[0]
    gt = read_image(perceptual_run / "data" / item["gt"])
    mask = read_mask(perceptual_run / "data" / item["mask"])
    out = read_image(perceptual_run / "outputs" / "telea" / "128" / f"{item['image']}.png")
    crop = metrics.hole_crop(mask)
    got = df[(df.image == item["image"]) & (df.method == "telea")].set_index("metric")["value"]
    # metrics.csv keeps 6 significant digits.
    assert got["cvvdp"] == pytest.approx(
        direct_cvvdp(out[crop], gt[crop], display_name="standard_4k"), rel=1e-5
    )
    ppd = metrics.parse_display("standard_4k").ppd
    assert got["flip"] == pytest.approx(direct_flip(out[crop], gt[crop], ppd), rel=1e-5)


def test_table_and_qualitative_figure_read_the_registry(perceptual_run, tmp_path):
    from bench.io import read_image, read_mask
    from bench.plots import plot_qualitative
    from bench.report import load_run, table

    md = table(perceptual_run, "md", ("l1", "cvvdp", "flip"))
    assert "CVVDP ↑" in md and "FLIP ↓" in md
    assert "computed on a crop around the hole" in md and "px/deg" in md

    df, info = load_run(perceptual_run)
    items = pd.read_csv(perceptual_run / "items.csv")
    png, _ = plot_qualitative(perceptual_run, items, df, info, tmp_path)
    fig = np.asarray(Image.open(png).convert("RGB"))
    manifest = pd.read_csv(perceptual_run / "data" / "manifest.csv")
    first = manifest.sort_values("image").iloc[0]
    gt = read_image(perceptual_run / "data" / first["gt"])
    rows, cols = metrics.hole_crop(read_mask(perceptual_run / "data" / first["mask"]))
    crop = gt[rows, cols]
    out = read_image(perceptual_run / "outputs" / "telea" / "128" / f"{first['image']}.png")[rows, cols]
    # Each crop appears pixel for pixel somewhere in the figure (no resampling).
    for panel in (crop, out):
        h, w = panel.shape[:2]
        hits = [
            (y, x)
            for y in range(fig.shape[0] - h + 1)
            for x in range(fig.shape[1] - w + 1)
            if (fig[y, x] == panel[0, 0]).all() and np.array_equal(fig[y : y + h, x : x + w], panel)
        ]
        assert hits, "crop not found 1:1 in the figure"


@pytest.mark.gpu
def test_cvvdp_on_the_gpu_matches_the_cpu(pair):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    out, gt, mask = pair
    cpu = metrics.compute_metrics(out, gt, mask, ("cvvdp",), device="cpu")["cvvdp"]
    gpu = metrics.compute_metrics(out, gt, mask, ("cvvdp",), device="cuda")["cvvdp"]
    assert gpu == pytest.approx(cpu, abs=1e-3)
