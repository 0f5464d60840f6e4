"""siqa's image-embedding extractors against the reference pipelines, on identical weights and pixels.

- CLIP (`resize = "crop"`) vs open_clip's own `create_model_and_transforms(...)` preprocess + `encode_image`:
  the model input must be the *same tensor* (torch.equal), not merely close, and the embeddings then agree.
  The model is a 1-layer open_clip `CLIP` (the class of ViT-L/14-336) at the real 336-pixel input, random
  weights saved where siqa's loader looks, loaded by both sides from that one file.
- DINOv2 vs `AutoImageProcessor` + `Dinov2Model` at 224, the processor built from the published
  `preprocessor_config.json` of facebook/dinov2-large (tests/fixtures/dinov2-large/, copied from the model
  repository), the model a tiny `Dinov2Config` (1 layer, width 32; patch 14 as published).

Pixels: the five real calibration references (512 x 384) plus crops of odd shapes, where a rounded instead of
truncated resize or crop offset shows.

Measured here (CPU, fp32): CLIP input tensors identical, embeddings max |Δ| 0 (bit-identical);
DINOv2 pixel values max |Δ| 0, last hidden state max |Δ| 0.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featurestore.devices import Runtime, model_batches
from featurestore.extractors import create
from featurestore.extractors.clip import OPENAI_MEAN, OPENAI_STD
from featurestore.io import DecodedImage, decode

from conftest import SHARED
from real_weights import CALIB_PAIRS

CALIB = SHARED / "data" / "calib"
FIXTURES = Path(__file__).parent / "fixtures"
CLIP_336 = "siqa-tiny-clip-336"


@pytest.fixture(scope="module")
def images() -> list[DecodedImage]:
    refs = [decode(CALIB / "ref" / f"{p}.bmp") for p in CALIB_PAIRS]
    rgb = refs[0].rgb
    odd = {"377x501": rgb[:377, :501], "501x377": np.ascontiguousarray(np.rot90(rgb)[:501, :377]),
           "300x370": rgb[:300, 11:381], "336x336": rgb[:336, :336]}
    return refs + [DecodedImage(name, np.ascontiguousarray(a)) for name, a in odd.items()]


@pytest.fixture(scope="module")
def clip_336(tmp_path_factory) -> Path:
    """A 1-layer CLIP at 336 px through open_clip's model-config mechanism, random weights saved once."""
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("open_clip_336")
    (folder / f"{CLIP_336}.json").write_text(json.dumps({
        "embed_dim": 16, "quick_gelu": True,
        "vision_cfg": {"image_size": 336, "layers": 1, "width": 32, "patch_size": 48, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    weights = folder / "weights" / "open_clip" / f"{CLIP_336}-test.safetensors"
    weights.parent.mkdir(parents=True)
    state = open_clip.create_model(CLIP_336).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, weights)
    return weights


def test_clip_crop_is_open_clips_own_preprocessing(clip_336, images, monkeypatch):
    import open_clip

    monkeypatch.setenv("SIQA_WEIGHTS_DIR", str(clip_336.parents[1]))
    model, _, preprocess = open_clip.create_model_and_transforms(CLIP_336, pretrained=str(clip_336))
    model.eval()
    theirs = torch.stack([preprocess(Image.fromarray(i.rgb)) for i in images])

    groups = model_batches(images, 336, "crop", OPENAI_MEAN, OPENAI_STD, Runtime.create("cpu"))
    [(order, ours)] = groups
    assert order == list(range(len(images)))
    for i, image in enumerate(images):
        assert torch.equal(ours[i], theirs[i]), (
            f"{image.sha256} ({image.height}x{image.width}): max |input diff| {(ours[i] - theirs[i]).abs().max()}")

    extractor = create("clip", models=[{"arch": CLIP_336, "pretrained": "test"}], resize="crop", prompts=[],
                       device="cpu")
    embedding = extractor.compute_images(images)["siqa_tiny_clip_336_test_embedding"]
    with torch.no_grad():
        reference = torch.nn.functional.normalize(model.encode_image(theirs), dim=-1).numpy()
    delta = float(np.abs(embedding - reference).max())
    assert delta < 1e-6, f"CLIP embedding max |siqa - open_clip| = {delta:.2e}"   # measured 0 (bit-identical)


def test_clip_pad_entry_shares_the_network_and_has_its_own_columns(clip_336, images, monkeypatch):
    monkeypatch.setenv("SIQA_WEIGHTS_DIR", str(clip_336.parents[1]))
    extractor = create("clip", prompts=[], device="cpu", models=[
        {"arch": CLIP_336, "pretrained": "test"}, {"arch": CLIP_336, "pretrained": "test", "resize": "pad"}])
    assert len(extractor.weight_specs()) == 1
    out = extractor.compute_images(images[:2])
    crop, pad = out["siqa_tiny_clip_336_test_embedding"], out["siqa_tiny_clip_336_test_pad_embedding"]
    assert extractor.loaded[0]["model"] is extractor.loaded[1]["model"]
    assert not np.allclose(crop, pad)   # a 512x384 image: the crop drops 64 columns, the pad keeps them


def test_the_default_clip_config_is_clips_own_preprocessing():
    """The published baseline (ViT-L/14-336 cosine, SROCC 0.767) used CLIP's preprocessing: the default
    entry for that model crops, and a letterboxed twin sits beside it under its own column prefix."""
    extractor = create("clip")
    by_key = {s["key"]: s["resize"] for s in extractor.specs}
    assert by_key["vit_l_14_336_openai"] == "crop" and by_key["vit_l_14_336_openai_pad"] == "pad"
    from featurestore.config import read_toml

    config = read_toml(Path(__file__).parents[1] / "configs" / "default.toml")["extractors"]["clip"]
    assert config["resize"] == "crop"
    assert {"arch": "ViT-L-14-336", "pretrained": "openai"} in config["models"]


@pytest.fixture(scope="module")
def dinov2_tiny(tmp_path_factory) -> Path:
    """A 1-layer Dinov2Model (published patch 14 and position grid 518) with the published processor file."""
    from transformers import Dinov2Config, Dinov2Model

    published = json.loads((FIXTURES / "dinov2-large" / "config.json").read_text())
    published.update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2)   # shrunk: widths and depth
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("hf") / "siqa-test" / "dinov2-tiny"
    Dinov2Model(Dinov2Config(**published)).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text((FIXTURES / "dinov2-large" / "preprocessor_config.json").read_text())
    return folder


def test_dinov2_matches_the_hugging_face_processor_and_model_at_224(dinov2_tiny, images):
    """At 224 x 224 input both sides run the model on the image as it is: siqa's `keep` policy gives
    224 x 224 (a multiple of 14), and the published processor's resize (short side 256) is turned off, its
    centre crop to 224 then being the identity. Compared: the pixel values (rescale + the published ImageNet
    mean/std, which must equal siqa's constants), the CLS token and the patch statistics siqa stores."""
    from transformers import AutoImageProcessor, Dinov2Model

    from featurestore.extractors.dino import IMAGENET_MEAN, IMAGENET_STD

    processor = AutoImageProcessor.from_pretrained(dinov2_tiny)
    assert tuple(processor.image_mean) == IMAGENET_MEAN and tuple(processor.image_std) == IMAGENET_STD
    square = [DecodedImage(f"{i.sha256}-224", np.ascontiguousarray(
        np.asarray(Image.fromarray(i.rgb).resize((224, 224), Image.BICUBIC)))) for i in images[:5]]
    theirs = processor(images=[Image.fromarray(i.rgb) for i in square], do_resize=False,
                       return_tensors="pt")["pixel_values"]
    [(_, ours)] = model_batches(square, 224, "keep", IMAGENET_MEAN, IMAGENET_STD, Runtime.create("cpu"), multiple=14)
    pixel_delta = float((ours - theirs).abs().max())
    assert pixel_delta < 1e-6, f"DINOv2 pixel values max |siqa - processor| = {pixel_delta:.2e}"

    model = Dinov2Model.from_pretrained(dinov2_tiny).eval()
    with torch.no_grad():
        hidden = model(pixel_values=theirs).last_hidden_state
    extractor = create("dino", model="siqa-test/dinov2-tiny", weights=str(dinov2_tiny), sizes=[224], grid=16,
                       patch_proj_dim=0, device="cpu")
    out = extractor.compute_images(square)
    cls_delta = float(np.abs(out["s224_cls"] - hidden[:, 0].numpy()).max())
    # with grid 16 = the 16 x 16 patch grid, each stored cell is one unit-normalised patch token
    patches = torch.nn.functional.normalize(hidden[:, 1:], dim=-1).numpy().reshape(5, -1)
    patch_delta = float(np.abs(out["s224_patches"] - patches).max())
    assert cls_delta < 1e-5 and patch_delta < 1e-5, (cls_delta, patch_delta)   # measured 0 and 0
