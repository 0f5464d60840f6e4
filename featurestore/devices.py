"""Where and how the deep extractors run, and how decoded images become model-sized batches.

- `Runtime`: the device (CUDA when present, else CPU), autocast precision (bf16 where the GPU computes it natively,
  else fp16; full fp32 on the CPU, where autocast mostly costs time) and channels-last for convnets.
- `model_batches`: resize under an explicit policy, normalise and group images that end up the same shape, so
  a batch never mixes shapes and no image is silently squashed to a square:
    keep    scale to about `size`x`size` pixels of area, aspect kept, sides rounded to `multiple`
            (models that accept any shape: DINOv2 interpolates its position embeddings, convnets pool)
    pad     fit the long side into `size`, pad the short side with the normalisation mean (a model with a
            fixed square input still sees the whole image undistorted: CLIP)
    crop    scale the short side to `size`, centre-crop a square (CLIP's own preprocessing, exactly as
            torchvision's Resize + CenterCrop compute it; drops the borders)
    squash  resize to `size`x`size` regardless of aspect (only when asked for)
- on a GPU: each decoded image goes over once (`device_rgb`: pinned host memory, non-blocking copy, memoised on
  the image for every model that resizes it), and results come back once per batch (`to_host`: every output of
  the batch copied into pinned memory, one wait); nothing syncs per image.
- `memory_batch_size`: images (or pairs) per forward pass on a GPU, from its free memory and what one item was
  measured to take (`measure_item_bytes`: the peak allocation of a forward pass on 1 and on 3 items).
"""
from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .io import DecodedImage

ResizePolicy = Literal["keep", "pad", "crop", "squash"]
RESIZE_POLICIES = get_args(ResizePolicy)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA GPU is available")
    return device


def wants_gpu(extractor, gpus: int | None = None) -> bool:
    """Does `extractor` compute on a GPU: its `device` setting is cuda, or auto where there are `gpus` (default:
    this machine's CUDA devices)? Extractors without a `device` setting run on the CPU."""
    device = str(extractor.config.get("device", "cpu")).lower()
    if device == "auto":
        return (torch.cuda.device_count() if gpus is None else gpus) > 0
    return device.startswith("cuda")


def native_bf16(device: torch.device) -> bool:
    """Whether the GPU computes in bfloat16 natively (Ampere and later). Pre-Ampere GPUs report bf16 as
    "supported" by emulation, several times slower than fp16, so automatic precision must not pick it there."""
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    autocast_dtype: torch.dtype | None  # None: run in the model's own fp32
    channels_last: bool

    @classmethod
    def create(cls, device: str = "auto", precision: str = "auto", channels_last: bool = True,
               channels_last_on_cpu: bool = False) -> "Runtime":
        """`channels_last` applies on a GPU, and on a CPU too with `channels_last_on_cpu` (for networks whose
        CPU kernels were measured faster so: EfficientNet-Lite's depthwise convolutions, 2x)."""
        dev = pick_device(device)
        if precision == "auto":
            precision = ("bf16" if native_bf16(dev) else "fp16") if dev.type == "cuda" else "fp32"
        dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
        if precision not in dtypes:
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
        return cls(dev, dtypes[precision], channels_last and (dev.type == "cuda" or channels_last_on_cpu))

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.eval().to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    @contextlib.contextmanager
    def inference(self):
        autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            yield

    def to_input(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.contiguous(memory_format=torch.channels_last) if self.channels_last else batch


def target_shape(height: int, width: int, size: int, policy: str, multiple: int = 1) -> tuple[int, int]:
    """Output (height, width) of the model input for an image of this size."""
    if policy == "keep":
        scale = size / math.sqrt(height * width)
        return (max(multiple, round(height * scale / multiple) * multiple),
                max(multiple, round(width * scale / multiple) * multiple))
    if policy in ("pad", "crop", "squash"):
        return size, size
    raise ValueError(f"resize policy must be one of {RESIZE_POLICIES}, not {policy!r}")


def device_rgb(image: DecodedImage, device: torch.device) -> torch.Tensor:
    """The image's HxWx3 uint8 pixels on `device`, copied once per image and device: from pinned host memory,
    without waiting (the kernels that read it queue behind the copy on the same stream)."""
    def upload():
        if device.type != "cuda":
            return torch.tensor(image.rgb, dtype=torch.uint8, device=device)
        host = torch.empty(image.rgb.shape, dtype=torch.uint8, pin_memory=True)
        host.numpy()[...] = image.rgb
        # the pinned block is not reused before the copy is done (the host allocator records it on the stream)
        return host.to(device, non_blocking=True)
    return image.cached(("device_rgb", str(device)), upload)


def _resize_one(image: DecodedImage, size: int, policy: str, multiple: int, mean: torch.Tensor,
                device: torch.device) -> torch.Tensor:
    """3xHxW float in [0, 1] on `device`, before normalisation (pad fills with `mean`).

    Antialiased bicubic either way: Pillow's on the CPU (on uint8, over 20x faster there than torch's float
    kernel), torch's on a GPU (the uint8 image goes over, not a float copy four times its size)."""
    rgb = image.rgb
    h, w = rgb.shape[:2]
    th, tw = target_shape(h, w, size, policy, multiple)
    if policy == "pad":
        scale = size / max(h, w)
        rh, rw = max(1, round(h * scale)), max(1, round(w * scale))
    elif policy == "crop":
        # exactly torchvision's Resize(size) + CenterCrop(size), open_clip's own preprocessing: the short side
        # becomes `size`, the long side is truncated (not rounded), the crop offset is rounded
        long = int(size * max(h, w) / min(h, w))
        rh, rw = (size, long) if h <= w else (long, size)
    else:
        rh, rw = th, tw
    if device.type == "cpu":
        if (rh, rw) != (h, w):
            rgb = np.asarray(Image.fromarray(rgb).resize((rw, rh), Image.BICUBIC))
        pixels = torch.tensor(rgb, dtype=torch.uint8)
    else:
        pixels = device_rgb(image, device)
    x = pixels.permute(2, 0, 1).unsqueeze(0).float() / 255.0
    if tuple(x.shape[2:]) != (rh, rw):
        x = F.interpolate(x, size=(rh, rw), mode="bicubic", antialias=True, align_corners=False).clamp_(0, 1)
    if policy == "pad":
        canvas = mean.view(1, 3, 1, 1).expand(1, 3, size, size).clone()
        top, left = (size - rh) // 2, (size - rw) // 2
        canvas[:, :, top:top + rh, left:left + rw] = x
        x = canvas
    elif policy == "crop":
        top, left = int(round((rh - size) / 2.0)), int(round((rw - size) / 2.0))
        x = x[:, :, top:top + size, left:left + size]
    return x[0]


def model_batches(images: list[DecodedImage], size: int, policy: str, mean, std, runtime: Runtime,
                  multiple: int = 1, cache_key: str = "") -> list[tuple[list[int], torch.Tensor]]:
    """Normalised model inputs grouped by shape: `[(indices into images, N x 3 x H x W tensor), ...]`.

    With `cache_key`, the normalised input is memoised on the `DecodedImage`, so two models with the same
    preprocessing (CLIP ViT-L-14 and ViT-B-16 at 224) resize each image once."""
    mean_t, std_t = _constant(tuple(mean), runtime.device), _constant(tuple(std), runtime.device)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(target_shape(img.height, img.width, size, policy, multiple), []).append(i)

    def prepared(img: DecodedImage) -> torch.Tensor:
        x = _resize_one(img, size, policy, multiple, mean_t, runtime.device)
        return (x - mean_t.view(3, 1, 1)) / std_t.view(3, 1, 1)

    out = []
    for idx in groups.values():
        if cache_key:
            key = ("model_input", cache_key, size, policy, multiple, tuple(mean), tuple(std), str(runtime.device))
            tensors = [images[i].cached(key, lambda im=images[i]: prepared(im)) for i in idx]
        else:
            tensors = [prepared(images[i]) for i in idx]
        out.append((idx, runtime.to_input(torch.stack(tensors))))
    return out


def scatter(groups: list[tuple[list[int], torch.Tensor]], n: int) -> torch.Tensor:
    """Reassemble per-group outputs `[(indices, N x ...)]` into one tensor in the original image order."""
    first = groups[0][1]
    if len(groups) == 1 and list(groups[0][0]) == list(range(n)):
        return first
    out = torch.empty((n, *first.shape[1:]), dtype=first.dtype, device=first.device)
    for idx, values in groups:
        out[index_on(idx, first.device)] = values
    return out


def index_on(idx: list[int], device: torch.device) -> torch.Tensor:
    """`idx` as an int64 tensor on `device`; on a GPU copied from pinned memory without waiting (a plain
    `torch.tensor(..., device="cuda")` copies from pageable memory, which waits for every queued kernel)."""
    host = torch.as_tensor(idx, dtype=torch.int64)
    return host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host


@functools.lru_cache(maxsize=64)
def _constant(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """A small float32 constant (normalisation mean, std) on `device`, made once: no copy per batch."""
    return torch.tensor(values, dtype=torch.float32, device=device)


def to_host(values: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Every tensor of one batch's results as a numpy array, in the tensor's dtype. On a GPU the copies go
    into pinned host memory without waiting, then one wait for all of them (one sync per batch, not one per
    tensor or per image); on the CPU the tensors are only viewed as arrays."""
    first = next(iter(values.values()), None)
    if first is None or first.device.type != "cuda":
        return {k: v.detach().numpy() for k, v in values.items()}
    host = {}
    for k, v in values.items():
        host[k] = torch.empty(v.shape, dtype=v.dtype, pin_memory=True)
        host[k].copy_(v.detach(), non_blocking=True)
    torch.cuda.current_stream(first.device).synchronize()
    return {k: v.numpy() for k, v in host.items()}


# --- batch sizes from the GPU's memory ---------------------------------------------------------------------

#: share of the free GPU memory one extractor's batch may fill: the models of the extractors that load after it
#: and the allocator's fragmentation take from the rest
MEMORY_SHARE = 0.5
_peaks: dict[str, int] = {}  # highest allocation seen before a measurement reset the allocator's peak counter
_measuring = threading.Lock()


def measure_item_bytes(run: Callable[[int], object], device: torch.device, counts: tuple[int, int] = (1, 3)
                       ) -> tuple[float, float]:
    """(bytes per item, fixed bytes) of `run(n)` (a forward pass on `n` items of the largest input the caller
    expects) on a CUDA `device`: the peak allocation above what is already allocated, for n = counts[0] and
    counts[1]; the per-item cost is the slope between the two (at least 1 MiB), the fixed cost (workspaces,
    autocast's weight copies) what is left at counts[0]. Measured, not modelled, so it holds for any network,
    precision and attention kernel."""
    with _measuring:
        peaks = []
        for n in counts:
            torch.cuda.synchronize(device)
            _peaks[str(device)] = peak_allocated(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            run(n)
            torch.cuda.synchronize(device)
            peaks.append(torch.cuda.max_memory_allocated(device) - base)
        per_item = max((peaks[1] - peaks[0]) / (counts[1] - counts[0]), float(2**20))
        return per_item, max(peaks[0] - counts[0] * per_item, 0.0)


def memory_batch_size(per_item: float, fixed: float, device: torch.device, cap: int,
                      share: float = MEMORY_SHARE) -> int:
    """Items per forward pass: `share` of the memory free on `device` (the driver's free memory plus what the
    allocator holds unused), less the fixed cost, over the per-item cost; between 1 and `cap`."""
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(max(1, min(cap, (free * share - fixed) // per_item)))


def peak_allocated(device: torch.device) -> int:
    """The highest GPU allocation of this process on `device`, across the resets `measure_item_bytes` makes."""
    return max(_peaks.get(str(device), 0), torch.cuda.max_memory_allocated(device))
