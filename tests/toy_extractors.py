"""The test suite's one set of toy extractors: cheap, deterministic, one of each kind.

- `ToyMean` (image-level): per-image channel means (a dense block), `scale`d; pair columns: the summed
  difference and the |d - r| block. `ToyMean.calls` records the size of every `compute_images` batch.
- `ToyMse` (pair-level, like every full-reference metric): mean squared error, and a column that is NaN
  for flat references; asserts the two images have one size (the store resizes the degraded one), and
  raises on every batch holding a pair whose reference has sha256 `fail_on`.

`batch_size` is a runtime key of both (not part of the folder name). `TOY_SLEEP` (seconds per call, from
the environment, so not part of the config) slows them down for tests that kill a run from outside.
They are not in the extractor registry: tests that name them in a config register them for their own
duration (`registered_toys`, or `EXTRACTORS.registered(...)`), so they never leak into other tests.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from featurestore.extractors import EXTRACTORS, Column, ImageExtractor, PairExtractor


def _nap() -> None:
    time.sleep(float(os.environ.get("TOY_SLEEP", "0")))


class ToyMean(ImageExtractor):
    name = "toymean"
    default_config = {"scale": 1.0, "batch_size": 16}
    runtime_keys = ("batch_size",)
    calls: list = []

    def __init__(self, settings=None, **config):
        super().__init__(settings, **config)
        self.batch_size = int(self.config["batch_size"])

    def image_columns(self):
        return [Column("mean", 3)]

    def pair_columns(self):
        return [Column("delta"), Column("absdiff", 3)]

    def compute_images(self, images):
        _nap()
        ToyMean.calls.append(len(images))
        return {"mean": np.stack([im.float01.mean(axis=(0, 1)) for im in images]) * self.config["scale"]}

    def derive_pairs(self, ref, dist):
        return {"delta": (dist["mean"] - ref["mean"]).sum(1), "absdiff": np.abs(dist["mean"] - ref["mean"])}


class ToyMse(PairExtractor):
    name = "toymse"
    default_config = {"fail_on": "", "device": "cpu", "batch_size": 16}
    runtime_keys = ("batch_size", "device")

    def __init__(self, settings=None, **config):
        super().__init__(settings, **config)
        self.batch_size = int(self.config["batch_size"])

    def pair_columns(self):
        return [Column("mse"), Column("mse_if_busy")]

    def compute_pairs(self, pairs):
        _nap()
        if any(p.ref.sha256 == self.config["fail_on"] for p in pairs):
            raise ValueError("planted failure")
        for p in pairs:
            assert p.ref.rgb.shape == p.dist.rgb.shape, "full-reference metric on images of different sizes"
        mse = np.array([np.mean((p.ref.float01 - p.dist.float01) ** 2) for p in pairs])
        busy = np.array([p.ref.float01.std() > 0.2 for p in pairs])
        return {"mse": mse, "mse_if_busy": np.where(busy, mse, np.nan)}


TOYS = (ToyMean, ToyMse)


@pytest.fixture(scope="module")
def registered_toys():
    """The toy extractors in the registry (so configs can name them) while the test module runs."""
    with EXTRACTORS.registered(*TOYS):
        yield
