"""DINO features (transformers): global content (CLS) and where in the image the content changed (patches).

Models: DINOv2 (`facebook/dinov2-*`), DINOv2 with registers (`facebook/dinov2-with-registers-*`) and DINOv3
(`facebook/dinov3-vit*`, the backbone rank 5 used); the model folder's `config.json` says which, and the
transformers class is picked from it (`AutoModel`). Register models put `num_register_tokens` extra tokens
between the CLS token and the patch tokens: the patch statistics skip them (a register token is no place in
the image).

Per image and input size: the CLS embedding and a `grid` x `grid` map of patch tokens (unit-normalised per
token, averaged per cell; with `patch_proj_dim` > 0 projected by a fixed seeded Gaussian matrix, which keeps
cosines to within about 1/sqrt(dim) — closest where they matter, near 1 — at a fraction of the storage).
Per pair: CLS cosine and |d-r|; per-cell patch cosine statistics (mean, min, 10th percentile), the map of
dissimilarity (1 - cosine) per cell, and the worst 2x2-cell region — a local semantic edit (an object
removed or pasted) barely moves the CLS token but shows up there.

Input: aspect kept (`resize = "keep"`: about size x size pixels of area, sides multiples of the model's patch,
14 for DINOv2, 16 for DINOv3); DINOv2 interpolates its position embeddings to any grid, DINOv3 uses rotary
position embeddings. Images of different shapes run in separate forward passes: on a GPU the batch is as large
as the GPU's memory allows (`extractors.deep`) and `batch_order` puts a chunk's keys of one shape next to each
other, so each shape group of a chunk runs as one pass, not split across batches.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from ..devices import ResizePolicy, Runtime, model_batches, scatter, to_host
from .base import EXTRACTORS, Column, ImageExtractor
from .deep import DeepSettings, ModelFolderExtractor, cosine, embedding_pair_columns

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_V2 = {"model_type": "dinov2", "image_size": 518, "patch_size": 14}   # 518: the 37 x 37 position grid
_V2_REG = {**_V2, "model_type": "dinov2_with_registers", "num_register_tokens": 4}
_V3 = {"model_type": "dinov3_vit", "image_size": 224, "patch_size": 16, "num_register_tokens": 4,
       "layer_norm_eps": 1e-5, "key_bias": False, "pos_embed_rescale": 2.0}
#: architectures of the published checkpoints (their config.json), so `random_init` (benchmarks) needs no hub
KNOWN_ARCHITECTURES = {
    "facebook/dinov2-small": {**_V2, "hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6},
    "facebook/dinov2-base": {**_V2, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12},
    "facebook/dinov2-large": {**_V2, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16},
    "facebook/dinov2-giant": {**_V2, "hidden_size": 1536, "num_hidden_layers": 40, "num_attention_heads": 24,
                              "use_swiglu_ffn": True},
    "facebook/dinov2-with-registers-base": {**_V2_REG, "hidden_size": 768, "num_hidden_layers": 12,
                                            "num_attention_heads": 12},
    "facebook/dinov2-with-registers-large": {**_V2_REG, "hidden_size": 1024, "num_hidden_layers": 24,
                                             "num_attention_heads": 16},
    "facebook/dinov3-vitb16-pretrain-lvd1689m": {**_V3, "hidden_size": 768, "intermediate_size": 3072,
                                                 "num_hidden_layers": 12, "num_attention_heads": 12},
    "facebook/dinov3-vitl16-pretrain-lvd1689m": {**_V3, "hidden_size": 1024, "intermediate_size": 4096,
                                                 "num_hidden_layers": 24, "num_attention_heads": 16},
}


def build_config(architecture: dict):
    """The transformers config of a DINO architecture (a config.json as a dict)."""
    from transformers import AutoConfig

    arch = dict(architecture)
    return AutoConfig.for_model(arch.pop("model_type"), **arch)


@EXTRACTORS.register()
class DinoExtractor(ModelFolderExtractor, ImageExtractor):
    name = "dino"
    version = 1
    weight_label = "DINO"
    known_models = KNOWN_ARCHITECTURES
    known_kind = "architecture"
    class Settings(DeepSettings):
        model: str = Field("facebook/dinov2-large", description="Hugging Face repo id of a DINOv2 / DINOv2-with-"
                                                               "registers / DINOv3 ViT")
        sizes: list[int] = Field([224, 336], min_length=1, description="input sides, one embedding set per size")
        resize: ResizePolicy = Field("keep", description="keep (aspect kept, position embeddings interpolated) | pad "
                                                         "| crop | squash")
        grid: int = Field(8, ge=1, description="patch tokens pooled to grid x grid cells")
        patch_proj_dim: int = Field(128, ge=0, description="random projection width of the stored patch vectors; "
                                                           "0 = full width")
        weights: str = Field("", description="explicit model folder (config.json + model.safetensors)")

    def __init__(self, settings=None, **config):
        super().__init__(settings, **config)
        self._hidden: int | None = None

    # --- schema -------------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        """Embedding width, from the model folder the weights load from (no model load), else from the
        published architecture (random init, or weights not downloaded yet)."""
        if self._hidden is None:
            known = KNOWN_ARCHITECTURES.get(self.config["model"])
            self._hidden = self.model_width(lambda config: int(config["hidden_size"]),
                                            known["hidden_size"] if known else None)
        return self._hidden

    @property
    def patch_dim(self) -> int:
        return self.config["patch_proj_dim"] or self.hidden_size

    def image_columns(self) -> list[Column]:
        cells = self.config["grid"] ** 2
        cols = []
        for s in self.config["sizes"]:
            cols += [Column(f"s{s}_cls", self.hidden_size), Column(f"s{s}_patches", cells * self.patch_dim)]
        return cols

    def pair_columns(self) -> list[Column]:
        cells = self.config["grid"] ** 2
        cols = []
        for s in self.config["sizes"]:
            cols += [Column(f"s{s}_cls_cos"), Column(f"s{s}_cls_absdiff", self.hidden_size),
                     Column(f"s{s}_patch_cos_mean"), Column(f"s{s}_patch_cos_min"), Column(f"s{s}_patch_cos_p10"),
                     Column(f"s{s}_worst_region"), Column(f"s{s}_patch_dissim_map", cells)]
        return cols

    # --- model --------------------------------------------------------------------------------------
    def load(self, runtime: Runtime) -> dict:
        from transformers import AutoModel

        if self.config["random_init"]:
            model = AutoModel.from_config(build_config(KNOWN_ARCHITECTURES[self.config["model"]]))
        else:
            model = AutoModel.from_pretrained(self.weight_path(self.weight_specs()[0]), local_files_only=True)
        if model.config.model_type not in ("dinov2", "dinov2_with_registers", "dinov3_vit"):
            raise ValueError(f"dino model {self.config['model']!r}: model_type {model.config.model_type!r} is not "
                             "a DINOv2 / DINOv2-with-registers / DINOv3 ViT")
        hidden = model.config.hidden_size
        projection = None
        if self.config["patch_proj_dim"]:
            gen = torch.Generator().manual_seed(0)
            projection = torch.randn(hidden, self.config["patch_proj_dim"], generator=gen)
            projection = (projection / self.config["patch_proj_dim"] ** 0.5).to(runtime.device)
        # tokens before the patches: CLS, then the register tokens of a register model
        prefix = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)
        return {"model": runtime.prepare(model), "patch": model.config.patch_size, "prefix": prefix,
                "projection": projection}

    # --- compute ------------------------------------------------------------------------------------
    def compute_images(self, images) -> dict[str, np.ndarray]:
        rt, m, grid = self.runtime, self.loaded, self.config["grid"]
        out = {}
        for size in self.config["sizes"]:
            groups = model_batches(images, size, self.config["resize"], IMAGENET_MEAN, IMAGENET_STD, rt,
                                   multiple=m["patch"])
            cls, cells = [], []
            for idx, x in groups:
                with rt.inference():
                    tokens = m["model"](pixel_values=x).last_hidden_state.float()
                gh, gw = x.shape[2] // m["patch"], x.shape[3] // m["patch"]
                if tokens.shape[1] != m["prefix"] + gh * gw:
                    raise RuntimeError(f"dino: {tokens.shape[1]} tokens for a {gh}x{gw} patch grid and "
                                       f"{m['prefix']} prefix tokens")
                cls.append((idx, tokens[:, 0]))
                patch = F.normalize(tokens[:, m["prefix"]:m["prefix"] + gh * gw], dim=-1)
                patch = patch.transpose(1, 2).reshape(len(idx), -1, gh, gw)
                pooled = F.adaptive_avg_pool2d(patch, grid).flatten(2).transpose(1, 2)  # B x cells x D
                if m["projection"] is not None:
                    pooled = pooled @ m["projection"]
                cells.append((idx, pooled.reshape(len(idx), -1)))
            # shape groups back in image order on the device; one transfer for every size below
            out[f"s{size}_cls"], out[f"s{size}_patches"] = scatter(cls, len(images)), scatter(cells, len(images))
        return to_host(out)

    def derive_pairs(self, ref, dist) -> dict[str, np.ndarray]:
        grid, out = self.config["grid"], {}
        for s in self.config["sizes"]:
            cls = embedding_pair_columns(f"s{s}_cls_", ref[f"s{s}_cls"], dist[f"s{s}_cls"], product=False)
            out.update(cls)
            n = len(ref[f"s{s}_patches"])
            cos = cosine(ref[f"s{s}_patches"].reshape(n, grid * grid, -1),
                         dist[f"s{s}_patches"].reshape(n, grid * grid, -1))  # n x cells
            dissim = 1.0 - cos
            out[f"s{s}_patch_cos_mean"] = cos.mean(axis=1)
            out[f"s{s}_patch_cos_min"] = cos.min(axis=1)
            out[f"s{s}_patch_cos_p10"] = np.percentile(cos, 10, axis=1)
            out[f"s{s}_patch_dissim_map"] = dissim.astype(np.float32)
            out[f"s{s}_worst_region"] = _worst_window(dissim.reshape(n, grid, grid))
        return out


def _worst_window(dissim: np.ndarray, window: int = 2) -> np.ndarray:
    """Largest mean dissimilarity over `window` x `window` cell neighbourhoods, per pair."""
    n, g, _ = dissim.shape
    w = min(window, g)
    views = np.lib.stride_tricks.sliding_window_view(dissim, (w, w), axis=(1, 2))
    return views.mean(axis=(-1, -2)).reshape(n, -1).max(axis=1)
