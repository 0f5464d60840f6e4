"""Randomly initialised Qwen vision-language models built offline, for tests and benchmarks of the `vlm` extractor.

No model hub is reachable from CI or the development machines, so the real classes are built from
configurations written here: tiny Qwen2-VL and Qwen3-VL models (~100k parameters, milliseconds on a CPU) saved
as folders the extractor loads exactly as it would load a downloaded checkpoint, and the public Qwen2.5-VL-7B
configuration for throughput measurements on a GPU. The tokenizer is a byte-level BPE trained on the spot
with the Qwen special tokens; its vocabulary is small, which does not change the cost of a forward pass
once the model's `vocab_size` is the real one. Values such models produce are meaningless by design.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

from featurestore.extractors.vlm import DEFAULT_QUESTIONS

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

# The Qwen2-VL / Qwen2.5-VL chat template, reduced to text and image parts (what the extractor sends).
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Public config.json of Qwen/Qwen2.5-VL-7B-Instruct (text and vision towers), in transformers 5 field names.
QWEN25_VL_7B = {
    "text_config": {
        "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "hidden_act": "silu",
        "max_position_embeddings": 128000, "rms_norm_eps": 1e-6, "use_sliding_window": False,
        "sliding_window": 32768, "max_window_layers": 28,
        "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0},
    },
    "vision_config": {
        "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "hidden_act": "silu",
        "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
        "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
    },
}

# Tiny members of two families: 2 text layers of width 32 (head dim 8: the M-RoPE sections must sum to half of
# it), a 1- or 2-layer vision tower. Qwen2-VL has 14 px patches, Qwen3-VL 16 px ones and deepstack features.
TINY = {
    "qwen2_vl": {
        "classes": ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor", "Qwen2VLVideoProcessor"),
        "patch_size": 14,
        "text_config": {
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 10000.0},
        },
        "vision_config": {"depth": 1, "embed_dim": 16, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2},
    },
    "qwen3_vl": {
        "classes": ("Qwen3VLConfig", "Qwen3VLForConditionalGeneration", "Qwen3VLProcessor", "Qwen3VLVideoProcessor"),
        "patch_size": 16,
        "text_config": {
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 1, 1], "mrope_interleaved": True,
                                "rope_theta": 10000.0},
        },
        "vision_config": {"depth": 2, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
                          "out_hidden_size": 32, "num_position_embeddings": 64, "deepstack_visual_indexes": [0]},
    },
}

def training_sentences(questions_file: str | Path = DEFAULT_QUESTIONS) -> list[str]:
    """Every prompt and answer text of a question set, with the answer words repeated so BPE merges them into
    single tokens as a real Qwen vocabulary has them."""
    with open(questions_file, "rb") as fh:
        spec = tomllib.load(fh)
    texts = list(spec.get("prompt", {}).values())
    for kind in spec.get("answers", {}).values():
        texts.append(kind["instruction"])
        texts.extend([" ".join(kind["options"]) + " " + " ".join(o.lower() for o in kind["options"])] * 50)
    texts.extend(q["text"] for q in spec.get("questions", []))
    return texts


def train_tokenizer(sentences: list[str], vocab_size: int = 600):
    """A byte-level BPE tokenizer with the Qwen special tokens, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=QWEN_SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(sentences, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def build_processor(tokenizer, max_pixels: int, min_pixels: int = 28 * 28, processor: str = "Qwen2VLProcessor",
                    video_processor: str = "Qwen2VLVideoProcessor", patch_size: int = 14):
    """The processor of a Qwen-VL family checkpoint around `tokenizer` (merge 2, CLIP mean/std)."""
    import transformers
    from transformers import Qwen2VLImageProcessor

    return getattr(transformers, processor)(
        image_processor=Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch_size),
        tokenizer=tokenizer, video_processor=getattr(transformers, video_processor)(),
        chat_template=QWEN_CHAT_TEMPLATE)


def special_token_ids(tokenizer) -> dict:
    """The config fields that must name the tokenizer's ids of the Qwen special tokens."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    return {
        "image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"],
    }


def _text_ids(tokenizer) -> dict:
    return {"bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
            "pad_token_id": tokenizer.pad_token_id}


def tiny_vlm(tokenizer, family: str = "qwen2_vl", seed: int = 0):
    """A randomly initialised Qwen2-VL or Qwen3-VL of ~100k parameters (float32, CPU)."""
    import torch
    import transformers

    spec = TINY[family]
    config_class, model_class = (getattr(transformers, name) for name in spec["classes"][:2])
    text = {**spec["text_config"], "vocab_size": len(tokenizer), **_text_ids(tokenizer)}
    config = config_class(text_config=text, vision_config=dict(spec["vision_config"]), **special_token_ids(tokenizer))
    torch.manual_seed(seed)
    return model_class(config).eval()


def save_tiny_vlm(folder: str | Path, family: str = "qwen2_vl", seed: int = 0, max_pixels: int = 112 * 112) -> Path:
    """Write a tiny random checkpoint (weights, config, tokenizer, processor, chat template) that
    `AutoModelForImageTextToText` / `AutoProcessor.from_pretrained(folder)` load like a downloaded one."""
    folder = Path(folder)
    spec = TINY[family]
    tokenizer = train_tokenizer(training_sentences())
    tiny_vlm(tokenizer, family, seed).save_pretrained(folder)
    patch = spec["patch_size"]
    build_processor(tokenizer, max_pixels=max_pixels, min_pixels=(2 * patch) ** 2, processor=spec["classes"][2],
                    video_processor=spec["classes"][3], patch_size=patch).save_pretrained(folder)
    return folder


def qwen25_vl_7b(tokenizer, device: str = "cuda"):
    """Randomly initialised Qwen2.5-VL-7B-Instruct in bfloat16 on `device` (about 16 GB), real vocabulary size."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = {**QWEN25_VL_7B["text_config"], **_text_ids(tokenizer)}
    config = Qwen2_5_VLConfig(text_config=text, vision_config=dict(QWEN25_VL_7B["vision_config"]),
                              **special_token_ids(tokenizer))
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    return model.eval()
