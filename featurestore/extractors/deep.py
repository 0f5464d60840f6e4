"""What every neural-network extractor shares: runtime settings, lazy loading, weights resolution, the batch
size, and the vector arithmetic that turns two cached per-image embeddings into pair features.

Batch size (`batch_size = "auto"`, the default): on a CPU the extractor's own fixed number (`cpu_batch_size`:
what every store on a CPU was computed with, so CPU values never depend on the machine); on a GPU as many items
as half of the free GPU memory holds, from a measurement of the loaded network on inputs of the largest size it
will see (`probe_shape`; `devices.measure_item_bytes`), at most `max_batch_size`. A number instead of "auto"
is used as given everywhere. On a GPU, where values already carry bf16 rounding, the batch a key lands in moves
its values by rounding only (batched matrix products may pick other kernels): well under the bf16 step.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field

from ..devices import Runtime, measure_item_bytes, memory_batch_size
from ..io import DecodedImage, DecodedPair
from ..weights import WeightSpec, hf_cached_folder, located, resolve
from .base import DecodedInputs, Extractor, ExtractorSettings, WeightSource

RANDOM_INIT = "random init (timing and tests only: values are meaningless)"
Precision = Literal["auto", "fp32", "bf16", "fp16"]
#: a batch size setting: a number of items, or "auto" (see the module docstring)
BatchSize = Annotated[int, Field(ge=1)] | Literal["auto"]


class DeepSettings(ExtractorSettings):
    """What every network extractor takes besides its own settings: where and how fast it runs."""

    random_init: bool = Field(False, description="build the architecture without weights: timing and tests only, "
                                                 "values are meaningless")
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda or cuda:N; not hashed")
    precision: Precision = Field("auto", description="autocast precision: auto (bf16/fp16 on a GPU, fp32 on a CPU), "
                                                     "fp32, bf16 or fp16; not hashed")
    batch_size: BatchSize = Field("auto", description="images per forward pass: auto = the extractor's fixed CPU "
                                                       "batch on a CPU (16), from the free GPU memory on a GPU; "
                                                       "not hashed")


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
    #: items per call with `batch_size = "auto"` on a CPU (what CPU stores were always computed with)
    cpu_batch_size: ClassVar[int] = 16
    #: at most this many items per call with `batch_size = "auto"` on a GPU
    max_batch_size: ClassVar[int] = 256
    #: (height, width) of the decoded images the GPU memory of one item is measured on: the largest model input
    #: the extractor forms (image extractors resize to a fixed area, so any photo size measures the same)
    probe_shape: ClassVar[tuple[int, int]] = (768, 1024)

    def __init__(self, settings=None, **config):
        super().__init__(settings, **config)
        self._batch_size: int | None = None
        self.probing = False  # true while `gpu_batch_size` measures: no batch size to split by yet
        self._runtime: Runtime | None = None
        self._loaded = None

    @property
    def batch_size(self) -> int:
        """Items per call (the store cuts its keys into batches of this many); see the module docstring."""
        if self._batch_size is None:
            setting = self.config["batch_size"]
            if setting != "auto":
                self._batch_size = int(setting)
            elif self.runtime.device.type != "cuda":
                self._batch_size = self.cpu_batch_size
            else:
                self._batch_size = self.gpu_batch_size()
        return self._batch_size

    def gpu_batch_size(self) -> int:
        """Items per forward pass that fit the GPU's free memory (`devices.measure_item_bytes`), the network
        loaded first so that its weights count as already there."""
        self.loaded  # noqa: B018 (loads the network)
        self.probing = True
        try:
            per_item, fixed = measure_item_bytes(self._probe, self.runtime.device)
        finally:
            self.probing = False
        return memory_batch_size(per_item, fixed, self.runtime.device, self.max_batch_size)

    def _probe(self, n: int) -> None:
        """One call on `n` synthetic items of `probe_shape` (noise: memory does not depend on content)."""
        rng = np.random.default_rng(0)
        rgb = rng.integers(0, 256, (*self.probe_shape, 3), dtype=np.uint8)
        images = [DecodedImage(f"probe{i}", rgb) for i in range(2 * n)]  # own objects: nothing memoised is reused
        if self.level == "image":
            self.compute_images(images[:n])
        else:
            self.compute_pairs([DecodedPair(f"probe{i}", images[i], images[n + i]) for i in range(n)])

    def batch_order(self, keys: list[str], inputs: DecodedInputs) -> list[str]:
        """On a GPU, keys of the same image shape (aspect first, then size) next to each other, so that the
        batches the store cuts from them run whole shape groups; on a CPU, as given (batches as always)."""
        if self.runtime.device.type != "cuda":
            return keys

        def shape(key: str) -> tuple[float, int]:
            image = inputs.image(key) if self.level == "image" else inputs.pair(key).ref
            return round(image.height / image.width, 4), image.height * image.width
        return sorted(keys, key=shape)

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
