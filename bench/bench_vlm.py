"""CPU seconds per pair of the `vlm` extractor with the tiny random Qwen2-VL (`make bench`).

Measures the extractor's own work around the model (prompting, image budget, processor, token-probability
reading, hidden-state pooling, sampled-answer parsing): with ~100k parameters the model itself costs little.
Real photos from scikit-image, 512x384, degraded with Gaussian noise."""
from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tree root: tests.support

from featurestore.extractors.vlm import VlmExtractor  # noqa: E402
from featurestore.io import DecodedImage, DecodedPair  # noqa: E402
from tests.support.vlm_random import save_tiny_vlm  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def photo_pairs(n: int) -> list[DecodedPair]:
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(n):
        rgb = getattr(skimage.data, PHOTOS[i % len(PHOTOS)])()[..., :3]
        ref = np.asarray(Image.fromarray(rgb).resize((512, 384), Image.LANCZOS))
        dist = np.clip(ref + rng.normal(0, 8 + 4 * i, ref.shape), 0, 255).astype(np.uint8)
        pairs.append(DecodedPair(f"{i:032x}", DecodedImage(f"r{i}", ref), DecodedImage(f"d{i}", dist)))
    return pairs


def seconds_per_pair(extractor: VlmExtractor, pairs: list[DecodedPair]) -> float:
    extractor.compute_pairs(pairs[:1])  # loads the model, warms the caches
    t0 = time.perf_counter()
    extractor.compute_pairs(pairs)
    return (time.perf_counter() - t0) / len(pairs)


def main() -> None:
    # a random model's answers never parse; the NaN warnings would bury the table
    logging.getLogger("featurestore.extractors.vlm").setLevel(logging.ERROR)
    pairs = photo_pairs(4)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_vlm(Path(tmp) / "tiny")
        print(f"{'setting':<44} {'s/pair':>8}")
        for label, config in [
            ("11 questions, logits only", {}),
            ("11 questions + K=4 sampled answers (8 tok)", {"k_samples": 4, "max_new_tokens": 8}),
        ]:
            ex = VlmExtractor(path=str(folder), device="cpu", **config)
            print(f"{label:<44} {seconds_per_pair(ex, pairs):>8.3f}", flush=True)


if __name__ == "__main__":
    main()
