"""CPU throughput of the deep extractors at their default input sizes, and the per-image cache at work.

Networks are randomly initialised (no hub here): same architecture, same arithmetic, meaningless values;
EfficientNet-Lite0 uses its packaged real weights. Images are 512x384 photos (the TID2013 / KADID-10k size).
Image-level extractors report images/s (one forward pass per distinct image); pair-level ones (LPIPS, DISTS,
TOPIQ-FR) report pairs/s. The KADID-like row runs the feature store on references shared by many degraded
images, as in KADID-10k (81 references x 125 distortions), and counts the images actually encoded.

    python bench/bench_deep.py [--images N] [--only imagenet,clip_vit_b_16,...]
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
SIZE = (512, 384)


def photos(n: int) -> list[np.ndarray]:
    import skimage.data
    from PIL import Image

    out = []
    for i in range(n):
        rgb = getattr(skimage.data, PHOTOS[i % len(PHOTOS)])()[..., :3]
        out.append(np.asarray(Image.fromarray(rgb).resize(SIZE, Image.LANCZOS)))
    return out


def _images(n: int):
    from featurestore.io import DecodedImage

    return [DecodedImage(f"img{i}", rgb) for i, rgb in enumerate(photos(n))]


def image_rate(name: str, n: int, **config) -> dict:
    """Images/s of an image-level extractor after a warm-up batch (which also loads the model)."""
    from featurestore.extractors import create

    ex = create(name, **config)
    images = _images(n)
    t0 = time.perf_counter()
    ex.compute_images(images[:1])
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ex.compute_images(images)
    seconds = time.perf_counter() - t0
    ex.close()
    return {"rate": n / seconds, "unit": "images/s", "n": n, "load_s": load_s}


def pair_rate(name: str, n: int, **config) -> dict:
    from featurestore.extractors import create
    from featurestore.io import DecodedPair

    ex = create(name, **config)
    images = _images(2 * n)
    pairs = [DecodedPair(f"p{i}", images[2 * i], images[2 * i + 1]) for i in range(n)]
    t0 = time.perf_counter()
    ex.compute_pairs(pairs[:1])
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ex.compute_pairs(pairs)
    seconds = time.perf_counter() - t0
    ex.close()
    return {"rate": n / seconds, "unit": "pairs/s", "n": n, "load_s": load_s}


def kadid_like(refs: int = 3, dists_per_ref: int = 25) -> dict:
    """Feature-store pairs/s on a KADID-shaped table with the `imagenet` extractor: each reference is
    encoded once for all its degraded versions."""
    from PIL import Image

    from featurestore.datasets import PairTable
    from featurestore.extractors import create
    from featurestore.store import FeatureStore

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        rows = []
        for r, ref in enumerate(photos(refs)):
            Image.fromarray(ref).save(folder / f"I{r:02d}.png")
            for d in range(dists_per_ref):
                noisy = np.clip(ref + rng.normal(0, 2 + d, ref.shape), 0, 255).astype(np.uint8)
                Image.fromarray(noisy).save(folder / f"I{r:02d}_{d:02d}.png")
                rows.append((folder / f"I{r:02d}.png", folder / f"I{r:02d}_{d:02d}.png"))
        table = PairTable.from_paths(rows, split="train")
        store = FeatureStore(Path(tmp) / "store")
        extractor = create("imagenet")
        extractor.compute_images(_images(1))  # load outside the timing, like the other rows
        t0 = time.perf_counter()
        summary = store.extract(table, [extractor], progress=False)
        seconds = time.perf_counter() - t0
    encoded = summary.computed["imagenet/image"]
    return {"rate": len(rows) / seconds, "unit": "pairs/s", "n": len(rows), "load_s": 0.0,
            "note": f"{encoded} images encoded for {len(rows)} pairs (no cache: {2 * len(rows)})"}


def benchmarks(n: int) -> dict:
    """Name -> zero-argument benchmark, at each extractor's default size."""
    random = {"random_init": True, "device": "cpu"}
    clip = lambda arch: {"models": [{"arch": arch, "pretrained": "openai"}], **random}  # noqa: E731
    heavy = max(2, n // 2)
    return {
        "imagenet (EfficientNet-Lite0, 224, real weights)": lambda: image_rate("imagenet", 4 * n, device="cpu"),
        "clip ViT-B-16 (224, letterbox)": lambda: image_rate("clip", n, **clip("ViT-B-16")),
        "clip ViT-L-14 (224, letterbox)": lambda: image_rate("clip", heavy, **clip("ViT-L-14")),
        "clip ViT-L-14-336 (336, letterbox)": lambda: image_rate("clip", heavy, **clip("ViT-L-14-336")),
        "dino DINOv2-L (224, aspect kept)": lambda: image_rate("dino", heavy, sizes=[224], **random),
        "dino DINOv2-L (336, aspect kept)": lambda: image_rate("dino", heavy, sizes=[336], **random),
        "lpips alex (native 512x384)": lambda: pair_rate("lpips", n, nets=["alex"], **random),
        "lpips vgg (native 512x384)": lambda: pair_rate("lpips", n, nets=["vgg"], **random),
        "dists (short side 256)": lambda: pair_rate("dists", n, **random),
        "topiq_fr (ResNet50, native 512x384)": lambda: pair_rate("topiq_fr", n, **random),
        "KADID-like store run: 3 refs x 25 dists, imagenet": kadid_like,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4, help="images (or pairs) per timed batch")
    parser.add_argument("--only", default="", help="comma-separated substrings of benchmark names")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # open_clip announces every random init
    import torch

    table = benchmarks(args.images)
    wanted = [w for w in args.only.split(",") if w]
    print(f"CPU: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f} (other processes share these cores)")
    print(f"{'benchmark':<52} {'rate':>9} {'unit':<9} {'n':>4} {'load s':>7}  note")
    for name, run in table.items():
        if wanted and not any(w in name for w in wanted):
            continue
        r = run()
        print(f"{name:<52} {r['rate']:>9.2f} {r['unit']:<9} {r['n']:>4} {r['load_s']:>7.1f}  {r.get('note', '')}",
              flush=True)


if __name__ == "__main__":
    main()
