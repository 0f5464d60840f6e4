"""What every neural-network extractor shares: runtime settings, lazy loading, weights resolution, and
the vector arithmetic that turns two cached per-image embeddings into pair features."""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from ..devices import Runtime
from ..weights import WeightSpec, hf_cached_folder, located, resolve
from .base import Extractor, ExtractorSettings, WeightSource

RANDOM_INIT = "random init (timing and tests only: values are meaningless)"
Precision = Literal["auto", "fp32", "bf16", "fp16"]


class DeepSettings(ExtractorSettings):
    """What every network extractor takes besides its own settings: where and how fast it runs."""

    random_init: bool = Field(False, description="build the architecture without weights: timing and tests only, "
                                                 "values are meaningless")
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda or cuda:N; not hashed")
    precision: Precision = Field("auto", description="autocast precision: auto (bf16/fp16 on a GPU, fp32 on a CPU), "
                                                     "fp32, bf16 or fp16; not hashed")
    batch_size: int = Field(16, ge=1, description="images per forward pass; not hashed")


class DeepExtractor(Extractor):
    """A neural-network extractor. Subclasses declare `weight_specs()` and build their networks in `load()`.

    `random_init = true` builds the same architecture without weights: same compute, meaningless values, for
    benchmarks on machines with no model hub. The model loads on the first batch, after `check_weights`
    has vetted every extractor, so a missing file stops the run before any work."""

    #: settings that change where/how fast a model runs, not what it computes: left out of the store folder hash,
    #: so moving from CPU to GPU or changing the batch size reuses the features already stored
    runtime_keys = ("device", "precision", "batch_size")
    #: run in channels_last on a CPU as well as on a GPU (`Runtime.create`)
    channels_last_on_cpu: ClassVar[bool] = False

    def __init__(self, settings=None, **config):
        super().__init__(settings, **config)
        self.batch_size = int(self.config["batch_size"])
        self._runtime: Runtime | None = None
        self._loaded = None

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = Runtime.create(self.config["device"], self.config["precision"],
                                           channels_last_on_cpu=self.channels_last_on_cpu)
        return self._runtime

    @property
    def loaded(self):
        """Whatever `load()` built (networks, text embeddings, ...), built once."""
        if self._loaded is None:
            self._loaded = self.load(self.runtime)
        return self._loaded

    def load(self, runtime: Runtime):
        raise NotImplementedError

    def weight_specs(self) -> list[WeightSpec]:
        raise NotImplementedError

    def weight_sources(self) -> list[WeightSource]:
        if self.config["random_init"]:
            return [WeightSource(spec.what, RANDOM_INIT) for spec in self.weight_specs()]
        return [resolve(spec) for spec in self.weight_specs()]

    def weight_path(self, spec: WeightSpec) -> str:
        """Resolved location of one weight, for `load()`; raises if it vanished since the pre-flight check."""
        return located(spec)

    def close(self) -> None:
        self._loaded = None
        if self._runtime is not None and self._runtime.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()


class ModelFolderExtractor(DeepExtractor):
    """A network whose weights are a Hugging Face model folder (config.json + model.safetensors): the hub
    repo `model` (its cached snapshot) or an explicit `weights` folder; `random_init` builds one of the
    published checkpoints without weights. Config keys it reads: `model`, `weights`, `random_init`, `resize`.

    Subclasses name the weight to people (`weight_label`) and list the published checkpoints random init can
    build (`known_models`, keyed by hub repo; `known_kind` says what the table holds, for the error)."""

    weight_label: ClassVar[str]
    known_models: ClassVar[Mapping]
    known_kind: ClassVar[str] = "checkpoint"

    def __init__(self, settings=None, **config):
        super().__init__(settings, **config)
        if self.config["random_init"] and self.config["model"] not in self.known_models:
            raise ValueError(f"random_init needs a known {self.known_kind}: {sorted(self.known_models)}")

    def weight_specs(self) -> list[WeightSpec]:
        repo = self.config["model"]
        cached = hf_cached_folder(repo)
        return [WeightSpec(f"{self.weight_label} {repo}", repo,
                           f"https://huggingface.co/{repo} (config.json, model.safetensors)",
                           self.config["weights"], (cached,) if cached else (), folder=True)]

    def model_width(self, read: Callable[[dict], int], known: int | None) -> int:
        """A width of the network without loading it: `read` of the config.json in the folder the weights
        load from, else `known` (the published checkpoint's: random init, or weights not downloaded yet)."""
        source = None if self.config["random_init"] else resolve(self.weight_specs()[0])
        if source is not None and source.found is not None:
            return read(json.loads((Path(source.found) / "config.json").read_text()))
        if known is not None:
            return known
        raise ValueError(f"{self.name} model {self.config['model']!r}: {source.hint}")


# --- pair arithmetic on cached per-image vectors (numpy, batched over pairs) ---------------------------------

def unit(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (n, d) blocks (also works on (n, k, d): cosine per k)."""
    return np.sum(unit(a) * unit(b), axis=-1)


def embedding_pair_columns(prefix: str, ref: np.ndarray, dist: np.ndarray, product: bool = True) -> dict:
    """cosine, |d-r| of the unit vectors and (optionally) their element-wise product, whose sum is the cosine:
    a linear model on the product learns which embedding directions matter to people."""
    r, d = unit(ref), unit(dist)
    out = {f"{prefix}cos": np.sum(r * d, axis=-1), f"{prefix}absdiff": np.abs(d - r).astype(np.float32)}
    if product:
        out[f"{prefix}prod"] = (d * r).astype(np.float32)
    return out


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = 1e-10) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), eps, None)
    q = np.clip(np.asarray(q, dtype=np.float64), eps, None)
    p, q = p / p.sum(-1, keepdims=True), q / q.sum(-1, keepdims=True)
    return np.sum(p * np.log(p / q), axis=-1)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    m = 0.5 * (np.asarray(p, dtype=np.float64) + np.asarray(q, dtype=np.float64))
    return 0.5 * kl_divergence(p, m) + 0.5 * kl_divergence(q, m)
