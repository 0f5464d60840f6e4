"""CLIP image embeddings (open_clip) and their agreement with text prompts.

One team's CLIP ViT-L/14-336 cosine alone reaches SROCC 0.767 on the SeIQA training pairs; several CLIP
towers at two resolutions carry complementary views of the same content. Per image and model: the image
embedding, its cosine to each configured text prompt (objects, scene, quality words), and a CLIP-IQA style
quality probability from an antonym prompt pair. Per pair and model: embedding cosine, |d-r| and d*r of the
unit embeddings (dense blocks for out-of-fold ridge features), the change of the prompt profile (d-r per
prompt, its mean absolute size, and the correlation of the two profiles) and the quality change.

Input: by default CLIP's own preprocessing (`resize = "crop"`: short side to the model's size, centre crop,
exactly as open_clip's transform computes it), which is what the published one-feature baseline (ViT-L/14-336
cosine, SROCC 0.767 on the SeIQA training pairs) used. A crop drops the borders, where a semantic edit may
sit, so a model entry can ask for its own policy (`{arch, pretrained, resize = "pad"}`: the whole image
letterboxed into the square, nothing cropped or squashed); such an entry's columns carry the policy in their
prefix (`vit_l_14_336_openai_pad_cos`), so both views can be stored side by side and the stack chooses.
"""
from __future__ import annotations

import os
import re

import numpy as np
import torch
from pydantic import Field, field_validator

from ..devices import ResizePolicy, Runtime, model_batches, scatter, to_host
from ..weights import WeightSpec, hf_cached
from .base import EXTRACTORS, Column, ImageExtractor
from .deep import BatchSize, DeepSettings, DeepExtractor, embedding_pair_columns

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# open_clip looks for the safetensors twin of its .bin first; either is a complete checkpoint
HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")

DEFAULT_PROMPTS = [
    # objects
    "a photo of a person", "a photo of a face", "a photo of an animal", "a photo of a vehicle",
    "a photo of a building", "a photo of food", "a photo of a plant", "a photo of text",
    "a photo of furniture", "a photo of an electronic device",
    # scene
    "an indoor scene", "an outdoor scene", "a landscape", "a city street", "a photo taken at night",
    # what a degradation does to meaning
    "a clear photo", "a blurry photo", "a noisy photo", "a distorted photo", "a photo with missing parts",
    "a photo with wrong colors", "a cartoon", "a painting",
]


def model_key(arch: str, pretrained: str) -> str:
    """Column prefix of one CLIP model: `ViT-L-14-336` + `openai` -> `vit_l_14_336_openai`."""
    return re.sub(r"[^0-9a-z]+", "_", f"{arch}_{pretrained}".lower()).strip("_")


@EXTRACTORS.register()
class ClipExtractor(DeepExtractor, ImageExtractor):
    name = "clip"
    version = 2   # 2: "crop" is open_clip's exact geometry (was one pixel off)
    cpu_batch_size = 32
    class Settings(DeepSettings):
        models: list[dict[str, str]] = Field(
            [{"arch": "ViT-L-14", "pretrained": "openai"},
             {"arch": "ViT-L-14-336", "pretrained": "openai"},
             {"arch": "ViT-L-14-336", "pretrained": "openai", "resize": "pad"},
             {"arch": "ViT-B-16", "pretrained": "openai"}],
            description="each: arch (an open_clip model name), pretrained (its tag); optional: weights (explicit "
                        "checkpoint path), resize (this entry's own policy)")
        resize: ResizePolicy = Field("crop", description="keep | pad | crop | squash, for entries without their own")
        prompts: list[str] = Field(DEFAULT_PROMPTS, description="text prompts whose image-text similarities are stored")
        quality_prompts: list[str] = Field(["Good photo.", "Bad photo."], min_length=2, max_length=2,
                                           description="CLIP-IQA antonyms: P(first) is the quality")
        batch_size: BatchSize = Field("auto", description="images per forward pass: auto = 32 on a CPU, from the "
                                                           "free GPU memory on a GPU; not hashed")

        @field_validator("models")
        @classmethod
        def _entries(cls, models: list[dict[str, str]]) -> list[dict[str, str]]:
            import open_clip

            for entry in models:
                unknown = set(entry) - {"arch", "pretrained", "weights", "resize"}
                if unknown or "arch" not in entry or "pretrained" not in entry:
                    raise ValueError(f"each clip model needs arch and pretrained (optional: weights, resize), got {entry}")
                if entry.get("resize", "crop") not in ResizePolicy.__args__:
                    raise ValueError(f"resize must be one of {', '.join(ResizePolicy.__args__)}, got {entry}")
                if open_clip.get_model_config(entry["arch"]) is None:
                    raise ValueError(f"open_clip knows no model {entry['arch']!r}")
            return models

    def __init__(self, settings=None, **config):
        super().__init__(settings, **config)
        import open_clip

        self.specs = []
        for entry in self.config["models"]:
            cfg = open_clip.get_model_config(entry["arch"])
            key = model_key(entry["arch"], entry["pretrained"]) + (f"_{entry['resize']}" if "resize" in entry else "")
            self.specs.append({**entry, "key": key, "resize": entry.get("resize", self.config["resize"]),
                               "embed_dim": int(cfg["embed_dim"]),
                               "image_size": _square(cfg["vision_cfg"]["image_size"])})
        keys = [s["key"] for s in self.specs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"clip models listed twice: {keys}")

    # --- schema -------------------------------------------------------------------------------------
    def image_columns(self) -> list[Column]:
        n = len(self.config["prompts"])
        cols = []
        for s in self.specs:
            cols += [Column(f"{s['key']}_embedding", s["embed_dim"]), Column(f"{s['key']}_quality")]
            if n:
                cols.append(Column(f"{s['key']}_text", n))
        return cols

    def pair_columns(self) -> list[Column]:
        n = len(self.config["prompts"])
        cols = []
        for s in self.specs:
            k, d = s["key"], s["embed_dim"]
            cols += [Column(f"{k}_cos"), Column(f"{k}_absdiff", d), Column(f"{k}_prod", d),
                     Column(f"{k}_quality_dist"), Column(f"{k}_quality_diff")]
            if n:
                cols += [Column(f"{k}_text_diff", n), Column(f"{k}_text_l1"), Column(f"{k}_text_corr")]
        return cols

    # --- weights and models -------------------------------------------------------------------------
    def weight_specs(self) -> list[WeightSpec]:
        # one network may serve several entries (the same weights under two resize policies)
        return list({_network(s): self._weight_spec(s) for s in self.specs}.values())

    @staticmethod
    def _weight_spec(spec: dict) -> WeightSpec:
        from open_clip.pretrained import get_pretrained_cfg

        what = f"open_clip {spec['arch']} ({spec['pretrained']})"
        hub = get_pretrained_cfg(spec["arch"], spec["pretrained"]).get("hf_hub", "")
        if hub:
            repo, filename = os.path.split(hub)  # "org/name/" -> no file named: open_clip's default names
            files = (filename,) if filename else HF_FILES
            caches = tuple(p for p in (hf_cached(repo, f) for f in files) if p is not None)
            return WeightSpec(what, f"{repo}/{files[0]}", f"https://huggingface.co/{repo} (file {files[0]})",
                              spec.get("weights", ""), caches)
        local = f"open_clip/{spec['arch']}-{spec['pretrained']}.safetensors"
        return WeightSpec(what, local, f"the open_clip checkpoint of {spec['arch']} {spec['pretrained']}",
                          spec.get("weights", ""))

    def load(self, runtime: Runtime) -> list[dict]:
        import open_clip
        from open_clip.pretrained import get_pretrained_cfg

        networks: dict[tuple, dict] = {}
        for spec in self.specs:
            if _network(spec) in networks:
                continue
            tag_cfg = get_pretrained_cfg(spec["arch"], spec["pretrained"])
            path = None if self.config["random_init"] else self.weight_path(self._weight_spec(spec))
            # a checkpoint path skips open_clip's tag lookup, so carry over what the tag implies: OpenAI
            # weights were trained with QuickGELU
            model = open_clip.create_model(spec["arch"], pretrained=path,
                                           force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)))
            model = runtime.prepare(model)
            tokenizer = open_clip.get_tokenizer(spec["arch"])
            prompts = self.config["prompts"]
            networks[_network(spec)] = {
                "model": model, "text": _encode_text(model, tokenizer, prompts, runtime) if prompts else None,
                "quality": _encode_text(model, tokenizer, self.config["quality_prompts"], runtime),
                "mean": tuple(tag_cfg.get("mean", OPENAI_MEAN)), "std": tuple(tag_cfg.get("std", OPENAI_STD)),
                "logit_scale": float(model.logit_scale.detach().exp())}
        return [{**spec, **networks[_network(spec)]} for spec in self.specs]

    # --- compute ------------------------------------------------------------------------------------
    def compute_images(self, images) -> dict[str, np.ndarray]:
        rt = self.runtime
        out = {}
        for m in self.loaded:
            groups = model_batches(images, m["image_size"], m["resize"], m["mean"], m["std"], rt,
                                   cache_key="clip")
            with rt.inference():
                emb = _unit(scatter([(idx, m["model"].encode_image(x).float()) for idx, x in groups], len(images)))
            k = m["key"]
            out[f"{k}_embedding"] = emb
            out[f"{k}_quality"] = (m["logit_scale"] * emb @ m["quality"].T).softmax(-1)[:, 0].double()
            if m["text"] is not None:
                out[f"{k}_text"] = emb @ m["text"].T
        return to_host(out)  # every model's results in one transfer

    def derive_pairs(self, ref, dist) -> dict[str, np.ndarray]:
        out = {}
        for s in self.specs:
            k = s["key"]
            out.update(embedding_pair_columns(f"{k}_", ref[f"{k}_embedding"], dist[f"{k}_embedding"]))
            out[f"{k}_quality_dist"] = dist[f"{k}_quality"]
            out[f"{k}_quality_diff"] = dist[f"{k}_quality"] - ref[f"{k}_quality"]
            if self.config["prompts"]:
                r, d = ref[f"{k}_text"].astype(np.float64), dist[f"{k}_text"].astype(np.float64)
                out[f"{k}_text_diff"] = (d - r).astype(np.float32)
                out[f"{k}_text_l1"] = np.mean(np.abs(d - r), axis=1)
                out[f"{k}_text_corr"] = _row_corr(r, d)
        return out


def _network(spec: dict) -> tuple:
    """What identifies one loaded network: entries differing only in `resize` share it."""
    return spec["arch"], spec["pretrained"], spec.get("weights", "")


def _square(size) -> int:
    if isinstance(size, (list, tuple)):
        if size[0] != size[1]:
            raise ValueError(f"clip model with non-square input {size} is not supported")
        return int(size[0])
    return int(size)


def _encode_text(model, tokenizer, prompts: list[str], runtime: Runtime) -> torch.Tensor:
    """Unit text embeddings of `prompts`, computed once when the model loads."""
    with runtime.inference():
        return _unit(model.encode_text(tokenizer(prompts).to(runtime.device)).float())


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _row_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of `a` with the same row of `b` (0 when a row is constant)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt(np.sum(a * a, axis=1) * np.sum(b * b, axis=1))
    return np.where(den > 0, np.sum(a * b, axis=1) / np.maximum(den, 1e-300), 0.0)
