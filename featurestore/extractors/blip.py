"""BLIP image embeddings (transformers), the image-text backbone rank 6 used: a CLIP-like view of content.

The embedding is BLIP's image-text contrastive (ITC) image feature, exactly what transformers'
`BlipForImageTextRetrieval` compares with a caption: the vision tower's CLS token through `vision_proj`
(256-d for the published retrieval checkpoints). Per image: that embedding; per pair: its cosine, |d-r| and
d*r of the unit embeddings (dense blocks for the out-of-fold ridge features), as for CLIP.

Weights: a retrieval checkpoint (`Salesforce/blip-itm-base-coco`, `-large-coco`, `-base-flickr`, ...): a
Hugging Face model folder. A captioning or VQA checkpoint has no `vision_proj` and is refused, since the
projection would otherwise be silently random.

Input: BLIP's own preprocessing by default (`resize = "squash"`: the whole image to `size` x `size`, bicubic,
CLIP's mean/std — what `BlipImageProcessor` does); "pad" or "crop" are available as for CLIP.
"""
from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from ..devices import ResizePolicy, Runtime, model_batches, scatter, to_host
from .base import EXTRACTORS, Column, ImageExtractor
from .clip import OPENAI_MEAN, OPENAI_STD
from .deep import DeepSettings, ModelFolderExtractor, embedding_pair_columns

#: the published retrieval checkpoints' embedding width (`image_text_hidden_size`), so the schema needs no hub
KNOWN_EMBED_DIM = {"Salesforce/blip-itm-base-coco": 256, "Salesforce/blip-itm-large-coco": 256,
                   "Salesforce/blip-itm-base-flickr": 256, "Salesforce/blip-itm-large-flickr": 256}


class BlipImageEncoder(torch.nn.Module):
    """The two parts of a retrieval checkpoint an image embedding needs (the text encoder is dropped)."""

    def __init__(self, retrieval):
        super().__init__()
        self.vision_model, self.vision_proj = retrieval.vision_model, retrieval.vision_proj

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # another input size than the checkpoint's needs its position embeddings interpolated
        other_size = tuple(pixel_values.shape[-2:]) != (self.vision_model.config.image_size,) * 2
        hidden = self.vision_model(pixel_values=pixel_values, interpolate_pos_encoding=other_size).last_hidden_state
        return self.vision_proj(hidden[:, 0])


@EXTRACTORS.register()
class BlipExtractor(ModelFolderExtractor, ImageExtractor):
    name = "blip"
    version = 1
    weight_label = "BLIP"
    known_models = KNOWN_EMBED_DIM
    class Settings(DeepSettings):
        model: str = Field("Salesforce/blip-itm-base-coco", description="Hugging Face repo id of a BLIP ITM checkpoint")
        size: int = Field(384, ge=16, description="input side (the published checkpoints': 24 x 24 patches of 16)")
        resize: ResizePolicy = Field("squash", description="keep | pad | crop | squash (BlipImageProcessor's own)")
        weights: str = Field("", description="explicit model folder (config.json + model.safetensors)")

    def __init__(self, settings=None, **config):
        super().__init__(settings, **config)
        self._embed_dim: int | None = None

    @property
    def embed_dim(self) -> int:
        """`image_text_hidden_size` of the folder the weights load from, else of the published checkpoint."""
        if self._embed_dim is None:
            self._embed_dim = self.model_width(lambda config: int(config.get("image_text_hidden_size", 256)),
                                               KNOWN_EMBED_DIM.get(self.config["model"]))
        return self._embed_dim

    def image_columns(self) -> list[Column]:
        return [Column("embedding", self.embed_dim)]

    def pair_columns(self) -> list[Column]:
        return [Column("cos"), Column("absdiff", self.embed_dim), Column("prod", self.embed_dim)]

    def load(self, runtime: Runtime) -> BlipImageEncoder:
        from transformers import BlipConfig, BlipForImageTextRetrieval

        if self.config["random_init"]:
            return runtime.prepare(BlipImageEncoder(BlipForImageTextRetrieval(BlipConfig())))
        folder = self.weight_path(self.weight_specs()[0])
        model, info = BlipForImageTextRetrieval.from_pretrained(folder, local_files_only=True,
                                                                output_loading_info=True)
        unfilled = [k for k in info["missing_keys"] if k.startswith(("vision_model.", "vision_proj."))]
        if unfilled:
            raise ValueError(f"{folder}: not a BLIP image-text retrieval checkpoint (no {unfilled[0]}); use "
                             "one of " + ", ".join(sorted(KNOWN_EMBED_DIM)))
        return runtime.prepare(BlipImageEncoder(model))

    def compute_images(self, images) -> dict[str, np.ndarray]:
        rt = self.runtime
        groups = model_batches(images, self.config["size"], self.config["resize"], OPENAI_MEAN, OPENAI_STD, rt,
                               cache_key="blip")
        with rt.inference():
            emb = scatter([(idx, self.loaded(x).float()) for idx, x in groups], len(images))
        return to_host({"embedding": torch.nn.functional.normalize(emb, dim=-1)})

    def derive_pairs(self, ref, dist) -> dict[str, np.ndarray]:
        return embedding_pair_columns("", ref["embedding"], dist["embedding"])
