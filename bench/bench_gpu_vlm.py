"""GPU throughput of the `vlm` extractor's judge on a randomly initialised Qwen2.5-VL-7B-Instruct (bfloat16).

No hub is reachable, so the model is built from the public config (28 layers of width 3584, vocabulary 152064,
32-layer vision tower) with random weights: the arithmetic, memory traffic and prompt length are those of the
real checkpoint, the answers are noise. The prompt is the extractor's own: system text, reference and degraded
image (448x448 photos -> 256 visual tokens each), one question or the whole question set. Sampled answers of a
random model never stop early, so the K-sample rows are upper bounds (every answer max_new_tokens long)."""
from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def photo_pairs(n: int, size: int = 448) -> list[tuple[np.ndarray, np.ndarray]]:
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(0)
    pairs = []
    for i in range(n):
        rgb = getattr(skimage.data, PHOTOS[i % len(PHOTOS)])()[..., :3]
        ref = np.asarray(Image.fromarray(rgb).resize((size, size), Image.LANCZOS))
        pairs.append((ref, np.clip(ref + rng.normal(0, 8 + 4 * i, ref.shape), 0, 255).astype(np.uint8)))
    return pairs


def vlm_qwen25_vl_7b(n_pairs: int = 16, max_new_tokens: int = 16) -> list[dict]:
    """Pairs per second of `VlmJudge`: one question, the question set (images once per pair, as the extractor
    runs it, and the whole prompt per question), and the question set with K sampled answers each."""
    import torch

    from featurestore.extractors.vlm import DEFAULT_QUESTIONS, QuestionSet, VlmExtractor, VlmJudge
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tree root: tests.support
    from tests.support.vlm_random import build_processor, qwen25_vl_7b, train_tokenizer, training_sentences

    if not torch.cuda.is_available():
        print("vlm: no CUDA GPU, skipped")
        return []
    logging.getLogger("featurestore.extractors.vlm").setLevel(logging.ERROR)  # random answers never parse
    tokenizer = train_tokenizer(training_sentences())
    processor = build_processor(tokenizer, max_pixels=VlmExtractor.default_config["max_pixels"],
                                min_pixels=56 * 56, processor="Qwen2_5_VLProcessor")
    t0 = time.perf_counter()
    model = qwen25_vl_7b(tokenizer, "cuda")
    torch.cuda.synchronize()
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    questions = QuestionSet.load(DEFAULT_QUESTIONS)
    overall = dataclasses.replace(questions, questions=questions.questions[-1:])
    pairs = photo_pairs(n_pairs)
    rows = []
    many = f"{len(questions.questions)} questions"
    for label, qs, k, share, n in [
        ("1 question", overall, 0, True, n_pairs),
        (f"{many}, images once per pair", questions, 0, True, n_pairs),
        (f"{many}, whole prompt per question", questions, 0, False, n_pairs),
        (f"{many} + K=8 sampled x {max_new_tokens} tok", questions, 8, True, max(2, n_pairs // 4)),
        (f"{many} + K=64 sampled x {max_new_tokens} tok", questions, 64, True, 2),
    ]:
        judge = VlmJudge(model, processor, qs, max_pixels=VlmExtractor.default_config["max_pixels"],
                         k_samples=k, max_new_tokens=max_new_tokens, share_prefix=share)
        judge.judge(*pairs[0])  # warm-up: kernels, allocator
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for ref, dist in pairs[:n]:
            judge.judge(ref, dist)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        tokens = processor(text=judge.prompts[:1], images=[judge.fit_budget(p) for p in pairs[0]],
                           return_tensors="pt")["input_ids"].shape[1]
        # `images_per_s` / `ms_per_batch` (a batch = one pair) are the columns bench_gpu.py prints
        rows.append({"benchmark": f"vlm Qwen2.5-VL-7B bf16, {label} (2 images/pair)",
                     "pairs_per_s": n / seconds, "images_per_s": 2 * n / seconds, "ms_per_batch": 1000 * seconds / n,
                     "prompt_tokens": tokens, "peak_gib": torch.cuda.max_memory_allocated() / 2**30})
    print(f"vlm: {torch.cuda.get_device_name()}, {params / 1e9:.2f}B parameters, random init {build_s:.1f}s, "
          f"prompt of {rows[0]['prompt_tokens']} tokens")
    del model
    torch.cuda.empty_cache()
    return rows


def main() -> None:
    rows = vlm_qwen25_vl_7b()
    print(f"{'benchmark':<72} {'pairs/s':>8} {'s/pair':>8} {'peak GiB':>9}")
    for r in rows:
        print(f"{r['benchmark']:<72} {r['pairs_per_s']:>8.2f} {r['ms_per_batch'] / 1000:>8.3f} {r['peak_gib']:>9.1f}")


if __name__ == "__main__":
    main()
