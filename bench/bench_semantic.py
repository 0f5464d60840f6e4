"""CPU cost of the semantic extractors (text, regions, faces) with their real packaged models.

Pairs are demo references (signs, faces; `featurestore.datasets.demo`) against a JPEG of themselves, each pair with its
own reference, so nothing is reused between pairs: a pair costs both images' per-image work (text: detection
+ recognition of the reference, detection of the degraded image; regions: one forward pass each; faces: one
cascade search each) plus the pair's own (recognising the reference boxes in the degraded image, pooling the
regions, comparing face crops). Seconds per image is half of that. The model loads outside the timing.

    python bench/bench_semantic.py [--pairs N] [--size 256,512] [--only text,regions,faces]
"""
from __future__ import annotations

import argparse
import io
import os
import time

import numpy as np

PHOTOS = ("astronaut", "coffee", "motorcycle", "camera", "china", "rocket")
EXTRACTORS = {
    "text": ("text", {}),
    "regions": ("regions", {"device": "cpu"}),
    "regions-lite2": ("regions", {"device": "cpu", "model": "efficientnet-lite2"}),
    "faces": ("faces", {}),
}


def pairs(n: int, size: int):
    from PIL import Image

    from featurestore.datasets.demo import PHOTOS as DEMO, load_photo
    from featurestore.io import DecodedImage, DecodedPair

    by_name = {p.name: p for p in DEMO}
    out = []
    for i in range(n):
        ref = load_photo(by_name[PHOTOS[i % len(PHOTOS)]], size).rgb
        buffer = io.BytesIO()
        Image.fromarray(ref).save(buffer, "JPEG", quality=40)
        dist = np.asarray(Image.open(buffer).convert("RGB"))
        out.append(DecodedPair(f"p{i}", DecodedImage(f"r{i}", ref), DecodedImage(f"d{i}", dist)))
    return out


def seconds_per_pair(name: str, config: dict, n: int, size: int) -> tuple[float, float]:
    from featurestore.extractors import create

    extractor = create(name, **config)
    t0 = time.perf_counter()
    extractor.compute_pairs(pairs(1, size))  # loads the model
    load = time.perf_counter() - t0
    batch = pairs(n, size)
    t0 = time.perf_counter()
    extractor.compute_pairs(batch)
    seconds = (time.perf_counter() - t0) / n
    extractor.close()
    return seconds, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--size", default="256,512", help="long side of the images, comma-separated")
    parser.add_argument("--only", default="", help="comma-separated names among " + ", ".join(EXTRACTORS))
    args = parser.parse_args()
    wanted = [w for w in args.only.split(",") if w] or list(EXTRACTORS)
    print(f"CPU: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (other processes share these cores)")
    print(f"{'extractor':<16} {'size':>5} {'s/pair':>8} {'s/image':>8} {'load s':>7}")
    for size in (int(s) for s in args.size.split(",")):
        for key in wanted:
            name, config = EXTRACTORS[key]
            per_pair, load = seconds_per_pair(name, config, args.pairs, size)
            print(f"{key:<16} {size:>5} {per_pair:>8.2f} {per_pair / 2:>8.2f} {load:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
