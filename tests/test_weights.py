"""Weights resolution: config path -> $SIQA_WEIGHTS_DIR -> library cache; one error listing all that is missing;
and the real loading path through a temporary Hugging Face cache and TORCH_HOME."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featurestore.errors import SiqaError
from featurestore.extractors import create
from featurestore.io import DecodedImage, DecodedPair
from featurestore.weights import MissingWeights, WeightSpec, check_weights, describe_weights, resolve

from conftest import photo
from test_extractors_deep import TINY_CLIP, tiny_clip, tiny_dino, tiny_lpips, tiny_clip_arch  # noqa: F401


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """No weights anywhere: fresh SIQA_WEIGHTS_DIR, Hugging Face cache and TORCH_HOME."""
    for env, sub in (("SIQA_WEIGHTS_DIR", "weights"), ("HF_HUB_CACHE", "hf"), ("TORCH_HOME", "torch")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(env, str(tmp_path / sub))
    return tmp_path


def test_resolution_order(tmp_path, monkeypatch):
    explicit, env_dir, cache = tmp_path / "explicit.pth", tmp_path / "env", tmp_path / "cache" / "w.pth"
    for path in (explicit, env_dir / "org" / "w.pth", cache):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    monkeypatch.setenv("SIQA_WEIGHTS_DIR", str(env_dir))
    spec = WeightSpec("w", "org/w.pth", "https://example.org/w.pth", str(explicit), (cache,))
    assert resolve(spec).found == str(explicit)
    spec = WeightSpec("w", "org/w.pth", "https://example.org/w.pth", "", (cache,))
    assert resolve(spec).found == str(env_dir / "org" / "w.pth")
    monkeypatch.delenv("SIQA_WEIGHTS_DIR")
    assert resolve(spec).found == str(cache)
    cache.unlink()
    missing = resolve(spec)
    assert missing.found is None and "https://example.org/w.pth" in missing.hint and "org/w.pth" in missing.hint


def test_a_wrong_config_path_does_not_fall_through(tmp_path, monkeypatch):
    (tmp_path / "w.pth").write_bytes(b"x")
    monkeypatch.setenv("SIQA_WEIGHTS_DIR", str(tmp_path))
    source = resolve(WeightSpec("w", "w.pth", "https://example.org/w.pth", str(tmp_path / "typo.pth")))
    assert source.found is None and "typo.pth" in source.hint


def test_model_folder_needs_config_and_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("SIQA_WEIGHTS_DIR", str(tmp_path))
    folder = tmp_path / "org" / "model"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    spec = WeightSpec("m", "org/model", "https://huggingface.co/org/model", folder=True)
    assert resolve(spec).found is None
    (folder / "model.safetensors").write_bytes(b"x")
    assert resolve(spec).found == str(folder)


def test_missing_weights_stop_with_one_list(empty_caches, tiny_clip_arch):  # noqa: F811
    extractors = [create("clip", models=[{"arch": "ViT-B-16", "pretrained": "openai"},
                                         {"arch": tiny_clip_arch, "pretrained": "test"}]),
                  create("dino"), create("lpips"), create("dists"), create("topiq_fr"), create("imagenet")]
    with pytest.raises(MissingWeights) as info:
        check_weights(extractors)
    assert isinstance(info.value, SiqaError)
    message = str(info.value)
    # 2 clip + 1 dino + 4 lpips + 2 dists + 1 topiq = 10 sources; vgg16 is shared by LPIPS-vgg and DISTS
    assert len(info.value.missing) == 10 and message.count("\n  - ") == 9
    for needle in ("timm/vit_base_patch16_clip_224.openai/open_clip_model.safetensors",
                   f"open_clip/{tiny_clip_arch}-test.safetensors", "facebook/dinov2-large",
                   "alexnet-owt-7be5be79.pth", "vgg16-397923af.pth", "DISTS_weights-f5e65c96.pth",
                   "cfanet_fr_kadid_res50-2c4cc61d.pth", str(empty_caches / "weights")):
        assert needle in message
    assert "imagenet" not in message  # its weights ship in a package: found even with every cache empty
    report = describe_weights(extractors)
    assert "imagenet: ok" in report and "dino: MISSING" in report and "efficientnet-lite0" in report
    assert check_weights([create("imagenet")])[0].found.endswith("efficientnet-lite0-57934424.pth")


def _hub_layout(hub, repo: str, files: dict) -> None:
    """What huggingface_hub leaves behind after a download: blobs under snapshots/<rev>, refs/main = rev."""
    root = hub / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("0123abcd")
    for name, source in files.items():
        (snapshot / name).write_bytes(source.read_bytes())


def test_real_loading_path_through_hugging_face_cache(empty_caches, monkeypatch, tiny_clip_arch):  # noqa: F811
    """Random weights placed in a temporary Hugging Face cache, in its own layout, load unchanged."""
    from open_clip.pretrained import _PRETRAINED

    staging = empty_caches / "staging"
    tiny_dino(staging, None)
    tiny_clip(staging, tiny_clip_arch)
    hub = empty_caches / "hf"
    folder = staging / "siqa-test" / "dinov2-tiny"
    _hub_layout(hub, "siqa-test/dinov2-tiny", {p.name: p for p in folder.iterdir()})
    # a pretrained tag as open_clip's registry declares the OpenAI ones: weights in a hub repo
    monkeypatch.setitem(_PRETRAINED, tiny_clip_arch, {"hubtag": {"hf_hub": "siqa-test/tiny-clip/"}})
    _hub_layout(hub, "siqa-test/tiny-clip",
                {"open_clip_model.safetensors": staging / "open_clip" / f"{tiny_clip_arch}-test.safetensors"})

    images = [DecodedImage("a", photo("coffee", 64)), DecodedImage("b", photo("chelsea", 64))]
    dino = create("dino", model="siqa-test/dinov2-tiny", sizes=[56], grid=2, patch_proj_dim=0)
    clip = create("clip", models=[{"arch": tiny_clip_arch, "pretrained": "hubtag"}], prompts=["a cat"])
    for ex in (dino, clip):
        [source] = check_weights([ex])
        assert source.found.startswith(str(hub)), source
        cols = ex.compute_images(images)
        assert all(np.isfinite(v).all() for v in cols.values())
    assert cols[f"{TINY_CLIP.replace('-', '_')}_hubtag_embedding"].shape == (2, 16)


def test_real_loading_path_through_torch_home(empty_caches):
    """torchvision's checkpoint in $TORCH_HOME/hub/checkpoints and pyiqa's in $TORCH_HOME/hub/pyiqa."""
    staging = empty_caches / "staging"
    tiny_lpips(staging, None)
    hub = empty_caches / "torch" / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "pyiqa").mkdir()
    (staging / "alexnet-owt-7be5be79.pth").rename(hub / "checkpoints" / "alexnet-owt-7be5be79.pth")
    lins = staging / "chaofengc" / "IQA-PyTorch-Weights" / "LPIPS_v0.1_alex-df73285e.pth"
    lins.rename(hub / "pyiqa" / lins.name)

    lpips = create("lpips", nets=["alex"])
    assert all(s.found.startswith(str(hub)) for s in check_weights([lpips]))
    ref = DecodedImage("r", photo("coffee", 64))
    out = lpips.compute_pairs([DecodedPair("p", ref, ref), DecodedPair("q", ref, DecodedImage("d", 255 - ref.rgb))])
    assert out["alex"][0] == pytest.approx(0.0, abs=1e-6) and out["alex"][1] != 0.0


def test_a_checkpoint_that_does_not_fit_is_refused(empty_caches):
    import torch

    weights = empty_caches / "weights"
    tiny_lpips(weights, None)
    torch.save({"features.0.weight": torch.zeros(1)}, weights / "alexnet-owt-7be5be79.pth")
    with pytest.raises(ValueError, match="convolutions"):
        create("lpips", nets=["alex"]).loaded


@pytest.mark.parametrize("env", ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"])
def test_hub_cache_follows_huggingface_hub_environment(env, tmp_path, monkeypatch):
    """The same folder huggingface_hub itself resolves (its constants, re-read under this environment)."""
    import importlib

    import huggingface_hub.constants as constants

    from featurestore.weights import hf_cache_dir

    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(env, str(tmp_path / env))
    try:
        expected = Path(importlib.reload(constants).HF_HUB_CACHE)
        assert hf_cache_dir() == expected
        assert str(expected).startswith(str(tmp_path / env))
    finally:
        monkeypatch.undo()
        importlib.reload(constants)
