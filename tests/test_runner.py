"""The runner and the CLI end to end on a tiny set, resume after kill -9, failures, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.io import read_image
from bench.methods import Inpainter, MethodContext, register


@register("test-mean")
class MeanFill(Inpainter):
    """Fills the hole with the mean known colour (test-only)."""

    def _inpaint(self, image, mask):
        out = image.copy()
        out[mask] = image[~mask].mean(axis=0).astype(np.uint8)
        return out


@register("test-fail-img1")
class FailOnOne(MeanFill):
    """Raises for the item called img1, and scribbles on the known region otherwise."""

    def set_item(self, image_id, resolution):
        self.current = image_id

    def _inpaint(self, image, mask):
        if self.current == "img1":
            raise RuntimeError("simulated crash")
        out = super()._inpaint(image, mask)
        out[0, 0] = 7
        return out


@register("test-missing-weights")
class NeedsWeights(MeanFill):
    @classmethod
    def unavailable_reason(cls, context: MethodContext, arg=None):
        return "weights missing: put foo.pth in the weights folder"


def _run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_run_table_plot_end_to_end(photo_dir, tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = _run(
        [
            "run",
            "--images",
            str(photo_dir),
            "--out",
            str(run),
            "--resolutions",
            "32",
            "64",
            "--methods",
            "test-mean",
            "test-missing-weights",
            "--no-lpips",
            "-q",
            "--jobs",
            "1",
        ],
        capsys,
    )
    assert code == 0, err
    assert "| test-mean |" in out and "32 (n=3) L1" in out and "64 (n=2) L1" in out
    assert "test-missing-weights: skipped — weights missing" in out
    items = pd.read_csv(run / "items.csv")
    assert len(items) == 5 and (items.status == "ok").all() and not items.changed_known.any()
    assert items.runtime_s.notna().all() and (items.peak_rss_mb > 0).all()
    metrics = pd.read_csv(run / "metrics.csv")
    assert set(metrics.metric) >= {"l1", "psnr", "ssim", "hole_l1", "hole_psnr"}
    assert not metrics.duplicated(["method", "resolution", "image", "metric"]).any()
    info = json.loads((run / "run.json").read_text())
    assert info["methods"]["test-mean"]["color_order"] == "RGB"
    assert "ssim" in json.dumps(info["metric_conventions"]).lower()
    assert info["skipped_methods"] == {
        "test-missing-weights": "weights missing: put foo.pth in the weights folder"
    }
    assert info["skipped_images"][0]["image"] == "img2"
    # the output keeps the known region and fills the hole
    row = items[(items.image == "img0") & (items.resolution == 64)].iloc[0]
    outimg = read_image(run / row["output"])
    gt = read_image(run / "data" / "64" / "img0.png")
    assert np.array_equal(outimg[:5], gt[:5]) and not np.array_equal(outimg, gt)

    for fmt, needle in (("latex", r"\textbf{"), ("csv", "ci_low"), ("md", "**")):
        code, out, _ = _run(["table", str(run), "--format", fmt, "--ci"], capsys)
        assert code == 0 and needle in out
    code, out, _ = _run(["plot", str(run)], capsys)
    assert code == 0
    for name in ("metrics_vs_resolution", "runtime_vs_resolution", "qualitative_64"):
        assert (run / "plots" / f"{name}.png").stat().st_size > 1000
        assert (run / "plots" / f"{name}.pdf").exists()


def test_failing_item_is_recorded_and_run_goes_on(photo_dir, tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = _run(
        [
            "run",
            "--images",
            str(photo_dir),
            "--out",
            str(run),
            "--resolutions",
            "32",
            "--methods",
            "test-fail-img1",
            "--no-lpips",
            "-q",
            "--jobs",
            "1",
        ],
        capsys,
    )
    assert code == 1 and "1 items failed" in err
    items = pd.read_csv(run / "items.csv").set_index("image")
    assert items.loc["img1", "status"] == "failed" and "simulated crash" in items.loc["img1", "error"]
    assert items.loc["img0", "status"] == "ok" and bool(items.loc["img0", "changed_known"])
    assert (run / "logs" / "test-fail-img1_32_img1.txt").read_text().count("Traceback") == 1


@pytest.mark.parametrize(
    "args, needle",
    [
        (["run", "--methods", "no-such-method", "--images", "{photos}"], "unknown method 'no-such-method'"),
        (["run", "--methods", "test-mean", "--images", "{tmp}/missing"], "missing: folder not found"),
        (["run", "--methods", "test-missing-weights", "--images", "{photos}"], "put foo.pth"),
        (["run", "--config", "{tmp}/bad.toml"], "unknown key 'resolution'"),
        (["run", "--config", "{tmp}/nope.toml"], "config file not found"),
        (["table", "{tmp}/norun"], "run folder not found"),
        (
            ["prepare", "--images", "{photos}", "--out", "{tmp}/p", "--hole-fraction", "1.5"],
            "--hole-fraction",
        ),
    ],
)
def test_user_errors_are_one_line_exit_2(args, needle, photo_dir, tmp_path, capsys):
    (tmp_path / "bad.toml").write_text("resolution = [32]\n")
    args = [a.format(photos=photo_dir, tmp=tmp_path) for a in args] + ["--out", str(tmp_path / "r")] * (
        args[0] == "run"
    )
    code, out, err = _run(args, capsys)
    assert code == 2
    lines = [x for x in err.strip().splitlines() if x.startswith("hrbench: error:")]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def test_config_file_and_flags_override(photo_dir, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[run]\nimages = "{photo_dir}"\nmethods = ["test-mean"]\nresolutions = [64]\nlpips = false\n'
    )
    code, out, err = _run(
        [
            "run",
            "--config",
            str(cfg),
            "--resolutions",
            "32",
            "--out",
            str(tmp_path / "r"),
            "-q",
            "--jobs",
            "1",
        ],
        capsys,
    )
    assert code == 0, err
    assert set(pd.read_csv(tmp_path / "r" / "items.csv").resolution) == {32}


SLOW_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from bench.methods import Inpainter, register
    from bench.cli import main

    @register("slow-mean")
    class Slow(Inpainter):
        def _inpaint(self, image, mask):
            time.sleep(0.4)
            out = image.copy()
            out[mask] = 128
            return out

    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.slow
def test_resume_after_kill_9_redoes_nothing_and_leaves_no_torn_rows(photo_dir, tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(SLOW_SCRIPT)
    run = tmp_path / "run"
    args = [
        sys.executable,
        str(script),
        "run",
        "--images",
        str(photo_dir),
        "--out",
        str(run),
        "--resolutions",
        "16",
        "24",
        "32",
        "40",
        "--methods",
        "slow-mean",
        "--no-lpips",
        "-q",
        "--jobs",
        "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = run / "records" / "slow-mean"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(records.glob("*/*.json"))) < 4:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {p: p.stat().st_mtime_ns for p in records.glob("*/*.json")}
    assert 4 <= len(first) < 12, "the kill should land mid-run"

    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "already done" in done.stderr
    for p, t in first.items():
        assert p.stat().st_mtime_ns == t, f"{p} was redone"
    items = pd.read_csv(run / "items.csv")
    assert len(items) == 12 and not items.duplicated(["method", "resolution", "image"]).any()
    assert (items.status == "ok").all()
    metrics = pd.read_csv(run / "metrics.csv")
    assert len(metrics) == 12 * metrics.metric.nunique()
    assert not list(run.rglob(".*.tmp")) and not list(run.rglob(".*.png.*"))


@pytest.mark.slow
def test_parallel_jobs_give_the_same_results_as_serial(photo_dir, tmp_path, capsys):
    base = [
        "run",
        "--images",
        str(photo_dir),
        "--resolutions",
        "32",
        "--methods",
        "telea",
        "ns",
        "--no-lpips",
        "-q",
    ]
    assert _run([*base, "--out", str(tmp_path / "a"), "--jobs", "1"], capsys)[0] == 0
    assert _run([*base, "--out", str(tmp_path / "b"), "--jobs", "2"], capsys)[0] == 0
    a, b = (pd.read_csv(tmp_path / x / "metrics.csv") for x in "ab")
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow
def test_default_methods_on_the_embedded_sample_set(tmp_path, capsys):
    """The README's main job, shrunk to 256 px so it fits in a test: every default method runs."""
    from bench.methods import MethodContext, default_methods, unavailable_reason

    code, out, err = _run(["run", "--resolutions", "256", "--out", str(tmp_path / "r"), "-q"], capsys)
    assert code == 0, err
    items = pd.read_csv(tmp_path / "r" / "items.csv")
    runnable = {m for m in default_methods() if unavailable_reason(m, MethodContext()) is None}
    assert set(items.method) == runnable and {"telea", "ns", "biharmonic"} <= runnable
    assert len(items) == 6 * len(runnable) and (items.status == "ok").all()
    table = (tmp_path / "r" / "table.md").read_text()
    for m in runnable:
        assert f"| {m} |" in table
