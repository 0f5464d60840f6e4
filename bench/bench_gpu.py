"""`make bench-gpu-models`: GPU throughput of single deep networks (about 5 minutes on one CUDA GPU); the whole
default feature set end to end is `make bench-gpu` (bench_gpu_pipeline.py).

Randomly initialised networks (no hub on the benchmark machines): the architecture and arithmetic of the real
checkpoints, meaningless values. bf16 autocast, channels-last, `torch.inference_mode`, batch 64.
Two kinds of row:
- model: the network's forward pass alone on a ready batch already on the GPU (the ceiling);
- extractor: `compute_images` on 512x384 decoded photos, as the feature store calls it (upload, resize on
  the GPU, normalise, forward, embeddings back to the CPU).

`BENCHMARKS` is the list of named benchmark functions; each returns rows `{"benchmark", "images_per_s", ...}`.
"""
from __future__ import annotations

import logging
import time

import numpy as np
from bench_gpu_vlm import vlm_qwen25_vl_7b  # pairs/s of the vision-language extractor (bench/ is sys.path[0])

DEVICE = "cuda"
BATCH = 64
SECONDS = 10.0  # timed per row, after warm-up


def _timed(step, images_per_step: int) -> dict:
    """Run `step` for about SECONDS after two warm-up calls; images/s and peak memory."""
    import torch

    step(), step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < SECONDS or n < 3:
        step()
        n += 1
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"images_per_s": n * images_per_step / seconds, "ms_per_batch": 1000 * seconds / n,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def _photos(n: int):
    import skimage.data
    from PIL import Image

    from featurestore.io import DecodedImage

    names = ("astronaut", "coffee", "chelsea", "rocket")
    base = [np.asarray(Image.fromarray(getattr(skimage.data, k)()[..., :3]).resize((512, 384))) for k in names]
    return [DecodedImage(f"img{i}", base[i % len(base)]) for i in range(n)]


def _model_and_extractor_rows(label: str, name: str, config: dict, model_input: tuple, forward) -> list[dict]:
    """Rows for one network: `forward(extractor, batch)` on a prepared batch, and the whole extractor on photos.
    `model_input` = (size, multiple, mean, std) as the extractor prepares it."""
    import torch

    from featurestore.devices import model_batches
    from featurestore.extractors import create

    ex = create(name, random_init=True, device=DEVICE, batch_size=BATCH, **config)
    images = _photos(BATCH)
    size, multiple, mean, std = model_input
    [(_, batch)] = model_batches(images, size, ex.config["resize"], mean, std, ex.runtime, multiple=multiple)

    def model_step():
        with ex.runtime.inference():
            forward(ex, batch)

    rows = [{"benchmark": f"{label} model, {tuple(batch.shape[2:])}", **_timed(model_step, BATCH)},
            {"benchmark": f"{label} extractor, 512x384 photos", **_timed(_extractor_step(ex, images), BATCH)}]
    ex.close()
    torch.cuda.empty_cache()
    return rows


def _extractor_step(ex, images):
    def step():
        for im in images:
            im._cache.clear()  # no memoised model inputs: every call resizes again, as for new images
        ex.compute_images(images)
    return step


def clip_vit_l_14_336() -> list[dict]:
    from featurestore.extractors.clip import OPENAI_MEAN, OPENAI_STD

    return _model_and_extractor_rows(
        "CLIP ViT-L-14-336 bf16", "clip", {"models": [{"arch": "ViT-L-14-336", "pretrained": "openai"}]},
        (336, 1, OPENAI_MEAN, OPENAI_STD), lambda ex, x: ex.loaded[0]["model"].encode_image(x))


def dinov2_large(size: int) -> list[dict]:
    from featurestore.extractors.dino import IMAGENET_MEAN, IMAGENET_STD

    return _model_and_extractor_rows(
        f"DINOv2-L {size} bf16", "dino", {"model": "facebook/dinov2-large", "sizes": [size]},
        (size, 14, IMAGENET_MEAN, IMAGENET_STD), lambda ex, x: ex.loaded["model"](pixel_values=x))


def clip_default_extractor() -> list[dict]:
    """The whole default `clip` extractor (ViT-L-14, ViT-L-14-336, ViT-B-16) on photos."""
    import torch

    from featurestore.extractors import create

    ex = create("clip", random_init=True, device=DEVICE, batch_size=BATCH)
    images = _photos(BATCH)
    row = {"benchmark": "clip default extractor (L-14 + L-14-336 + B-16), 512x384 photos",
           **_timed(_extractor_step(ex, images), BATCH)}
    ex.close()
    torch.cuda.empty_cache()
    return [row]


BENCHMARKS = [
    ("clip ViT-L-14-336", clip_vit_l_14_336),
    ("dinov2-L 224", lambda: dinov2_large(224)),
    ("dinov2-L 336", lambda: dinov2_large(336)),
    ("clip default", clip_default_extractor),
    ("vlm Qwen2.5-VL-7B", vlm_qwen25_vl_7b),
]


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU here; run it on a GPU machine (`make bench-gpu-models`)")
        return 0
    logging.disable(logging.WARNING)  # open_clip announces every random init
    torch.backends.cuda.matmul.allow_tf32 = True
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, batch {BATCH}, bf16 autocast, "
          f"channels-last, random init")
    print(f"{'benchmark':<72} {'images/s':>9} {'ms/batch':>9} {'peak GiB':>9}")
    for name, run in BENCHMARKS:
        t0 = time.perf_counter()
        for r in run():
            print(f"{r['benchmark']:<72} {r['images_per_s']:>9.1f} {r['ms_per_batch']:>9.1f} {r['peak_gib']:>9.1f}",
                  flush=True)
        print(f"  ({name}: {time.perf_counter() - t0:.0f}s including model build)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
