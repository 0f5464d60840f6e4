"""`make bench-gpu`: the default feature set end to end on one GPU, on 750 synthetic pairs of SeIQA size.

    python bench/bench_gpu_pipeline.py                              # CUDA GPU: 750 pairs (aim: under 8 minutes)
    python bench/bench_gpu_pipeline.py --cpu --tiny --pairs 8       # CPU smoke check (tests/test_bench_gpu_pipeline.py)

What it does, in three timed phases:
1. pairs: `--pairs` references of SeIQA size (long side 512..1024 px, aspect 1:1, 4:3, 3:2 or 16:9, a third
   portrait), cut from the photos that ship in scikit-image / scikit-learn (`featurestore.datasets.demo`), each
   one its own pixels (a colour jitter), the demo's signs drawn on those that have one (text for the OCR), and
   one degraded copy each (blur, noise, JPEG, a patch removed or a colour shift, at a random strength), written
   as PNG files. Every pair has its own reference: the image-level extractors see 2 x pairs distinct images,
   the most work a set of that many pairs can hold.
2. setup: the extractors `configs/default.toml` enables, built with `random_init = true` (the architectures and
   arithmetic of the real checkpoints — CLIP ViT-L-14, ViT-L-14-336 and ViT-B-16 from open_clip's configs,
   DINOv2-L from its published config, LPIPS/DISTS/TOPIQ-FR from pyiqa's architectures — with random weights:
   meaningless values, the real cost), networks loaded and each batch size measured (`extractors.deep`).
   The ImageNet, OCR and face models are the real ones that ship in pip packages. Nothing is downloaded:
   the hub is switched off, and torch's downloader raises.
3. extract: `FeatureStore.extract` over the pairs, as `siqa features` runs it (decoding included).

It prints and writes (`--out`, JSON): pairs/s and seconds per pair of the extract phase, seconds per extractor
and level (the store's own summary: time inside each extractor's calls), the batch size each network got, the
GPU busy fraction — NVML's utilisation (share of time a kernel was running) sampled every 0.1 s in a thread over
the extract phase, averaged — and peak GPU memory (torch's peak allocation across the batch-size measurements,
its peak reservation, and NVML's peak device memory in use).

On a machine whose Python lacks some of the project's packages and reaches no registry, they travel as wheels:
`bench/device_wheels.sh DIR` downloads the ones the lent GPU machines' image lacks (14 wheels, 47 MB) and says how
to install them there before `python3 bench/bench_gpu_pipeline.py`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import threading
import time
import tomllib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ASPECTS = (1.0, 4 / 3, 3 / 2, 16 / 9)
#: long side of the references: SeIQA's images are about 512..1024 px; --tiny: small images for the CPU check
LONG_SIDE = {"full": (512, 1024), "tiny": (96, 160)}
#: --tiny: smaller members of the same families, so the CPU check takes seconds; the code path is the same
TINY_OVERRIDES = {
    "clip": {"models": [{"arch": "ViT-B-32", "pretrained": "openai"}]},
    "dino": {"model": "facebook/dinov2-small", "sizes": [112]},
    "imagenet": {"size": 112},
    "regions": {"size": 128},
    "lpips": {"nets": ["alex"], "size": 128},
    "dists": {"size": 64},
    "topiq_fr": {"size": 128},
}
DEGRADATIONS = ("blur", "noise", "jpeg", "patch", "colour")


# --- pairs ---------------------------------------------------------------------------------------------------

_PHOTOS: dict[str, np.ndarray] = {}


def _photo(index: int):
    """(demo photo entry, its pixels as HxWx3 uint8), loaded once per process."""
    from featurestore.datasets.demo import PHOTOS

    photo = PHOTOS[index % len(PHOTOS)]
    if photo.name not in _PHOTOS:
        rgb = np.asarray(photo.load())
        rgb = np.repeat(rgb[..., None], 3, axis=2) if rgb.ndim == 2 else rgb[..., :3]
        _PHOTOS[photo.name] = np.ascontiguousarray(rgb.astype(np.uint8))
    return photo, _PHOTOS[photo.name]


def pair_shape(rng: np.random.Generator, size: str) -> tuple[int, int]:
    lo, hi = LONG_SIDE[size]
    long = int(rng.integers(lo, hi + 1))
    short = max(16, round(long / float(rng.choice(ASPECTS))))
    return (long, short) if rng.random() < 1 / 3 else (short, long)


def reference(index: int, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A photo cut to the aspect of `shape`, resized to it, colour-jittered; its sign drawn if it has one."""
    from PIL import Image

    from featurestore.datasets.demo import draw_sign, layout_sign

    photo, rgb = _photo(index)
    h, w = shape
    ph, pw = rgb.shape[:2]
    scale = min(ph / h, pw / w)
    ch, cw = max(1, int(h * scale)), max(1, int(w * scale))
    y0, x0 = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    cut = Image.fromarray(rgb[y0:y0 + ch, x0:x0 + cw]).resize((w, h), Image.BICUBIC)
    out = np.clip(np.asarray(cut, dtype=np.float32) * rng.uniform(0.85, 1.15, 3), 0, 255).astype(np.uint8)
    if photo.sign is not None:
        out = draw_sign(out, layout_sign(photo.sign, w, h, min(h, w) / 256))
    return out


def degraded(ref: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One degradation of `ref` at a random strength."""
    import io

    from PIL import Image, ImageFilter

    kind, level = DEGRADATIONS[int(rng.integers(len(DEGRADATIONS)))], float(rng.uniform(0.2, 1.0))
    image = Image.fromarray(ref)
    if kind == "blur":
        return np.asarray(image.filter(ImageFilter.GaussianBlur(0.5 + 4 * level)))
    if kind == "noise":
        return np.clip(ref + rng.normal(0, 30 * level, ref.shape), 0, 255).astype(np.uint8)
    if kind == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(45 - 40 * level))
        return np.asarray(Image.open(buffer).convert("RGB"))
    out = ref.copy()
    h, w = ref.shape[:2]
    if kind == "patch":
        bh, bw = max(2, int(h * 0.4 * level)), max(2, int(w * 0.4 * level))
        y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        out[y:y + bh, x:x + bw] = ref[y:y + bh, x:x + bw].reshape(-1, 3).mean(0).astype(np.uint8)
        return out
    mix = np.eye(3) * (1 - level) + np.roll(np.eye(3), 1, axis=1) * level  # colour: channels rotated in part
    return np.clip(ref.astype(np.float32) @ mix.T, 0, 255).astype(np.uint8)


def write_pair(job: tuple[Path, int, int, str]) -> tuple[str, str]:
    """Pair `index` of seed `seed`: (reference path, degraded path), written as PNG."""
    from PIL import Image

    folder, seed, index, size = job
    rng = np.random.default_rng([seed, index])
    ref = reference(index, pair_shape(rng, size), rng)
    dist = degraded(ref, rng)
    paths = (folder / f"{index:05d}_ref.png", folder / f"{index:05d}_dist.png")
    for path, rgb in zip(paths, (ref, dist)):
        Image.fromarray(rgb).save(path, compress_level=1)
    return str(paths[0]), str(paths[1])


def make_pairs(folder: Path, n: int, size: str, seed: int, workers: int) -> list[tuple[str, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(folder, seed, i, size) for i in range(n)]
    if workers <= 1 or n < 8:
        return [write_pair(job) for job in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(write_pair, jobs, chunksize=8))


# --- extractors ------------------------------------------------------------------------------------------------

def default_extractors(config: Path, device: str, tiny: bool) -> list:
    """The extractors `config` enables, networks with random weights; on `device` if given (else where their
    settings say: `auto` is the GPU)."""
    from featurestore.config import build_extractors, extractor_settings
    from featurestore.extractors import EXTRACTORS

    with open(config, "rb") as handle:
        section = tomllib.load(handle).get("extractors", {})
    tables = {}
    for name, table in section.items():
        if not table.get("enabled", True):
            continue
        fields = EXTRACTORS.get(name).Settings.model_fields
        table = dict(table)
        if "random_init" in fields:
            table["random_init"] = True
        if device and "device" in fields:
            table["device"] = device
        if tiny:
            table.update(TINY_OVERRIDES.get(name, {}))
        tables[name] = table
    return build_extractors(extractor_settings(tables, str(config)))


class GpuMonitor:
    """NVML utilisation and memory in use, sampled every `every` seconds in a thread while the block runs."""

    def __init__(self, index: int = 0, every: float = 0.1):
        self.index, self.every = index, every
        self.busy: list[int] = []
        self.used: list[int] = []
        self.method = "NVML nvmlDeviceGetUtilizationRates().gpu sampled every 0.1 s, averaged"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
        except Exception as exc:  # no NVML binding or driver: no busy fraction, said why
            self.method = f"not measured: NVML unavailable ({type(exc).__name__}: {exc})"
            return self

        def sample():
            while not self._stop.is_set():
                self.busy.append(int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))
                self.used.append(int(pynvml.nvmlDeviceGetMemoryInfo(handle).used))
                self._stop.wait(self.every)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def busy_fraction(self) -> float | None:
        return float(np.mean(self.busy)) / 100 if self.busy else None


# --- the run ---------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def offline_and_quiet():
    """No download (hub offline, torch's downloader raises) and no warnings (open_clip announces every random
    init) within the block; everything as it was after it."""
    import logging
    from unittest import mock

    import torch

    def no_download(url, *args, **kwargs):
        raise RuntimeError(f"bench_gpu_pipeline downloads nothing, but something asked for {url}")

    with mock.patch.dict(os.environ, {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}), \
            mock.patch.object(torch.hub, "download_url_to_file", no_download):
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def run(args) -> dict:
    with offline_and_quiet():
        return _run(args)


def _run(args) -> dict:
    import torch

    from featurestore.datasets import PairTable
    from featurestore.devices import peak_allocated
    from featurestore.store import FeatureStore

    cuda = not args.cpu
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-gpu-pipeline-"))
    result = {"device": torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores)",
              "torch": torch.__version__, "python": platform.python_version(), "pairs": args.pairs,
              "image_size": "tiny" if args.tiny else "SeIQA (long side 512..1024 px)", "config": str(args.config)}

    t0 = time.perf_counter()
    rows = make_pairs(work / "pairs", args.pairs, "tiny" if args.tiny else "full", args.seed, args.workers)
    table = PairTable.from_paths(rows)
    result["pairs_seconds"] = round(time.perf_counter() - t0, 2)

    # on a GPU machine every extractor runs where its default settings put it
    extractors = default_extractors(args.config, "" if cuda else "cpu", args.tiny)
    setup, batch_sizes, devices = {}, {}, {}
    for ex in extractors:
        t0 = time.perf_counter()
        if hasattr(ex, "loaded"):
            ex.loaded  # noqa: B018 (builds the networks, not timed with the features)
        batch_sizes[ex.name] = int(ex.batch_size)  # on a GPU: measured here
        setup[ex.name] = round(time.perf_counter() - t0, 2)
        devices[ex.name] = str(ex.runtime.device if hasattr(ex, "runtime") else getattr(ex, "device", "cpu"))
    result["extractors"] = [ex.name for ex in extractors]
    result["setup_seconds"], result["batch_sizes"], result["devices"] = setup, batch_sizes, devices

    kwargs = {"chunk_pairs": args.chunk_pairs} if args.chunk_pairs else {}
    monitor = GpuMonitor() if cuda else None
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with monitor if monitor is not None else contextlib.nullcontext():
        summary = FeatureStore(work / "store").extract(table, extractors, progress=args.progress, **kwargs)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    result.update({
        "extract_seconds": round(seconds, 2), "pairs_per_s": round(args.pairs / seconds, 3),
        "seconds_per_pair": round(seconds / args.pairs, 4),
        "extractor_seconds": {k: round(v, 2) for k, v in sorted(summary.compute_seconds.items())},
        "decode_seconds": round(summary.decode_seconds, 2), "decoded_images": summary.decoded_images,
        "computed": dict(sorted(summary.computed.items())), "failures": dict(summary.failures),
        "gpu_busy_fraction": monitor.busy_fraction if monitor else None,
        "gpu_busy_method": monitor.method if monitor else "not measured: no GPU",
        "peak_allocated_gib": round(peak_allocated(torch.device("cuda")) / 2**30, 2) if cuda else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2) if cuda else None,
        "nvml_peak_used_gib": round(max(monitor.used) / 2**30, 2) if monitor and monitor.used else None,
    })
    return result


def report(result: dict) -> str:
    lines = [f"{result['device']}, torch {result['torch']}: {result['pairs']} pairs, {result['image_size']}",
             f"  pairs written in {result['pairs_seconds']}s; networks built and batch sizes measured in "
             f"{sum(result['setup_seconds'].values()):.1f}s",
             f"  extract: {result['extract_seconds']}s = {result['pairs_per_s']} pairs/s, "
             f"{result['seconds_per_pair']} s/pair (aim: <= 0.05 s/pair)",
             f"  decode: {result['decode_seconds']}s for {result['decoded_images']} images"]
    for key, value in result["extractor_seconds"].items():
        name = key.split("/")[0]
        lines.append(f"  {key:<22} {value:>8.2f}s   {result['devices'][name]:<6} batch {result['batch_sizes'][name]}")
    busy = result["gpu_busy_fraction"]
    lines.append(f"  GPU busy: {'%.0f%%' % (100 * busy) if busy is not None else '-'} ({result['gpu_busy_method']})")
    lines.append(f"  peak GPU memory: allocated {result['peak_allocated_gib']} GiB, reserved "
                 f"{result['peak_reserved_gib']} GiB, in use (NVML) {result['nvml_peak_used_gib']} GiB")
    if result["failures"]:
        lines.append(f"  {len(result['failures'])} failure(s), e.g. {next(iter(result['failures'].items()))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=750)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (smoke check; no GPU figures)")
    parser.add_argument("--tiny", action="store_true", help="small images and smaller networks (smoke check)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "default.toml")
    parser.add_argument("--chunk-pairs", type=int, default=0, help="pairs per store chunk (default: the store's)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes writing the pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="", help="where pairs and store go (default: a new temporary folder)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_gpu_pipeline.json")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)

    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("bench_gpu_pipeline: no CUDA GPU here; run it on a GPU machine, or --cpu --tiny for the smoke check")
        return 1
    started = time.perf_counter()
    result = run(args)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    print(report(result))
    print(f"  total {result['total_seconds']}s" + ("  (over the 8-minute budget)" if result["total_seconds"] > 480
                                                  else ""))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"  written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
