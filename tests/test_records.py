"""The run-folder format: fingerprints, the named difference, reuse decisions, atomic records."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bench import records


def _settings(**protocol):
    run_settings = {
        "protocol": {
            "resize": "nearest",
            "mask": "centre",
            "hole_fraction": 1 / 3,
            "seed": 0,
            "metric_size": None,
            **protocol,
        },
        "metrics": {"names": ["l1"], "conventions": {"l1": "mean |out - gt|"}},
        "methods": {"telea": {"name": "telea", "code_sha256": "a" * 64, "version": "1"}},
    }
    return run_settings, records.item_settings(run_settings, "telea", 64, "b" * 64, "c" * 64)


def test_fingerprint_is_canonical_and_sensitive():
    _, s = _settings()
    reordered = json.loads(json.dumps(s))
    reordered["protocol"] = dict(reversed(list(reordered["protocol"].items())))
    assert records.fingerprint(reordered) == records.fingerprint(s)
    _, other = _settings(hole_fraction=0.25)
    assert records.fingerprint(other) != records.fingerprint(s)
    with pytest.raises(ValueError):  # NaN has no canonical text: refused, not hashed
        records.fingerprint({"x": float("nan")})


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda s: s["protocol"].update(hole_fraction=0.25), "protocol.hole_fraction 0.333333 -> 0.25"),
        (lambda s: s["protocol"].update(resize="area"), "protocol.resize nearest -> area"),
        (lambda s: s["protocol"].update(metric_size=32), "protocol.metric_size none -> 32"),
        (lambda s: s["inputs"].update(mask_sha256="d" * 64), "inputs.mask_sha256 changed"),
        (lambda s: s["method"].update(version="2"), "method.version 1 -> 2"),
        (lambda s: s["method"].update(code_sha256="e" * 64), "method.code_sha256 changed"),
        (lambda s: s["metrics"]["names"].append("ssim"), "metrics.names ['l1'] -> ['l1', 'ssim']"),
        (lambda s: s["method"].pop("version"), "method.version 1 -> absent"),
    ],
)
def test_difference_names_the_first_changed_setting(change, expected):
    _, old = _settings()
    new = json.loads(json.dumps(old))
    change(new)
    assert records.difference(old, new) == expected
    assert records.difference(old, old) is None


def test_difference_puts_protocol_before_inputs():
    """A new resize mode also changes the ground truth's sha256; the reason names the cause."""
    _, old = _settings()
    new = json.loads(json.dumps(old))
    new["protocol"]["resize"] = "area"
    new["inputs"]["gt_sha256"] = "f" * 64
    assert records.difference(old, new) == "protocol.resize nearest -> area"


def test_reuse_decision(tmp_path):
    _, s = _settings()
    fp = records.fingerprint(s)
    ok = {"status": "ok", "fingerprint": fp, "settings": s, "output": "outputs/x.png"}
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "x.png").write_bytes(b"png")
    assert records.reuse_decision(None, s, fp, tmp_path, True) == ("new", None)
    assert records.reuse_decision(ok, s, fp, tmp_path, True) == ("reuse", None)
    failed = {**ok, "status": "failed"}
    assert records.reuse_decision(failed, s, fp, tmp_path, True) == ("redo", "failed before")
    old_format = {"status": "ok", "metrics": {}}  # a record written before fingerprints
    why = records.reuse_decision(old_format, s, fp, tmp_path, True)
    assert why == ("redo", "no settings in the old record")
    (tmp_path / "outputs" / "x.png").unlink()
    assert records.reuse_decision(ok, s, fp, tmp_path, True) == ("redo", "output image missing")
    assert records.reuse_decision(ok, s, fp, tmp_path, False) == ("reuse", None)
    _, changed = _settings(seed=1)
    assert records.reuse_decision(ok, changed, records.fingerprint(changed), tmp_path, True) == (
        "redo",
        "protocol.seed 0 -> 1",
    )


def test_records_round_trip_and_tables(tmp_path):
    _, s = _settings()
    rec = {
        "method": "a:b/c",
        "resolution": 64,
        "image": "img0",
        "status": "ok",
        "output": "",
        "runtime_s": 0.1,
        "peak_rss_mb": 50.0,
        "gpu_peak_mb": None,
        "changed_known": False,
        "error": "",
        "metrics": {"l1": 1.5, "psnr": 30.0},
        "fingerprint": records.fingerprint(s),
        "settings": s,
    }
    path = records.write_record(tmp_path, rec)
    assert path == tmp_path / "records" / "a_b_c" / "64" / "img0.json"
    assert records.read_record(path) == rec
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    path.write_text('{"torn": ')
    assert records.read_record(path) is None
    assert records.read_record(tmp_path / "missing.json") is None

    failed = {**rec, "image": "img1", "status": "failed", "metrics": {}, "error": "boom"}
    records.write_tables(tmp_path, [failed, rec])
    items = pd.read_csv(tmp_path / "items.csv")
    assert list(items.image) == ["img0", "img1"] and list(items.columns) == records.ITEM_COLUMNS
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert set(metrics.image) == {"img0"}
    assert dict(zip(metrics.metric, metrics.value, strict=True)) == {"l1": 1.5, "psnr": 30.0}


def test_record_paths_skip_temporary_files_of_interrupted_writes(tmp_path):
    rec = records.record_path(tmp_path, "telea", 1024, "img0")
    rec.parent.mkdir(parents=True)
    rec.write_text("{}")
    (rec.parent / ".img1.json.0a1b2c3d4e5f.json").write_text("{")  # left by a kill -9
    assert records.record_paths(tmp_path) == [rec]
