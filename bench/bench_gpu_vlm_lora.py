"""Cost of the `vlm_lora` pool member's fine-tune: seconds per epoch, seconds per predicted pair, peak memory.

    python bench/bench_gpu_vlm_lora.py            # CUDA GPU: Qwen3-VL-4B-Instruct size, bf16 (a few minutes)
    python bench/bench_gpu_vlm_lora.py --tiny     # CPU: a tiny Qwen3-VL, checks that the script runs

The model is randomly initialised from the public Qwen3-VL-4B-Instruct configuration (36 text layers of
width 2560, vocabulary 151936, 24-layer vision tower with deepstack mergers): the arithmetic and memory of the
real checkpoint, meaningless values (no hub on the benchmark machines). The member's own `fine_tune` and
`predict_images` run on it, with its defaults: LoRA rank 64, alpha 128 on the vision tower, aligner and language
model, batch 16, gradient checkpointing, two 448x448 photos per pair (196 visual tokens each). Seconds per epoch
are for the 510 SeIQA training pairs (32 steps of ~16); the first step (warm-up) is left out of the mean.
The tokenizer is a small BPE with the Qwen special tokens: the prompt's text is a few dozen tokens either way,
the images dominate.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_gpu_vlm import photo_pairs  # noqa: E402

# Public config.json of Qwen/Qwen3-VL-4B-Instruct, in transformers 5 field names.
QWEN3_VL_4B = {
    "text_config": {
        "vocab_size": 151936, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "hidden_act": "silu",
        "max_position_embeddings": 262144, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
        "rope_parameters": {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True,
                            "rope_theta": 5000000.0},
    },
    "vision_config": {
        "depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16, "out_hidden_size": 2560,
        "hidden_act": "gelu_pytorch_tanh", "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
        "num_position_embeddings": 2304, "deepstack_visual_indexes": [5, 11, 17],
    },
}
SEIQA_TRAIN_PAIRS = 510


def build(tiny: bool):
    """(random Qwen3-VL model, processor, device, member settings)."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from tests.support.vlm_random import (build_processor, special_token_ids, tiny_vlm, train_tokenizer,
                                         training_sentences)

    tokenizer = train_tokenizer(training_sentences())
    processor = build_processor(tokenizer, max_pixels=448 * 448, min_pixels=32 * 32, processor="Qwen3VLProcessor",
                                video_processor="Qwen3VLVideoProcessor", patch_size=16)
    processor.tokenizer.padding_side = "left"
    if tiny:
        model = tiny_vlm(tokenizer, "qwen3_vl")
        settings = {"lora_rank": 4, "lora_alpha": 8, "batch_size": 4, "head_hidden": (16,), "max_pixels": 64 * 64}
        return model, processor, torch.device("cpu"), settings
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu_vlm_lora: no CUDA GPU here; use --tiny for a CPU check")
    text = {**QWEN3_VL_4B["text_config"], "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"), "pad_token_id": tokenizer.pad_token_id}
    config = Qwen3VLConfig(text_config=text, vision_config=dict(QWEN3_VL_4B["vision_config"]),
                           tie_word_embeddings=True, **special_token_ids(tokenizer))
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen3VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    return model.eval(), processor, torch.device("cuda"), {}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random model on the CPU (a check that it runs)")
    parser.add_argument("--pairs", type=int, default=None, help="training pairs to time (default 4 steps' worth)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    import torch
    from PIL import Image

    from tabular.models.vlm_lora import VlmLoraRegressor

    started = time.perf_counter()
    model, processor, device, settings = build(args.tiny)
    build_s = time.perf_counter() - started
    member = VlmLoraRegressor(**settings, device=str(device))
    batch = int(member.batch_size)
    n = args.pairs or 4 * batch
    size = 64 if args.tiny else 448
    images = [[Image.fromarray(r), Image.fromarray(d)] for r, d in photo_pairs(n, size)]
    target = np.arange(n, dtype=np.float64) % 6
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tuned = member.fine_tune(model, processor, images, target)
    train_peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    steps = tuned["step_seconds"][1:] or tuned["step_seconds"]
    step_s = float(np.mean(steps))
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    raw = member.predict_images(model, processor, tuned["head"], images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    predict_s = (time.perf_counter() - t0) / n
    result = {
        "model": "tiny Qwen3-VL (CPU)" if args.tiny else "Qwen3-VL-4B-Instruct size, random, bf16",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "trainable_parameters": int(sum(p.numel() for p in tuned["peft_model"].parameters() if p.requires_grad)
                                    + sum(p.numel() for p in tuned["head"].parameters())),
        "lora_rank": member.lora_rank, "lora_alpha": member.lora_alpha, "batch_size": batch,
        "image_size": f"{size}x{size}", "pairs_timed": n, "steps_timed": len(steps),
        "seconds_per_step": round(step_s, 4),
        "seconds_per_epoch_510_pairs": round(step_s * math.ceil(SEIQA_TRAIN_PAIRS / batch), 2),
        "seconds_per_predicted_pair": round(predict_s, 4),
        "peak_gib_train": round(train_peak, 2) if train_peak is not None else None,
        "peak_gib_predict": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None,
        "build_seconds": round(build_s, 1), "losses": [round(v, 4) for v in tuned["losses"]],
        "finite_predictions": bool(np.isfinite(raw).all()),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
