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
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.cli import main
from bench.io import read_image
from bench.methods import Inpainter, MethodContext, register
from bench.records import verify


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

    # the run wrote its figures, and every number traces back to run.json's settings
    for name in ("metrics_vs_resolution", "runtime_vs_resolution", "qualitative_64"):
        assert (run / "plots" / f"{name}.png").stat().st_size > 1000
        assert (run / "plots" / f"{name}.pdf").exists()
    assert verify(run) == []
    assert (run / "table.md").read_text() in out

    # A rerun that computes nothing keeps the figures (drawing them costs seconds); a missing
    # figure is drawn again.
    args = ["run", "--images", str(photo_dir), "--out", str(run), "--resolutions", "32", "64",
            "--methods", "test-mean", "--no-lpips", "-q", "--jobs", "1"]
    stamps = {p.name: p.stat().st_mtime_ns for p in (run / "plots").iterdir()}
    assert _run(args, capsys)[0] == 0
    assert {p.name: p.stat().st_mtime_ns for p in (run / "plots").iterdir()} == stamps
    (run / "plots" / "qualitative_64.pdf").unlink()
    assert _run(args, capsys)[0] == 0
    assert (run / "plots" / "qualitative_64.pdf").exists()

    for fmt, needle in (("latex", r"\textbf{"), ("csv", "ci_low"), ("md", "**")):
        code, out, _ = _run(["table", str(run), "--format", fmt, "--ci"], capsys)
        assert code == 0 and needle in out
    code, out, _ = _run(["plot", str(run), "--out", str(tmp_path / "figs")], capsys)
    assert code == 0 and (tmp_path / "figs" / "qualitative_64.png").exists()


def test_failing_item_is_recorded_and_run_goes_on(photo_dir, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["run", "--images", str(photo_dir), "--out", str(run), "--resolutions", "32"]
    args += ["--methods", "test-fail-img1", "--no-lpips", "--no-plots", "-q", "--jobs", "1"]
    code, out, err = _run(args, capsys)
    assert code == 1 and "1 items failed" in err
    items = pd.read_csv(run / "items.csv").set_index("image")
    assert items.loc["img1", "status"] == "failed" and "simulated crash" in items.loc["img1", "error"]
    assert items.loc["img0", "status"] == "ok" and bool(items.loc["img0", "changed_known"])
    assert (run / "logs" / "test-fail-img1_32_img1.txt").read_text().count("Traceback") == 1
    # a rerun retries the failed item only; that is no change of settings, so --no-redo allows it
    code, out, err = _run([*args, "--no-redo"], capsys)
    assert code == 1 and "(0 done, 2 reused, 1 redone (failed before), 1 failed;" in err, err


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


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--out", "{tmp}/afile"], "--out: {tmp}/afile is a file, not a folder"),
        (["--out", "{tmp}/afile/run"], "--out: {tmp}/afile is a file, not a folder"),
        (["--images", "{photos}/img0.png"], "img0.png: a file, not a folder"),
        (["--metric-size", "48"], "--metric-size 48 is larger than the resolution 32"),
        (["--jobs", "-1"], "--jobs must be >= 1"),
        (["--config", "{tmp}/c.toml"], "c.toml: resolutions: ['big'] are not whole numbers"),
    ],
)
def test_run_input_mistakes_are_one_line_and_write_nothing(extra, needle, photo_dir, tmp_path, capsys):
    """Found trying the CLI: a file as --out was a traceback, a --metric-size above the test
    size failed every item at run time, and flag mistakes were blamed on a 'config'."""
    (tmp_path / "afile").write_text("keep me")
    (tmp_path / "c.toml").write_text('resolutions = "big"\n')
    extra = [a.format(photos=photo_dir, tmp=tmp_path) for a in extra]
    args = ["run", "--images", str(photo_dir), "--methods", "test-mean", "--resolutions", "32"]
    code, out, err = _run([*args, "--out", str(tmp_path / "r"), "-q", "--no-plots", *extra], capsys)
    assert code == 2 and "Traceback" not in err
    lines = [x for x in err.strip().splitlines() if x.startswith("hrbench: error:")]
    assert len(lines) == 1 and needle.format(tmp=tmp_path) in lines[0], err
    assert (tmp_path / "afile").read_text() == "keep me" and not (tmp_path / "r").exists()


def test_config_file_takes_one_value_or_commas_where_a_list_is_expected(photo_dir, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'images = "{photo_dir}"\nmethods = "test-mean, telea"\nresolutions = 32\nlpips = false\n')
    code, out, err = _run(["run", "--config", str(cfg), "--out", str(tmp_path / "r"), "-q", "--jobs", "1",
                           "--no-plots"], capsys)
    assert code == 0, err
    items = pd.read_csv(tmp_path / "r" / "items.csv")
    assert set(items.method) == {"test-mean", "telea"} and set(items.resolution) == {32}


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


def slow_script(sleep_s: float) -> str:
    """A script that registers `slow-mean` (sleeps ``sleep_s`` per item) and runs the CLI."""
    return textwrap.dedent(
        f"""
        import sys, time
        from bench.methods import Inpainter, register

        @register("slow-mean")
        class Slow(Inpainter):
            def _inpaint(self, image, mask):
                time.sleep({sleep_s})
                out = image.copy()
                out[mask] = 128
                return out

        if __name__ == "__main__":  # workers import this file too (spawn): they only register
            from bench.cli import main

            sys.exit(main(sys.argv[1:]))
        """
    )


@pytest.mark.slow
def test_resume_after_kill_9_redoes_nothing_and_leaves_no_torn_rows(photo_dir, tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(slow_script(0.4))
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


# -- fingerprinted records (defect 1) ---------------------------------------------------------
CORE = ["l1", "psnr", "ssim", "hole_l1", "hole_psnr"]
FILL_MODULE = "hrbench_test_fill"  # generated per test: the "code" of test-weighted


@register("test-weighted")
class Weighted(Inpainter):
    """Fills the hole with a grey from its weights file, its version, its code and the seed."""

    version = "1"
    code_modules = (FILL_MODULE,)

    @classmethod
    def weights_files(cls, context, arg=None):
        path = Path(context.weights_dir or ".") / "test-weights.bin"
        return [path] if path.is_file() else []

    @classmethod
    def unavailable_reason(cls, context, arg=None):
        return None if cls.weights_files(context) else "weights missing: test-weights.bin"

    def __init__(self, context=None, arg=None):
        import importlib

        super().__init__(context, arg)
        self.offset = importlib.reload(importlib.import_module(FILL_MODULE)).OFFSET
        self.base = self.weights_files(self.context)[0].read_bytes()[0]

    def _inpaint(self, image, mask):
        out = image.copy()
        out[mask] = (self.base + 3 * int(self.version) + self.offset + self.context.seed) % 256
        return out


def _write_fill_module(folder: Path, offset: int) -> None:
    # A different length each time: Python's bytecode cache keys on mtime and size.
    (folder / f"{FILL_MODULE}.py").write_text(f"OFFSET = {offset}{' ' * offset}\n")


@pytest.fixture
def fingerprint_env(photo_dir, tmp_path, monkeypatch):
    """Photos, a weights folder, mask files and the fill module; returns a config factory."""
    from bench.runner import RunConfig

    code = tmp_path / "code"
    code.mkdir()
    _write_fill_module(code, 10)
    monkeypatch.syspath_prepend(str(code))
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "test-weights.bin").write_bytes(bytes([100]))
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(3):
        m = np.zeros((96, 96), np.uint8)
        m[30 + 5 * i : 60, 25:70] = 255
        Image.fromarray(m).save(masks / f"img{i}.png")

    def config(out: str, **kw) -> RunConfig:
        base = dict(
            images=str(photo_dir),
            out=str(tmp_path / out),
            methods=["telea", "test-weighted"],
            resolutions=[32, 48],
            jobs=1,
            weights_dir=str(weights),
            metrics=list(CORE),
            plots=False,
        )
        return RunConfig(**{**base, **kw})

    return SimpleNamespace(config=config, code=code, weights=weights, masks=masks, tmp=tmp_path)


def _change_mask_file(env):
    m = np.zeros((96, 96), np.uint8)
    m[10:40, 10:40] = 255
    Image.fromarray(m).save(env.masks / "img0.png")


# (id, base settings, the change, which items are redone, what the reason names)
FINGERPRINT_CASES = [
    (
        "hole fraction",
        {},
        lambda e, mp, c: setattr(c, "hole_fraction", 0.25),
        "all",
        "protocol.hole_fraction",
    ),
    ("resize", {}, lambda e, mp, c: setattr(c, "resize", "area"), "all", "protocol.resize nearest -> area"),
    ("mask file", {"mask": "MASKS"}, lambda e, mp, c: _change_mask_file(e), "img0", "inputs.mask_sha256"),
    (
        "metric size",
        {},
        lambda e, mp, c: setattr(c, "metric_size", 24),
        "all",
        "protocol.metric_size none -> 24",
    ),
    ("seed", {}, lambda e, mp, c: setattr(c, "seed", 5), "all", "protocol.seed 0 -> 5"),
    (
        "weights file",
        {},
        lambda e, mp, c: (e.weights / "test-weights.bin").write_bytes(bytes([160])),
        "test-weighted",
        "method.weights_sha256.test-weights.bin changed",
    ),
    (
        "method version",
        {},
        lambda e, mp, c: mp.setattr(Weighted, "version", "2"),
        "test-weighted",
        "method.version",
    ),
    (
        "method code",
        {},
        lambda e, mp, c: _write_fill_module(e.code, 40),
        "test-weighted",
        "method.code_sha256",
    ),
]


@pytest.mark.parametrize("case", FINGERPRINT_CASES, ids=[c[0] for c in FINGERPRINT_CASES])
def test_each_fingerprinted_setting_redoes_exactly_its_items(case, fingerprint_env, monkeypatch):
    """Change one setting, rerun into the old folder: its items are redone (saying why), the
    others reused, and the numbers equal a fresh run's with the new setting (defect 1)."""
    from bench.runner import run

    _, base, change, redone, reason = case
    env = fingerprint_env
    base = {k: (str(env.masks) if v == "MASKS" else v) for k, v in base.items()}
    first = run(env.config("old", **base), progress=False)
    n = first.n_done
    assert n == 12 and first.n_failed == 0  # 2 methods x 3 photos x 2 resolutions
    assert run(env.config("old", **base), progress=False).counts_line() == f"0 done, {n} reused, 0 redone"

    cfg, fresh_cfg = env.config("old", **base), env.config("fresh", **base)
    change(env, monkeypatch, cfg)
    again = run(cfg, progress=False)
    change(env, monkeypatch, fresh_cfg)  # idempotent for the changes made outside the config
    fresh = run(fresh_cfg, progress=False)

    items = pd.read_csv(env.tmp / "old" / "items.csv")
    column = "image" if redone == "img0" else "method"
    expected = n if redone == "all" else int((items[column] == redone).sum())
    assert 0 < expected and (again.n_redone, again.n_reused, again.n_done) == (expected, n - expected, 0)
    assert len(again.redo_reasons) == 1 and reason in next(iter(again.redo_reasons)), again.redo_reasons
    assert again.counts_line().endswith(f"{expected} redone ({next(iter(again.redo_reasons))})")
    assert fresh.n_done == n
    for name, cols in (("metrics.csv", METRIC_KEY + ["value"]), ("items.csv", ["fingerprint"])):
        old, new = (pd.read_csv(env.tmp / d / name)[cols] for d in ("old", "fresh"))
        pd.testing.assert_frame_equal(old, new)
    assert verify(env.tmp / "old") == [] and verify(env.tmp / "fresh") == []


METRIC_KEY = ["method", "resolution", "image", "metric"]


def _snapshot(run: Path) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}


def test_cli_rerun_with_other_settings_redoes_and_says_why(photo_dir, tmp_path, capsys):
    """Defect 1 as reported: the second command used to reuse every item and keep the old table."""
    run = tmp_path / "run"
    base = ["run", "--images", str(photo_dir), "--out", str(run), "--methods", "telea", "--resolutions", "48"]
    base += ["--no-lpips", "--no-plots", "-q", "--jobs", "1"]
    code, out, err = _run(base, capsys)
    assert code == 0 and "(3 done, 0 reused, 0 redone;" in err, err
    code, out, err = _run([*base, "--hole-fraction", "0.25"], capsys)
    assert code == 0 and "(0 done, 0 reused, 3 redone (protocol.hole_fraction 0.333333 -> 0.25);" in err, err
    fresh = tmp_path / "fresh"
    _run([*base, "--hole-fraction", "0.25", "--out", str(fresh)], capsys)
    pd.testing.assert_frame_equal(pd.read_csv(run / "metrics.csv"), pd.read_csv(fresh / "metrics.csv"))
    assert (run / "table.md").read_text() == (fresh / "table.md").read_text()
    assert json.loads((run / "run.json").read_text())["config"]["hole_fraction"] == 0.25

    # --no-redo: one line naming the setting, exit 2, and the folder is left exactly as it was
    before = _snapshot(run)
    code, out, err = _run([*base, "--resize", "area", "--no-redo"], capsys)
    assert code == 2 and "Traceback" not in err
    lines = [x for x in err.splitlines() if x.startswith("hrbench: error:")]
    assert len(lines) == 1 and "protocol.resize nearest -> area" in lines[0], err
    assert _snapshot(run) == before
    code, out, err = _run([*base, "--hole-fraction", "0.25", "--no-redo"], capsys)
    assert code == 0 and "(0 done, 3 reused, 0 redone;" in err


def test_tables_hold_only_this_runs_items(fingerprint_env, caplog):
    """Records of methods not in this run stay on disk but never mix into its tables."""
    from bench.runner import run

    env = fingerprint_env
    run(env.config("r", methods=["telea"]), progress=False)
    with caplog.at_level("INFO", logger="bench.runner"):
        run(env.config("r", methods=["ns"], hole_fraction=0.25), progress=False)
    assert "6 earlier items in" in caplog.text and "left out of this run's tables" in caplog.text
    assert set(pd.read_csv(env.tmp / "r" / "metrics.csv").method) == {"ns"}
    both = run(env.config("r", methods=["telea", "ns"], hole_fraction=0.25), progress=False)
    assert both.counts_line() == "0 done, 6 reused, 6 redone (protocol.hole_fraction 0.333333 -> 0.25)"
    assert set(pd.read_csv(env.tmp / "r" / "metrics.csv").method) == {"telea", "ns"}


def test_folder_agrees_with_run_json_while_items_run(fingerprint_env):
    """A rerun with other settings killed (-9) mid-way used to leave run.json naming the new
    settings beside metrics.csv and table.md of the old ones, which `hrbench table` showed."""
    from bench.errors import UserError
    from bench.executors import InlineExecutor
    from bench.report import table
    from bench.runner import run

    seen = {}

    class Watching(InlineExecutor):
        """Looks at the folder as a kill -9 would leave it, when the first item starts."""

        def run(self, fn, tasks):
            folder = fingerprint_env.tmp / "r"
            seen.update(problems=verify(folder), csv=pd.read_csv(folder / "metrics.csv"))
            seen["table_md"] = (folder / "table.md").read_text() if (folder / "table.md").exists() else None
            try:
                seen["table"] = table(folder, "md")
            except UserError as exc:
                seen["table"] = str(exc)
            yield from super().run(fn, tasks)

    env = fingerprint_env
    run(env.config("r", methods=["telea", "ns"]), progress=False)
    old = pd.read_csv(env.tmp / "r" / "metrics.csv")
    # the hole changes for every item: while they run, none may be in the tables
    run(env.config("r", methods=["telea", "ns"], hole_fraction=0.25), progress=False, executor=Watching())
    assert seen["problems"] == []
    assert seen["csv"].empty
    assert seen["table_md"] is None
    assert "no finished item yet" in seen["table"]  # not the old numbers
    # a resume with unchanged settings keeps the items that match in the tables meanwhile
    seen.clear()
    run(env.config("r", methods=["telea", "ns", "test-mean"], hole_fraction=0.25), progress=False,
        executor=Watching())
    assert seen["problems"] == [] and set(seen["csv"].method) == {"telea", "ns"}
    assert len(seen["csv"]) == len(old)
    assert "telea" in seen["table_md"] and "test-mean" not in seen["table_md"]


def test_unreadable_photo_is_skipped_and_listed(photo_dir, tmp_path, capsys):
    """Defect 7: one broken file used to abort the whole run."""
    (photo_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    run = tmp_path / "run"
    args = ["run", "--images", str(photo_dir), "--out", str(run), "--methods", "test-mean"]
    code, out, err = _run(
        [*args, "--resolutions", "32", "--no-lpips", "--no-plots", "-q", "--jobs", "1"], capsys
    )
    assert code == 0, err
    assert "skipped image broken: " in err and "cannot read image" in err
    info = json.loads((run / "run.json").read_text())
    assert [s["image"] for s in info["unreadable_images"]] == ["broken"]
    assert "cannot read image" in info["unreadable_images"][0]["reason"]
    assert set(pd.read_csv(run / "items.csv").image) == {"img0", "img1", "img2"}
    only_broken = tmp_path / "only_broken"
    only_broken.mkdir()
    (photo_dir / "broken.png").rename(only_broken / "broken.png")
    args = ["run", "--images", str(only_broken), "--out", str(tmp_path / "r2"), "--methods", "test-mean"]
    code, out, err = _run([*args, "--resolutions", "32", "-q", "--jobs", "1"], capsys)
    assert code == 2 and "no photo could be read; the first: " in err and "Traceback" not in err


# -- executors and clean shutdown (defect 3) --------------------------------------------------
def test_local_pool_reports_failures_and_survives_a_dead_worker():
    from bench.executors import InlineExecutor, LocalPool, TaskFailed

    # eval: a function the spawned workers can import without importing this test module
    die = "__import__('os').kill(__import__('os').getpid(), 9)"  # e.g. killed for memory
    tasks = [f"{x} * {x}" for x in range(6)] + ["1 / 0", die]
    with LocalPool(2) as pool:
        got = dict(pool.run(eval, tasks))
        pids = pool.pids
    assert {t: got[t] for t in tasks[:6]} == {f"{x} * {x}": x * x for x in range(6)}
    assert got["1 / 0"].error == "ZeroDivisionError: division by zero" and "Traceback" in got["1 / 0"].detail
    assert isinstance(got[die], TaskFailed) and "worker process died (exit code -9)" in got[die].error
    assert len(pids) == 2 and not [p for p in pids if _alive(p)]
    with InlineExecutor() as inline:
        assert list(inline.run(eval, ["1 + 1", "2 + 2"])) == [("1 + 1", 2), ("2 + 2", 4)]


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields_ = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields_[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _start_pool_run(photo_dir: Path, tmp_path: Path) -> tuple[subprocess.Popen, Path, list[int]]:
    """`hrbench run` with 2 worker processes of a slow method, once both are busy."""
    script = tmp_path / "pool_run.py"
    script.write_text(slow_script(1.0))
    run = tmp_path / "run"
    args = [sys.executable, str(script), "run", "--images", str(photo_dir), "--out", str(run)]
    args += [
        "--resolutions",
        "16",
        "24",
        "32",
        "40",
        "--methods",
        "slow-mean",
        "--metrics",
        "l1",
        "--no-plots",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(
        [*args, "-q", "--jobs", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(run.glob("records/*/*/*.json")):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    kids = _children(proc.pid)
    assert len(kids) >= 2, "the workers (and multiprocessing's resource tracker) should be running"
    return proc, run, kids


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.time() + timeout
    while time.time() < deadline and [p for p in pids if _alive(p)]:
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


@pytest.mark.slow  # starts `hrbench run` and its workers: tens of seconds of imports on 2 cores
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_the_run_takes_its_workers_down(photo_dir, tmp_path):
    """Defect 3: workers (~700 MB each) and the resource tracker outlived a killed parent."""
    proc, run, kids = _start_pool_run(photo_dir, tmp_path)
    proc.kill()
    proc.wait()
    assert _wait_gone(kids, timeout=5) == []


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_stops_within_seconds_and_keeps_finished_items(photo_dir, tmp_path):
    proc, run, kids = _start_pool_run(photo_dir, tmp_path)
    t0 = time.time()
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the whole foreground group
    _, err = proc.communicate(timeout=30)
    # Most of the time left is the interpreter unloading torch; the workers go at once.
    assert time.time() - t0 < 10 and proc.returncode == 130, err
    assert "interrupted; rerun the same command to resume" in err
    assert "Traceback" not in err and "leaked" not in err
    assert _wait_gone(kids, timeout=5) == []
    done = list(run.glob("records/*/*/*.json"))
    items = pd.read_csv(run / "items.csv")
    assert 1 <= len(done) == len(items) < 12 and (items.status == "ok").all()
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"


def test_run_with_other_metrics_than_the_table_ones_finishes(photo_dir, tmp_path, capsys):
    """`run --metrics l1 psnr` did all its items, then ended in "hrbench: error: --metrics:
    'ssim' not in this run" (exit 2) writing table.md; `table` without --metrics did too."""
    run = tmp_path / "r"
    args = ["run", "--images", str(photo_dir), "--out", str(run), "--methods", "test-mean"]
    args += ["--resolutions", "32"]
    code, out, err = _run([*args, "--metrics", "l1", "psnr", "-q", "--no-plots", "--jobs", "1"], capsys)
    assert code == 0, err
    assert "| Method | 32 L1 ↓ | 32 PSNR ↑ |\n" in (run / "table.md").read_text()
    assert _run(["table", str(run), "--format", "csv"], capsys)[1].count(",32,") == 2
    code, out, err = _run([*args, "--metrics", "hole_l1", "-q", "--no-plots", "--jobs", "1"], capsys)
    assert code == 0 and "| Method | 32 hole L1 ↓ |\n" in (run / "table.md").read_text(), err
    code, out, err = _run(["table", str(run), "--metrics", "ssim"], capsys)
    assert code == 2 and "--metrics: 'ssim' not in this run; it has hole_l1" in err


def test_a_resolution_given_twice_is_run_once(photo_dir, tmp_path, capsys):
    """`--resolutions 32,32` ran every item twice and the table said "n = 6 images" for 3."""
    run = tmp_path / "r"
    args = ["run", "--images", str(photo_dir), "--out", str(run), "--methods", "test-mean"]
    code, out, err = _run([*args, "--resolutions", "32,48", "32", "-q", "--no-plots", "--jobs", "1"], capsys)
    assert code == 0 and "(6 done, 0 reused, 0 redone;" in err, err
    assert len(pd.read_csv(run / "data" / "manifest.csv")) == 6 and len(pd.read_csv(run / "items.csv")) == 6
    assert "n = 3 images" in (run / "table.md").read_text()
    assert json.loads((run / "run.json").read_text())["config"]["resolutions"] == [32, 48]


def test_metrics_of_a_cuda_run_fall_back_to_cpu_on_a_worker_without_cuda(monkeypatch):
    """A --device cuda cluster run sends classical items to any worker; one without CUDA
    computes their model-based metrics on its CPU instead of failing the item."""
    import torch

    from bench import runner

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runner._metric_device("cuda") == "cpu"
    assert runner._metric_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runner._metric_device("cuda") == "cuda"
