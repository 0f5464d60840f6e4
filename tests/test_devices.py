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


# --- batch sizes from the GPU's memory (the CUDA queries are faked) ------------------------------------------

GIB, MIB = 2**30, 2**20


def test_memory_batch_size_fills_half_the_free_memory_within_the_cap(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (40 * GIB, 80 * GIB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 2 * GIB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 1 * GIB)
    cuda = torch.device("cuda")
    # (40 free + 1 held unused by the allocator) / 2 - 1 fixed = 19.5 GiB, over 100 MiB an item
    assert devices.memory_batch_size(100 * MIB, 1 * GIB, cuda, cap=256) == 199
    assert devices.memory_batch_size(100 * MIB, 1 * GIB, cuda, cap=64) == 64
    assert devices.memory_batch_size(100 * GIB, 1 * GIB, cuda, cap=64) == 1  # never below one


def test_measure_item_bytes_takes_the_slope_and_keeps_the_peak(monkeypatch):
    state = {"peak": 9 * GIB}  # an earlier run peaked higher than anything measured here

    def run(n):
        state["peak"] = max(state["peak"], 1 * GIB + 300 * MIB + n * 50 * MIB)

    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1 * GIB)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: state["peak"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: state.update(peak=0))
    cuda = torch.device("cuda")
    per_item, fixed = devices.measure_item_bytes(run, cuda)
    assert (per_item, fixed) == (50 * MIB, 300 * MIB)
    assert devices.peak_allocated(cuda) == 9 * GIB  # the reset did not lose the earlier peak


def test_batch_size_auto_is_the_fixed_cpu_batch_on_a_cpu_and_measured_on_a_gpu(monkeypatch):
    from featurestore.extractors import create, deep

    assert create("imagenet", device="cpu").batch_size == 16
    assert create("clip", device="cpu", random_init=True).batch_size == 32
    assert create("lpips", device="cpu", random_init=True).batch_size == 8
    assert create("imagenet", device="cpu", batch_size=5).batch_size == 5

    # the GPU path, run on the CPU: the probe computes real batches of synthetic items of `probe_shape`
    ex = create("lpips", device="cpu", random_init=True, nets=["alex"], size=64)
    seen = []

    def measure(run, device):
        for n in (1, 3):
            run(n)
            seen.append(n)
        return 7 * MIB, 3 * MIB

    monkeypatch.setattr(deep, "measure_item_bytes", measure)
    monkeypatch.setattr(deep, "memory_batch_size", lambda per_item, fixed, device, cap: (per_item, fixed, cap))
    assert ex.gpu_batch_size() == (7 * MIB, 3 * MIB, 64) and seen == [1, 3]
    assert ex.probe_shape == (64, 64) and not ex.probing
    assert create("dists", device="cpu", random_init=True).probe_shape == (256, 512)


class _Inputs:
    def __init__(self, images):
        self.images = images

    def image(self, key):
        return self.images[key]

    def pair(self, key):
        from featurestore.io import DecodedPair

        return DecodedPair(key, self.images[key], self.images[key])


def test_batch_order_puts_shapes_together_on_a_gpu_only():
    import numpy as np

    from featurestore.extractors import create
    from featurestore.io import DecodedImage

    shapes = {"a": (300, 400), "b": (400, 300), "c": (600, 800), "d": (300, 400), "e": (400, 300)}
    inputs = _Inputs({k: DecodedImage(k, np.zeros((*s, 3), np.uint8)) for k, s in shapes.items()})
    for name in ("imagenet", "lpips"):  # an image-level and a pair-level network
        ex = create(name, device="cpu", random_init=name != "imagenet")
        assert ex.batch_order(list("abcde"), inputs) == list("abcde")  # CPU: batches exactly as they were
        ex._runtime = Runtime(torch.device("cuda"), torch.bfloat16, True)
        assert ex.batch_order(list("abcde"), inputs) == list("adcbe")  # 3:4 (small, small, large), then 4:3


def test_pair_metric_splits_a_shape_group_to_its_pixel_budget():
    from featurestore.extractors import create

    ex = create("lpips", device="cpu", random_init=True, size=256, batch_size=2)
    groups = [((512, 512), list(range(3))), ((128, 128), list(range(3, 20)))]
    # a 512x512 pair holds 4 of the 256x256 the batch was measured on: one a batch; 128x128: 8 a batch
    assert ex._within_memory(groups) == [((512, 512), [0]), ((512, 512), [1]), ((512, 512), [2]),
                                         ((128, 128), list(range(3, 11))), ((128, 128), list(range(11, 19))),
                                         ((128, 128), [19])]


def test_to_host_keeps_dtypes():
    out = devices.to_host({"a": torch.arange(3, dtype=torch.float64), "b": torch.ones(2, 2)})
    assert out["a"].dtype.name == "float64" and out["b"].dtype.name == "float32" and out["a"].tolist() == [0, 1, 2]
