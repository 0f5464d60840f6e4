"""Decode each image once, validate it, and share colour conversions between extractors.

Every extractor receives `DecodedImage` objects; the expensive conversions (float tensor, luma, grey)
are computed lazily and cached on the object, so a batch decoded once feeds every extractor.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import SiqaError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
# Larger images are downscaled (Lanczos, aspect kept) so that width*height <= this budget;
# 12000x9000 would otherwise cost ~320 MB per float copy per extractor.
MAX_PIXELS = 4096 * 4096

Image.MAX_IMAGE_PIXELS = None  # we enforce our own budget after a cheap header read


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode to HxWx3 uint8 RGB: EXIF orientation applied, alpha composited on white,
    16-bit / palette / CMYK / grey converted, oversize images downscaled to `max_pixels`."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.draft("RGB", _draft_size(im.size, max_pixels))  # JPEG: decode at reduced size if huge
            im = ImageOps.exif_transpose(im)
            im.load()
            rgb = _to_rgb(im)
    except SiqaError:
        raise
    except FileNotFoundError:
        raise SiqaError(f"{path}: file not found") from None
    except Exception as exc:  # PIL raises many types for corrupt data
        raise SiqaError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from None
    w, h = rgb.size
    if w * h > max_pixels:
        scale = (max_pixels / (w * h)) ** 0.5
        rgb = rgb.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.LANCZOS)
    arr = np.asarray(rgb, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 8:
        raise SiqaError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]}, smaller than 8x8")
    return arr


def _draft_size(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    w, h = size
    if w * h <= max_pixels:
        return size
    scale = (max_pixels / (w * h)) ** 0.5
    return int(w * scale), int(h * scale)


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        a = a / (65535.0 if a.max() > 255 else 255.0) * 255.0
        return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


@dataclass(eq=False)
class DecodedImage:
    """One decoded image and its lazily computed, shared representations."""

    sha256: str
    rgb: np.ndarray  # HxWx3 uint8
    path: str = ""
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @cached_property
    def float01(self) -> np.ndarray:
        """HxWx3 float32 in [0, 1]."""
        return self.rgb.astype(np.float32) / 255.0

    @cached_property
    def tensor(self):
        """1x3xHxW float32 torch tensor in [0, 1] (shares memory with `float01`)."""
        import torch

        return torch.from_numpy(self.float01).permute(2, 0, 1).unsqueeze(0)

    @cached_property
    def luma(self) -> np.ndarray:
        """HxW float64 Y of ITU-R BT.601 YCbCr on the 0..255 scale (MATLAB rgb2ycbcr convention)."""
        r, g, b = (self.rgb[..., i].astype(np.float64) for i in range(3))
        return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0

    @cached_property
    def gray(self) -> np.ndarray:
        """HxW float64 grey in [0, 1] (Rec. 601 weights, as MATLAB rgb2gray)."""
        return (0.2989 * self.rgb[..., 0] + 0.5870 * self.rgb[..., 1] + 0.1140 * self.rgb[..., 2]) / 255.0

    def cached(self, key, compute):
        """Memoise any other derived representation shared between extractors."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]


@dataclass(eq=False)
class DecodedPair:
    """A (reference, degraded) pair; `dist` has been resized to the reference size if they differed."""

    pair_id: str
    ref: DecodedImage
    dist: DecodedImage
    resized: bool = False


def decode(path: str | Path, sha256: str | None = None) -> DecodedImage:
    return DecodedImage(sha256=sha256 or sha256_file(path), rgb=read_rgb(path), path=str(path))


def match_size(ref: DecodedImage, dist: DecodedImage) -> tuple[DecodedImage, bool]:
    """Policy for pairs of different sizes: resize the degraded image to the reference size (bicubic).

    Full-reference metrics need aligned pixels; the reference defines the content. The resized copy keeps
    the degraded image's sha256 since it is a deterministic function of that file."""
    if ref.rgb.shape == dist.rgb.shape:
        return dist, False
    im = Image.fromarray(dist.rgb).resize((ref.width, ref.height), Image.BICUBIC)
    return DecodedImage(sha256=dist.sha256, rgb=np.asarray(im), path=dist.path), True
