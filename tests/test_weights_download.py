"""`siqa weights --download / --check` offline: the libraries' download functions are replaced by fakes that
serve files from a local folder (a stand-in for the hub and download.pytorch.org), never the network."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cli import main
from blend.settings import load_settings
from featurestore.config import build_extractors
from featurestore.extractors.vlm import VlmExtractor
from featurestore.weights import hf_cache_dir

VLM = "Qwen/Qwen2.5-VL-7B-Instruct"
CHECKPOINT = ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
              "preprocessor_config.json", "tokenizer_config.json", "tokenizer.json", "chat_template.json"]


class FakeRemote:
    """Hugging Face repos and plain URLs served from `root`; records every file it hands out."""

    def __init__(self, root: Path):
        self.root, self.served = root, []

    def repo(self, repo_id: str) -> Path:
        return self.root / "hub" / repo_id

    def _serve(self, src: Path, dst: Path):
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():  # as the hub client: files already there are not fetched again (resume)
            shutil.copy(src, dst)
            self.served.append(src.name)

    def _snapshot_dir(self, repo_id, cache_dir):
        return Path(cache_dir) / f"models--{repo_id.replace('/', '--')}" / "snapshots" / ("a" * 40)

    def snapshot_download(self, repo_id, cache_dir=None, local_dir=None, **_):
        target = Path(local_dir) if local_dir else self._snapshot_dir(repo_id, cache_dir)
        for f in sorted(self.repo(repo_id).iterdir()):
            self._serve(f, target / f.name)
        if not local_dir:
            (target.parents[1] / "refs").mkdir(exist_ok=True)
            (target.parents[1] / "refs" / "main").write_text("a" * 40)
        return str(target)

    def hf_hub_download(self, repo_id, filename, cache_dir=None, local_dir=None, **_):
        target = (Path(local_dir) if local_dir else self._snapshot_dir(repo_id, cache_dir)) / filename
        self._serve(self.repo(repo_id) / filename, target)
        if not local_dir:
            (target.parents[2] / "refs").mkdir(exist_ok=True)
            (target.parents[2] / "refs" / "main").write_text("a" * 40)
        return str(target)

    def download_url_to_file(self, url, dst, hash_prefix=None, progress=True):
        shutil.copy(self.root / "urls" / os.path.basename(url), dst)
        self.served.append(os.path.basename(url))


@pytest.fixture
def remote(tmp_path, monkeypatch):
    import huggingface_hub
    import torch.hub

    for env, sub in (("SIQA_WEIGHTS_DIR", "weights"), ("HF_HUB_CACHE", "hf"), ("TORCH_HOME", "torch")):
        monkeypatch.setenv(env, str(tmp_path / sub))
    fake = FakeRemote(tmp_path / "remote")
    repo = fake.repo(VLM)
    repo.mkdir(parents=True)
    for name in CHECKPOINT:
        (repo / name).write_text("{}")
    (repo / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": CHECKPOINT[1], "b": CHECKPOINT[2]}}))
    (fake.repo("facebook/dinov2-large")).mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (fake.repo("facebook/dinov2-large") / name).write_bytes(b"x" * 1000)
    (fake.root / "urls").mkdir()
    for name in ("alexnet-owt-7be5be79.pth", "LPIPS_v0.1_alex-df73285e.pth"):
        (fake.root / "urls" / name).write_bytes(b"y" * 2048)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake.hf_hub_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake.download_url_to_file)
    return fake


def siqa(capsys, *args) -> tuple[int, str]:
    """Exit status and output of the `siqa` command line (errors print one line and exit 2)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out + out.err


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "weights.toml"
    path.write_text("[extractors.formula]\nenabled = true\n" + text)
    return str(path)


VLM_DINO_LPIPS = """
[extractors.vlm]
enabled = true
[extractors.dino]
enabled = true
[extractors.lpips]
enabled = true
nets = ["alex"]
[extractors.clip]
enabled = false
"""


def test_download_fills_the_library_caches_then_check_passes(tmp_path, remote, capsys):
    cfg = config(tmp_path, VLM_DINO_LPIPS)
    run = lambda *args: siqa(capsys, "weights", "--config", cfg, *args)  # noqa: E731
    code, out = run("--check")
    assert code == 1 and "missing for enabled extractor(s) dino, lpips, vlm" in out  # a failed check: exit 1 (2 is for usage errors)
    assert f"hf download {VLM} --local-dir {tmp_path / 'weights' / VLM}" in out
    code, out = run("--download")
    assert code == 0, out
    assert sorted(remote.served) == sorted(CHECKPOINT + ["model.safetensors.index.json", "config.json",
                                                         "model.safetensors", "alexnet-owt-7be5be79.pth",
                                                         "LPIPS_v0.1_alex-df73285e.pth"])
    snapshot = hf_cache_dir() / "models--Qwen--Qwen2.5-VL-7B-Instruct" / "snapshots" / ("a" * 40)
    assert f"vlm: transformers {VLM}: downloaded" in out and str(snapshot) in out
    assert "lpips: torchvision alexnet ImageNet (LPIPS backbone): downloaded, 2.0 KB at " in out
    assert (tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth").stat().st_size == 2048
    assert (tmp_path / "torch" / "hub" / "pyiqa" / "LPIPS_v0.1_alex-df73285e.pth").is_file()
    assert not list((tmp_path / "torch").rglob("*.partial"))
    assert VlmExtractor().weight_sources()[0].found == str(snapshot)
    assert run("--check")[0] == 0
    # idempotent: nothing is fetched twice
    remote.served.clear()
    code, out = run("--download")
    assert code == 0 and not remote.served and out.count("already there") == 4


def test_download_to_a_folder_resumes_a_partial_snapshot(tmp_path, remote, monkeypatch, capsys):
    cfg = config(tmp_path, "[extractors.vlm]\nenabled = true\n")
    target = tmp_path / "mirror"
    partial = target / VLM
    partial.mkdir(parents=True)
    for name in CHECKPOINT[:2]:  # an interrupted earlier run: config and the first shard only
        shutil.copy(remote.repo(VLM) / name, partial / name)
    monkeypatch.setenv("SIQA_WEIGHTS_DIR", str(target))
    before = VlmExtractor().weight_sources()[0]
    assert before.found is None and f"incomplete: {partial} has no weights" in before.hint
    code, out = siqa(capsys, "weights", "--config", cfg, "--download", "--to", str(target))
    assert code == 0, out
    assert sorted(remote.served) == sorted(set(CHECKPOINT[2:]) | {"model.safetensors.index.json"})
    assert f"SIQA_WEIGHTS_DIR={target.resolve()}" in out
    assert VlmExtractor().weight_sources()[0].found == str(partial)


def test_the_vlm_check_reads_every_shard_and_the_processor_files(tmp_path, remote, capsys):
    folder = tmp_path / "weights" / VLM
    shutil.copytree(remote.repo(VLM), folder)
    assert VlmExtractor().weight_sources()[0].found == str(folder)
    (folder / CHECKPOINT[2]).unlink()
    source = VlmExtractor().weight_sources()[0]
    assert source.found is None
    assert f"lacks 1 of the 2 weight shards model.safetensors.index.json lists (e.g. {CHECKPOINT[2]})" in source.hint
    assert f"`hf download {VLM} --local-dir {folder}`" in source.hint
    shutil.copy(remote.repo(VLM) / CHECKPOINT[2], folder)
    (folder / "preprocessor_config.json").unlink()
    assert "has no preprocessor_config.json or processor_config.json" in VlmExtractor().weight_sources()[0].hint
    # the check says so on the command line and exits non-zero
    code, out = siqa(capsys, "weights", "--config", config(tmp_path, "[extractors.vlm]\nenabled = true\n"), "--check")
    assert code == 1 and "1 weight(s) missing for enabled extractor(s) vlm" in out


def test_every_default_weight_has_a_download_plan():
    """A new weight in an extractor must say how it is fetched (or ship in a package), or --download skips it."""
    from featurestore.downloads import needed_specs
    from featurestore.weights import fetch_plan

    for ex in build_extractors(load_settings("configs/default.toml").extractors, include_disabled=True):
        for spec in needed_specs(ex):
            assert fetch_plan(spec) is not None or "pip install" in spec.download, (ex.name, spec.what)


@pytest.mark.parametrize("env, expect", [
    ({"HF_HUB_CACHE": "a", "HUGGINGFACE_HUB_CACHE": "b", "HF_HOME": "c"}, "a"),
    ({"HUGGINGFACE_HUB_CACHE": "b", "HF_HOME": "c"}, "b"),
    ({"HF_HOME": "c"}, "c/hub"),
    ({"XDG_CACHE_HOME": "d"}, "d/huggingface/hub"),
])
def test_hub_cache_follows_huggingface_hub(env, expect, monkeypatch, tmp_path):
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, str(tmp_path / value))
    assert hf_cache_dir() == tmp_path / expect


def test_legacy_hub_cache_variable_finds_the_vlm(tmp_path, remote, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "legacy"))
    snapshot = Path(remote.snapshot_download(VLM, cache_dir=tmp_path / "legacy"))
    assert VlmExtractor().weight_sources()[0].found == str(snapshot)
