"""Automatic precision: bf16 only where the GPU computes it natively (no CUDA needed: the queries are faked)."""
import contextlib

import pytest
import torch

from featurestore import devices
from featurestore.devices import Runtime


@pytest.mark.parametrize("native, expect", [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_precision_skips_emulated_bf16(monkeypatch, native, expect):
    asked = []

    def is_bf16_supported(including_emulation=True):
        asked.append(including_emulation)
        # a pre-Ampere GPU (V100, T4): bf16 "supported" only by emulation
        return native or including_emulation

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    runtime = Runtime.create("auto", "auto")
    assert runtime.device.type == "cuda" and runtime.autocast_dtype == expect
    assert asked == [False]
    assert Runtime.create("auto", "bf16").autocast_dtype == torch.bfloat16  # asked for explicitly: honoured


def test_cpu_runs_in_float32():
    assert Runtime.create("cpu", "auto").autocast_dtype is None
    assert not devices.Runtime.create("cpu").channels_last
