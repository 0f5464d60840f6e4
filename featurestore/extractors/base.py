"""The extractor contract and the registry: adding an extractor is one module plus one `@register` line.

Two kinds:
- image-level (`level = "image"`): `compute_images(images)` returns per-image columns, stored once per
  distinct image (keyed by sha256); `derive_pairs(ref, dist)` turns the cached per-image columns of the
  two sides into pair columns (cosine, |d-r|, d*r, KL, ...), stored keyed by pair_id.
- pair-level (`level = "pair"`): `compute_pairs(pairs)` returns pair columns directly (FR metrics).

Columns are `{name: np.ndarray}`: shape (n,) -> float64 scalar; shape (n, d) -> dense float32 block
(stored as an Arrow fixed-size list). `schema()` declares them up front so empty shards, views and
tests agree before anything runs.
"""
from __future__ import annotations

import hashlib
import json
from abc import ABC
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..io import DecodedImage, DecodedPair

REGISTRY: dict[str, type["Extractor"]] = {}


def register(cls: type["Extractor"]) -> type["Extractor"]:
    if cls.name in REGISTRY:
        raise ValueError(f"extractor {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls


@dataclass(frozen=True)
class Column:
    name: str
    dim: int = 0  # 0 = scalar float64; d > 0 = dense float32 vector of length d


@dataclass(frozen=True)
class WeightSource:
    """Where an extractor's pretrained weights come from, for `siqa weights` and the pre-flight check."""

    what: str          # e.g. "open_clip ViT-L-14 openai"
    found: str | None  # path or cache it will load from; None if missing
    hint: str = ""     # what to download and where to put it when missing


class Extractor(ABC):
    name: ClassVar[str]
    version: ClassVar[int] = 1
    level: ClassVar[str] = "pair"  # "pair" or "image"
    default_config: ClassVar[dict] = {}
    #: images are fed at most this many per call (memory bound); the store chunks accordingly
    batch_size: ClassVar[int] = 16

    def __init__(self, **config):
        unknown = set(config) - set(self.default_config)
        if unknown:
            raise ValueError(f"extractor {self.name}: unknown config keys {sorted(unknown)}")
        self.config = {**self.default_config, **config}

    # --- identity -------------------------------------------------------------------------------
    @property
    def config_hash(self) -> str:
        blob = json.dumps(self.config, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:8]

    @property
    def folder(self) -> str:
        return f"{self.name}-v{self.version}-{self.config_hash}"

    # --- schema ---------------------------------------------------------------------------------
    def image_columns(self) -> list[Column]:
        """Per-image columns (image-level extractors only)."""
        return []

    def pair_columns(self) -> list[Column]:
        raise NotImplementedError

    # --- compute --------------------------------------------------------------------------------
    def compute_images(self, images: list[DecodedImage]) -> dict[str, np.ndarray]:
        raise NotImplementedError(f"{self.name} is not an image-level extractor")

    def derive_pairs(self, ref: dict[str, np.ndarray], dist: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError(f"{self.name} is not an image-level extractor")

    def compute_pairs(self, pairs: list[DecodedPair]) -> dict[str, np.ndarray]:
        raise NotImplementedError(f"{self.name} is not a pair-level extractor")

    # --- weights --------------------------------------------------------------------------------
    def weight_sources(self) -> list[WeightSource]:
        """Pretrained weights this extractor needs; empty for formula extractors."""
        return []

    def close(self) -> None:
        """Release models/GPU memory; called when the store is done with this extractor."""


def create(name: str, **config) -> Extractor:
    from . import load_all

    load_all()
    if name not in REGISTRY:
        raise KeyError(f"unknown extractor {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**config)


def check_columns(extractor: Extractor, columns: list[Column], values: dict[str, np.ndarray], n: int) -> None:
    """Fail loudly when an extractor returns something other than what its schema declares."""
    want = {c.name: c for c in columns}
    if set(values) != set(want):
        raise RuntimeError(f"{extractor.name}: returned columns {sorted(values)}, schema says {sorted(want)}")
    for name, col in want.items():
        shape = np.shape(values[name])
        expect = (n,) if col.dim == 0 else (n, col.dim)
        if shape != expect:
            raise RuntimeError(f"{extractor.name}.{name}: shape {shape}, expected {expect}")
