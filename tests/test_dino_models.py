"""DINOv2-with-registers and DINOv3 (the backbone rank 5 used) as `dino` models, on tiny models built from the
real published `config.json` files (tests/fixtures/, copies from the public model repositories) with only
the depth and widths shrunk (1 layer, width 32, 2 heads; the backbone-only stage names of
the 12 published layers dropped with them): patch size, register count, rotary/interpolated
position embeddings, layer-norm epsilon and biases are the published ones.

What must hold: the CLS token is token 0 and the patch statistics are built from the patch tokens only —
after the CLS token *and the register tokens* — exactly as the Hugging Face model lays them out. Taking
`tokens[:, 1:1 + gh*gw]` (the DINOv2 layout) would put the 4 registers into the first cells.
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
from featurestore.extractors.dino import IMAGENET_MEAN, IMAGENET_STD, KNOWN_ARCHITECTURES, build_config
from featurestore.io import DecodedImage

from conftest import photo

FIXTURES = Path(__file__).parent / "fixtures"
MODELS = {  # repo id -> (fixture folder, shrunk widths, input size giving a 4 x 4 patch grid)
    "facebook/dinov2-with-registers-base": ("dinov2-with-registers-base", {}, 56),
    "facebook/dinov3-vitb16-pretrain-lvd1689m": ("dinov3-vitb16-pretrain-lvd1689m", {"intermediate_size": 64}, 64),
}


def published(repo: str) -> dict:
    return json.loads((FIXTURES / MODELS[repo][0] / "config.json").read_text())


def tiny_folder(root: Path, repo: str) -> Path:
    """The published config with depth and widths shrunk, random weights, saved as `$SIQA_WEIGHTS_DIR/<repo>`."""
    from transformers import AutoModel

    config = published(repo)
    config.update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, **MODELS[repo][1])
    for backbone_only in ("out_features", "out_indices", "stage_names"):   # name the 12 published stages
        config.pop(backbone_only, None)
    torch.manual_seed(0)
    model = AutoModel.from_config(build_config(config))
    model.save_pretrained(root / repo)
    return root / repo


@pytest.mark.parametrize("repo", sorted(MODELS))
def test_known_architecture_is_the_published_one(repo):
    """`random_init` builds exactly the published architecture (compared field by field)."""
    config = published(repo)
    for key, value in KNOWN_ARCHITECTURES[repo].items():
        assert config[key] == value, (repo, key)
    assert type(build_config(KNOWN_ARCHITECTURES[repo])).__name__ in {"Dinov2WithRegistersConfig", "DINOv3ViTConfig"}


@pytest.mark.parametrize("repo", sorted(MODELS))
def test_patch_statistics_skip_the_register_tokens(repo, tmp_path, monkeypatch):
    from transformers import AutoModel

    monkeypatch.setenv("SIQA_WEIGHTS_DIR", str(tmp_path))
    folder = tiny_folder(tmp_path, repo)
    size = MODELS[repo][2]
    images = [DecodedImage(name, np.asarray(Image.fromarray(photo(name, 96)).resize((size, size), Image.BICUBIC)))
              for name in ("astronaut", "coffee", "chelsea")]

    extractor = create("dino", model=repo, sizes=[size], grid=4, patch_proj_dim=0, device="cpu")
    [source] = extractor.weight_sources()
    assert source.found == str(folder)
    out = extractor.compute_images(images)

    model = AutoModel.from_pretrained(folder).eval()
    registers = model.config.num_register_tokens
    assert registers == published(repo)["num_register_tokens"] == 4
    [(_, pixels)] = model_batches(images, size, "keep", IMAGENET_MEAN, IMAGENET_STD, Runtime.create("cpu"),
                                  multiple=model.config.patch_size)
    with torch.no_grad():
        tokens = model(pixel_values=pixels).last_hidden_state
    assert tokens.shape[1] == 1 + registers + 16
    np.testing.assert_allclose(out[f"s{size}_cls"], tokens[:, 0].numpy(), atol=1e-5)
    patches = torch.nn.functional.normalize(tokens[:, 1 + registers:], dim=-1).numpy().reshape(len(images), -1)
    np.testing.assert_allclose(out[f"s{size}_patches"], patches, atol=1e-5)   # measured max |Δ| 0
    # the DINOv2 slice would have taken the registers as the first patches
    wrong = torch.nn.functional.normalize(tokens[:, 1:17], dim=-1).numpy().reshape(len(images), -1)
    assert np.abs(out[f"s{size}_patches"] - wrong).max() > 1e-2

    pair = extractor.derive_pairs(out, out)
    assert pair[f"s{size}_cls_cos"] == pytest.approx(1.0, abs=1e-6)
    assert extractor.hidden_size == 32
