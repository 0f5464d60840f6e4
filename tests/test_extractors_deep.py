"""Every deep extractor, end to end, on tiny randomly-initialised models of the real classes.

Each case puts weights where the extractor's loader looks ($SIQA_WEIGHTS_DIR here; the Hugging Face / torch
hub caches in test_weights.py): the real files wherever a package ships them (the LPIPS heads, DISTS
alpha/beta: tests/real_weights.py), random values of the right shapes for the rest. It builds the extractor
from its registry name and runs it unchanged through the feature store and the DuckDB views. Values are
meaningless where weights are random; every line of loading, resizing, batching, caching and storing runs.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from featurestore.datasets import PairTable
from featurestore.devices import Runtime, model_batches, target_shape
from featurestore.extractors import EXTRACTORS, ImageExtractor, PairExtractor, create
from featurestore.extractors.deep import DeepExtractor
from featurestore.io import DecodedImage
from featurestore.sql import connect
from featurestore.store import FeatureStore

from conftest import photo
from real_weights import copy_real, dists_head, lpips_head

TINY_CLIP = "siqa-tiny-clip"
PYIQA = "chaofengc/IQA-PyTorch-Weights"


@pytest.fixture(scope="session")
def tiny_clip_arch(tmp_path_factory):
    """A 1-layer CLIP registered through open_clip's own model-config mechanism."""
    import open_clip

    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps({
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(folder)
    return TINY_CLIP


def save(obj, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def features_state(arch: str) -> dict:
    """torchvision checkpoint layout (`features.<i>.*`) with only the convolutional part, to stay small."""
    from featurestore.extractors.pyiqa_deep import torchvision_without_download
    import torchvision

    with torchvision_without_download(arch):
        features = getattr(torchvision.models, arch)().features
    return {f"features.{k}": v for k, v in features.state_dict().items()}


# --- one writer per extractor: random weights where its loader looks, and a tiny config --------------------

def tiny_imagenet(root, _):
    from efficientnet_lite_pytorch import EfficientNet

    save(EfficientNet.from_name("efficientnet-lite0", image_size=None).state_dict(),
         root / "efficientnet-lite0-57934424.pth")
    return {"size": 64}


def tiny_regions(root, _):
    """Lite1 random weights where $SIQA_WEIGHTS_DIR says, so the optional-model path loads for real."""
    from efficientnet_lite_pytorch import EfficientNet

    save(EfficientNet.from_name("efficientnet-lite1", image_size=None).state_dict(),
         root / "efficientnet-lite1-77cc7160.pth")
    return {"model": "efficientnet-lite1", "size": 64, "grid": 2, "salient": 2}


def tiny_clip(root, arch):
    import open_clip
    from safetensors.torch import save_file

    state = open_clip.create_model(arch).state_dict()
    (root / "open_clip").mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, root / "open_clip" / f"{arch}-test.safetensors")
    return {"models": [{"arch": arch, "pretrained": "test"}], "prompts": ["a cat", "a cup", "a person"]}


def tiny_dino(root, _):
    from transformers import Dinov2Config, Dinov2Model

    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=56,
                             patch_size=14)).save_pretrained(root / "siqa-test" / "dinov2-tiny")
    return {"model": "siqa-test/dinov2-tiny", "sizes": [56, 84], "grid": 2, "patch_proj_dim": 8}


def tiny_lpips(root, _):
    """Random AlexNet convolutions; the real LPIPS v0.1 head file from the `lpips` wheel."""
    save(features_state("alexnet"), root / "alexnet-owt-7be5be79.pth")
    copy_real(lpips_head("alex"), root / PYIQA / "LPIPS_v0.1_alex-df73285e.pth", "df73285e")
    return {"nets": ["alex"], "size": 64}


def tiny_dists(root, _):
    """Random VGG16 convolutions; the real DISTS alpha/beta from the `DISTS_pytorch` wheel."""
    save(features_state("vgg16"), root / "vgg16-397923af.pth")
    copy_real(dists_head(), root / PYIQA / "DISTS_weights-f5e65c96.pth", "f5e65c96")
    return {"size": 48}


def tiny_topiq(root, _):
    from pyiqa.archs.topiq_arch import CFANet

    net = CFANet(semantic_model_name="test_resnet", model_name="cfanet_fr_kadid_res50",
                 backbone_pretrain=False, pretrained=False)
    save({"params": net.state_dict()}, root / PYIQA / "cfanet_fr_kadid_res50-2c4cc61d.pth")
    return {"semantic_model_name": "test_resnet", "size": 64}


def tiny_blip(root, _):
    from test_blip import save_tiny

    save_tiny(root)
    return {"size": 64}


TINY = {"imagenet": tiny_imagenet, "regions": tiny_regions, "clip": tiny_clip, "dino": tiny_dino, "blip": tiny_blip,
        "lpips": tiny_lpips,
        "dists": tiny_dists, "topiq_fr": tiny_topiq}


def test_every_deep_extractor_has_a_tiny_case():
    deep = {name for name, cls in EXTRACTORS.items() if issubclass(cls, DeepExtractor)}
    assert deep == set(TINY)


@pytest.fixture
def pair_table(tmp_path):
    """Two references shared by 4 pairs (6 distinct images), one of another aspect ratio."""
    folder = tmp_path / "images"
    folder.mkdir()
    coffee, cat, astronaut = photo("coffee", 64), photo("chelsea", 64), photo("astronaut", 48)
    buf = io.BytesIO()
    Image.fromarray(coffee).save(buf, "JPEG", quality=10)
    noisy = np.clip(coffee + np.random.default_rng(0).normal(0, 20, coffee.shape), 0, 255).astype(np.uint8)
    files = {"coffee": coffee, "jpeg": np.asarray(Image.open(buf).convert("RGB")), "cat": cat, "noisy": noisy,
             "astro": astronaut, "astro_dark": (astronaut * 0.5).astype(np.uint8)}
    for name, rgb in files.items():
        Image.fromarray(rgb).save(folder / f"{name}.png")
    rows = [("coffee", "jpeg"), ("coffee", "cat"), ("coffee", "noisy"), ("astro", "astro_dark")]
    return PairTable.from_paths([(folder / f"{r}.png", folder / f"{d}.png") for r, d in rows], split="train")


@pytest.mark.parametrize("name", sorted(TINY))
def test_extractor_through_store_and_sql(name, tmp_path, monkeypatch, pair_table, tiny_clip_arch):
    weights = tmp_path / "weights"
    monkeypatch.setenv("SIQA_WEIGHTS_DIR", str(weights))
    config = TINY[name](weights, tiny_clip_arch)
    extractor = create(name, **config)
    sources = extractor.weight_sources()
    assert sources and all(s.found and s.found.startswith(str(weights)) for s in sources), sources

    store = FeatureStore(tmp_path / "store")
    summary = store.extract(pair_table, [extractor], progress=False)
    assert not summary.failures, summary.failures
    if isinstance(extractor, ImageExtractor):
        assert summary.computed[f"{name}/image"] == 6  # the shared reference was encoded once
    assert summary.computed[f"{name}/pair"] == 4
    again = store.extract(pair_table, [create(name, **config)], progress=False)
    assert not again.computed  # everything came from the store

    con = connect(store.root)
    features = con.execute("SELECT * FROM features ORDER BY name").df()
    assert len(features) == 4
    for col in extractor.pair_columns():
        values = features[f"{name}_{col.name}"]
        if col.dim == 0:
            assert np.isfinite(values.astype(float)).all(), col.name
        else:
            assert all(len(v) == col.dim and np.isfinite(v).all() for v in values), col.name
    if isinstance(extractor, ImageExtractor):
        assert con.execute(f"SELECT count(*) FROM {name}_image").fetchone()[0] == 6
    extractor.close()


def test_identical_images_give_identity_values(tmp_path, monkeypatch, tiny_clip_arch):
    """Whatever the weights, a pair of identical images is a perfect match for the image-level extractors."""
    monkeypatch.setenv("SIQA_WEIGHTS_DIR", str(tmp_path))
    img = DecodedImage("a", photo("coffee", 64))
    for name, prefix in (("clip", f"{tiny_clip_arch.replace('-', '_')}_test_"), ("dino", "s56_"), ("imagenet", "")):
        ex = create(name, **TINY[name](tmp_path, tiny_clip_arch))
        cols = ex.compute_images([img])
        pair = ex.derive_pairs(cols, cols)
        key = {"clip": "cos", "dino": "cls_cos", "imagenet": "embed_cos"}[name]
        assert pair[prefix + key][0] == pytest.approx(1.0, abs=1e-6)
        if name == "dino":
            assert pair["s56_patch_cos_min"][0] == pytest.approx(1.0, abs=1e-5)
        if name == "imagenet":
            assert pair["kl"][0] == pytest.approx(0.0, abs=1e-9) and pair["top1_agree"][0] == 1.0


def test_resize_policies_keep_aspect_and_never_squash_silently():
    assert target_shape(300, 600, 224, "keep", multiple=14) == (154, 322)  # area ~224^2, multiples of 14
    assert target_shape(300, 600, 224, "pad") == (224, 224)
    rt = Runtime.create("cpu")
    assert rt.autocast_dtype is None and not rt.channels_last
    wide = DecodedImage("w", np.full((50, 100, 3), 255, np.uint8))
    [(idx, batch)] = model_batches([wide], 32, "pad", (0.5,) * 3, (0.25,) * 3, rt)
    # letterboxed: the image fills the middle 16 rows at (1-0.5)/0.25 = 2, the padding is the mean -> 0
    assert idx == [0] and batch.shape == (1, 3, 32, 32)
    assert torch.allclose(batch[0, :, 8:24], torch.full((3, 16, 32), 2.0), atol=1e-4)
    assert torch.count_nonzero(batch[0, :, :8]) == 0 and torch.count_nonzero(batch[0, :, 24:]) == 0
    tall = DecodedImage("t", np.zeros((100, 50, 3), np.uint8))
    groups = model_batches([wide, tall, wide], 56, "keep", (0.5,) * 3, (0.25,) * 3, rt, multiple=14)
    assert sorted(tuple(b.shape[2:]) for _, b in groups) == [(42, 84), (84, 42)]
    assert sorted(i for idx, _ in groups for i in idx) == [0, 1, 2]


def test_runtime_settings_do_not_change_the_store_folder():
    a = create("imagenet", batch_size=4, device="cpu")
    b = create("imagenet", batch_size=64)
    assert a.folder == b.folder
    assert create("imagenet", size=320).folder != a.folder
    assert create("imagenet", random_init=True).folder != a.folder


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="resize"):
        create("clip", resize="stretch")
    with pytest.raises(ValueError, match="open_clip knows no model"):
        create("clip", models=[{"arch": "no-such-net", "pretrained": "x"}])
    with pytest.raises(ValueError, match=r"extractor lpips: nets\[0\] = 'squeezy': Input should be 'alex' or 'vgg'"):
        create("lpips", nets=["squeezy"])
    assert "random init" in create("dino", random_init=True).weight_sources()[0].found
    assert issubclass(EXTRACTORS.get("topiq_fr"), PairExtractor)
