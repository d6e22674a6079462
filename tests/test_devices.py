"""bench.devices: the one place `auto|cpu|cuda` becomes a device."""

from __future__ import annotations

import pytest

from bench import devices
from bench.errors import UserError


@pytest.mark.parametrize(
    "visible, name, expected",
    [
        (False, "auto", "cpu"),
        (True, "auto", "cuda"),
        (True, "cpu", "cpu"),
        (False, "cpu", "cpu"),
        (True, "cuda", "cuda"),
    ],
)
def test_resolve(monkeypatch, visible, name, expected):
    monkeypatch.setattr(devices, "cuda_available", lambda: visible)
    assert devices.resolve_device(name) == expected


def test_cuda_without_a_device_is_a_user_error(monkeypatch):
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    with pytest.raises(UserError, match=r"--device cuda: torch sees no CUDA device; use --device cpu"):
        devices.resolve_device("cuda")


def test_unknown_name(monkeypatch):
    with pytest.raises(UserError, match=r"--device 'gpu': choose one of auto, cpu, cuda"):
        devices.resolve_device("gpu")


def test_two_stage_reports_the_same_reason(monkeypatch):
    from bench.methods import MethodContext, unavailable_reason

    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    assert "torch sees no CUDA device" in unavailable_reason("two-stage", MethodContext(device="cuda"))
