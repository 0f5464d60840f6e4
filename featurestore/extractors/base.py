"""The extractor contract and the registry: adding an extractor is one module in this package whose class
derives from `ImageExtractor` or `PairExtractor` and carries one `@EXTRACTORS.register()` line.

Two kinds, two base classes:
- `ImageExtractor`: `compute_images(images)` returns per-image columns, stored once per distinct image
  (keyed by sha256); `derive_pairs(ref, dist)` turns the cached per-image columns of the two sides into
  pair columns (cosine, |d-r|, d*r, KL, ...), stored keyed by pair_id.
- `PairExtractor`: `compute_pairs(pairs)` returns pair columns directly (FR metrics).

The base classes also say, for the store, which keys a set of pairs holds and how to compute a batch of
them, so the store never asks which kind an extractor is.

Columns are `{name: np.ndarray}`: shape (n,) -> float64 scalar; shape (n, d) -> dense float32 block
(stored as an Arrow fixed-size list). `image_columns()` and `pair_columns()` declare them up front so
shards, views and tests agree before anything runs.

An extractor's store folder is `<name>-v<version>-<config_hash>`: the hash of its config without
`runtime_keys` (settings that change where or how fast it runs, not what it computes), plus whatever
`hashed_content()` adds (content a config value only points to, such as a question file).
"""
from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import pandas as pd

from ..io import DecodedImage, DecodedPair
from ..registry import Registry
from ..settings import Strict, nested_model, validate

IMAGE_KEY, PAIR_KEY = "sha256", "pair_id"

#: every extractor, by name; the modules of this package are imported on first use
EXTRACTORS: Registry[type["Extractor"]] = Registry("extractor", package="featurestore.extractors")


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


class ExtractorSettings(Strict):
    """An extractor's settings (its `[extractors.<name>]` table less `enabled`); each extractor declares its
    own subclass as `Settings`, next to its class, with a description per field (`siqa config schema`)."""


def settings_from_defaults(owner: type, defaults: dict) -> type[ExtractorSettings]:
    """A `Settings` model for an extractor that declares only a `default_config` dict (a plug-in's or a
    test's): each key takes the kind of its default (a None default takes anything)."""
    fields = {key: (object if value is None else type(value), value) for key, value in defaults.items()}
    return nested_model(owner, ExtractorSettings, fields, f"The settings of {owner.__name__}, from its default_config.")


class DecodedInputs(Protocol):
    """What the store hands an extractor for one chunk of pairs (see `featurestore.store.execute`)."""

    def image(self, sha256: str) -> DecodedImage | None: ...
    def pair(self, pair_id: str) -> DecodedPair | None: ...
    def image_label(self, sha256: str, extractor: str) -> str: ...
    def pair_label(self, pair_id: str, extractor: str) -> str: ...


class Extractor(ABC):
    name: ClassVar[str]
    version: ClassVar[int] = 1
    #: the store level its computed keys land in ("image" or "pair"); set by the two base classes
    level: ClassVar[str]
    #: the key column of that level
    key: ClassVar[str]
    #: every level it stores
    levels: ClassVar[tuple[str, ...]]
    #: the settings schema (declared by each extractor); `default_config` is its defaults as a dict
    Settings: ClassVar[type[ExtractorSettings]] = ExtractorSettings
    default_config: ClassVar[dict] = {}
    #: config keys that change where or how fast it runs, not what it computes: not part of the folder hash
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    #: images are fed at most this many per call (memory bound); the store chunks accordingly (the network
    #: extractors work it out per device: `extractors.deep`)
    batch_size: ClassVar[int] = 16

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "Settings" in cls.__dict__:
            cls.default_config = cls.Settings().model_dump()
        elif "default_config" in cls.__dict__:
            cls.Settings = settings_from_defaults(cls, cls.default_config)

    def __init__(self, settings: ExtractorSettings | None = None, **config):
        """From validated `settings` (what `load_settings` built from the config file), or from keyword
        values, validated here (a ValueError naming the key)."""
        if settings is None:
            settings = validate(self.Settings, config, f"extractor {self.name}", "", error=ValueError)
        elif config:
            raise TypeError(f"extractor {self.name}: give settings or keyword values, not both")
        self.settings = settings
        self.config = settings.model_dump()

    # --- identity -------------------------------------------------------------------------------
    def hashed_content(self):
        """Content the outputs depend on beyond the config values (JSON-able); None when there is none."""
        return None

    @property
    def config_hash(self) -> str:
        identity = {k: v for k, v in self.config.items() if k not in self.runtime_keys}
        extra = self.hashed_content()
        blob = identity if extra is None else [identity, extra]
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:8]

    @property
    def folder(self) -> str:
        return f"{self.name}-v{self.version}-{self.config_hash}"

    # --- schema ---------------------------------------------------------------------------------
    def image_columns(self) -> list[Column]:
        """Per-image columns (image-level extractors only)."""
        return []

    @abstractmethod
    def pair_columns(self) -> list[Column]:
        """Pair columns, stored keyed by pair_id."""

    def columns(self, level: str) -> list[Column]:
        return self.image_columns() if level == "image" else self.pair_columns()

    # --- what the store asks ----------------------------------------------------------------------
    @abstractmethod
    def keys_in(self, rows: pd.DataFrame) -> list[str]:
        """The distinct keys (of `level`) that pair rows hold, in the order the store computes them."""

    @abstractmethod
    def needs(self, rows: pd.DataFrame, missing: set[str]) -> np.ndarray:
        """Per pair row: does it hold a key of `missing`?"""

    @abstractmethod
    def ready(self, key: str, inputs: DecodedInputs) -> bool:
        """Is everything `key` needs decoded?"""

    @abstractmethod
    def label(self, key: str, inputs: DecodedInputs) -> str:
        """How a failure of `key` is reported: its file(s) and this extractor."""

    @abstractmethod
    def compute_keys(self, keys: list[str], inputs: DecodedInputs) -> dict[str, np.ndarray]:
        """The `level` columns of `keys`."""

    def batch_order(self, keys: list[str], inputs: DecodedInputs) -> list[str]:
        """The order in which the store cuts a chunk's ready `keys` into batches of `batch_size`: as given,
        unless an extractor batches better otherwise (a GPU network: keys of one input shape together)."""
        return keys

    # --- weights --------------------------------------------------------------------------------
    def weight_sources(self) -> list[WeightSource]:
        """Pretrained weights this extractor needs; empty for formula extractors."""
        return []

    def close(self) -> None:
        """Release models/GPU memory; called when the store is done with this extractor."""


class ImageExtractor(Extractor):
    """Computes per-image columns once per distinct image; pair columns are derived from them."""

    level, key, levels = "image", IMAGE_KEY, ("image", "pair")

    @abstractmethod
    def image_columns(self) -> list[Column]: ...

    @abstractmethod
    def compute_images(self, images: list[DecodedImage]) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def derive_pairs(self, ref: dict[str, np.ndarray], dist: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Pair columns from the per-image columns of the references and the degraded images."""

    def keys_in(self, rows):
        return list(dict.fromkeys(list(rows.ref_sha256) + list(rows.dist_sha256)))

    def needs(self, rows, missing):
        return (rows.ref_sha256.isin(missing) | rows.dist_sha256.isin(missing)).to_numpy()

    def ready(self, key, inputs):
        return inputs.image(key) is not None

    def label(self, key, inputs):
        return inputs.image_label(key, self.name)

    def compute_keys(self, keys, inputs):
        return self.compute_images([inputs.image(k) for k in keys])


class PairExtractor(Extractor):
    """Computes pair columns from both decoded images (the degraded one resized to the reference)."""

    level, key, levels = "pair", PAIR_KEY, ("pair",)

    @abstractmethod
    def compute_pairs(self, pairs: list[DecodedPair]) -> dict[str, np.ndarray]: ...

    def keys_in(self, rows):
        return list(rows.pair_id)

    def needs(self, rows, missing):
        return rows.pair_id.isin(missing).to_numpy()

    def ready(self, key, inputs):
        return inputs.pair(key) is not None

    def label(self, key, inputs):
        return inputs.pair_label(key, self.name)

    def compute_keys(self, keys, inputs):
        return self.compute_pairs([inputs.pair(k) for k in keys])


def create(name: str, **config) -> Extractor:
    return EXTRACTORS.get(name)(**config)


def scalar_columns(rows: list[dict[str, float]], names) -> dict[str, np.ndarray]:
    """Columns `names` (float64, one value a row) of rows computed one pair (or image) at a time."""
    return {name: np.array([row[name] for row in rows], dtype=np.float64) for name in names}


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
