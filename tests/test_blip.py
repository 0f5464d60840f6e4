"""BLIP image embeddings on a tiny model built from the real published config (tests/fixtures/
blip-image-captioning-base/config.json, a copy of Salesforce/blip-image-captioning-base's): depth and widths
shrunk (1 layer, width 32, 2 heads, vision and text alike), patch 16 and 384-px input as published. The
retrieval class (`BlipForImageTextRetrieval`) reads the same `BlipConfig` (vision, text and
`image_text_hidden_size` = 256), so the checkpoint saved from it has the layout of Salesforce/blip-itm-*.

What must hold: siqa's embedding is transformers' own ITC image feature (`normalize(vision_proj(
vision_model(pixels).last_hidden_state[:, 0]))`, as in `BlipForImageTextRetrieval.forward(use_itm_head=False)`),
and a checkpoint without `vision_proj` (captioning) is refused instead of running with a random projection.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from featurestore.devices import Runtime, model_batches
from featurestore.extractors import create
from featurestore.extractors.clip import OPENAI_MEAN, OPENAI_STD
from featurestore.io import DecodedImage

from conftest import photo

FIXTURE = Path(__file__).parent / "fixtures" / "blip-image-captioning-base" / "config.json"
REPO = "Salesforce/blip-itm-base-coco"


def tiny_config():
    from transformers import BlipConfig

    published = json.loads(FIXTURE.read_text())
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    published["vision_config"].update(small)
    published["text_config"].update(small, encoder_hidden_size=32)   # cross-attends the vision width
    return BlipConfig(**{k: v for k, v in published.items() if not k.startswith("_")})


def save_tiny(root: Path, cls_name: str = "BlipForImageTextRetrieval") -> Path:
    import transformers

    torch.manual_seed(0)
    getattr(transformers, cls_name)(tiny_config()).save_pretrained(root / REPO)
    return root / REPO


def test_blip_embedding_is_the_itc_image_feature(tmp_path, monkeypatch):
    from transformers import BlipForImageTextRetrieval

    monkeypatch.setenv("SIQA_WEIGHTS_DIR", str(tmp_path))
    folder = save_tiny(tmp_path)
    images = [DecodedImage(n, photo(n, 96)) for n in ("astronaut", "coffee", "chelsea")]
    extractor = create("blip", device="cpu")
    assert extractor.weight_sources()[0].found == str(folder) and extractor.embed_dim == 256
    out = extractor.compute_images(images)

    model = BlipForImageTextRetrieval.from_pretrained(folder).eval()
    [(_, pixels)] = model_batches(images, 384, "squash", OPENAI_MEAN, OPENAI_STD, Runtime.create("cpu"))
    with torch.no_grad():
        cls = model.vision_model(pixel_values=pixels).last_hidden_state[:, 0]
        reference = torch.nn.functional.normalize(model.vision_proj(cls), dim=-1).numpy()
    assert np.abs(out["embedding"] - reference).max() < 1e-6   # measured 0
    pair = extractor.derive_pairs(out, {"embedding": out["embedding"][::-1].copy()})
    assert pair["cos"][1] == pytest.approx(1.0, abs=1e-6) and pair["cos"][0] < 0.999
    assert pair["prod"].shape == (3, 256)


def test_a_captioning_checkpoint_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SIQA_WEIGHTS_DIR", str(tmp_path))
    save_tiny(tmp_path, "BlipForConditionalGeneration")
    with pytest.raises(ValueError, match="not a BLIP image-text retrieval checkpoint"):
        create("blip", device="cpu").loaded
