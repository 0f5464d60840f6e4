"""Decode each image once, validate it, and share colour conversions between extractors.

Every extractor receives `DecodedImage` objects; the expensive conversions (float tensor, luma, grey)
are computed lazily and cached on the object, so a batch decoded once feeds every extractor.

Decoding rules (`read_rgb`); every image becomes HxWx3 uint8 sRGB-as-stored:
- The file is read once; its bytes are both hashed and decoded, so a file changed after the pair table
  was built is reported instead of caching features under a stale hash.
- Empty files, files no Pillow plugin recognises (text or HTML saved as .png, ...), truncated or corrupt
  data: `SiqaError("<file>: <problem>")`, one line. Pillow never guesses the missing part of a truncated file.
- Multi-frame files (animated WebP, multi-page TIFF): the first frame.
- 16-bit grey (`I;16*`, and `I`, read as 0..65535, clipped): rounded to 8 bits as round(v / 257).
  16-bit RGB PNGs are reduced to 8 bits by Pillow's PNG reader (most significant byte).
- Bilevel, grey, palette, YCbCr, CMYK: Pillow's conversion to RGB (CMYK naively, Adobe-inverted JPEGs
  already corrected by the reader). Embedded ICC profiles are not applied.
- Transparency (RGBA, LA, PA, palette with a transparent index): composited on white.
- 32-bit float images (`F`): refused (no agreed value range).
- EXIF orientation 2..8: applied (after any downscaling, so the budget is orientation-free).
- Size: an image whose header says more than `MAX_DECODE_PIXELS` (after a JPEG's reduced-scale draft)
  is refused before decoding (decompression-bomb guard). One with more than `max_pixels` (default
  `MAX_PIXELS`, 16.8 megapixels) is downscaled, aspect kept, to floor(W*s) x floor(H*s) with
  s = sqrt(max_pixels / (W*H)): JPEGs are first decoded at the smallest DCT scale (1/2, 1/4, 1/8) that
  stays at or above that size, then every format is resized with Lanczos (reducing_gap 3).
- Fewer than 8 pixels on a side after all this: refused (no full-reference metric is defined there).
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import SiqaError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
# Larger images are downscaled to this many pixels: a 12000x9000 photo would otherwise cost
# ~1.3 GB per float32 copy in every extractor, and no metric here gains from it.
MAX_PIXELS = 4096 * 4096
# Refused outright: decoding alone would need 3 bytes per pixel (600 MB at this cap) before downscaling.
MAX_DECODE_PIXELS = 200_000_000
MIN_SIDE = 8

_pillow_limit_lock = threading.Lock()
_pillow_limit_users = 0
_pillow_limit_saved: int | None = None

_EXIF_ORIENTATION = 0x0112
_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: the EXIF orientations whose transpose turns width into height
_SWAPS_SIDES = frozenset({5, 6, 7, 8})


#: what a path that is not a regular file is, for the one line that refuses it
SPECIAL_FILES = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
                 stat.S_IFDIR: "a folder", stat.S_IFSOCK: "a socket"}


def open_regular(path: str | Path):
    """`path` opened for binary reading if it is a regular file (links followed). Anything else is refused at
    once with one line: a FIFO would block the read forever, a device such as /dev/zero never end it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: opening a FIFO returns, not waits
    except FileNotFoundError:
        raise SiqaError(f"{path}: " + ("a link to nothing (dangling)" if os.path.islink(path) else "file not found")) from None
    except OSError as exc:
        raise SiqaError(f"{path}: cannot read ({exc.strerror or exc})") from None
    kind = stat.S_IFMT(os.fstat(fd).st_mode)
    if kind != stat.S_IFREG:
        os.close(fd)
        raise SiqaError(f"{path}: cannot read: not a regular file ({SPECIAL_FILES.get(kind, 'a special file')}); siqa reads "
                        f"images and tables from regular files only")
    return os.fdopen(fd, "rb")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open_regular(path) as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_path(path: str | Path) -> None:
    """Flush a file or a folder (its entries: a rename inside it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pair_key(ref_sha256: str, dist_sha256: str) -> str:
    """A pair's store key: its two images' content hashes, whatever the files are called."""
    return hashlib.sha256(f"{ref_sha256}:{dist_sha256}".encode()).hexdigest()[:32]


def read_bytes(path: str | Path) -> bytes:
    try:
        with open_regular(path) as fh:
            return fh.read()
    except OSError as exc:
        raise SiqaError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a file to HxWx3 uint8 RGB by the rules in the module docstring."""
    return decode_rgb(read_bytes(path), path, max_pixels)


@contextmanager
def _own_bomb_check():
    """Pillow's bomb check (`Image.MAX_IMAGE_PIXELS`) runs at open time on the full size, before a JPEG draft
    could shrink it; inside this block it is off and `decode_rgb` enforces MAX_DECODE_PIXELS itself on the
    size that will actually be decoded. Pillow keeps the limit in one module global, so it is lifted while
    any siqa decode runs (threads count in and out) and put back as it was when the last one ends: importing
    siqa changes nothing for other users of Pillow."""
    global _pillow_limit_users, _pillow_limit_saved
    with _pillow_limit_lock:
        if _pillow_limit_users == 0:
            _pillow_limit_saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _pillow_limit_users += 1
    try:
        yield
    finally:
        with _pillow_limit_lock:
            _pillow_limit_users -= 1
            if _pillow_limit_users == 0:
                Image.MAX_IMAGE_PIXELS = _pillow_limit_saved


def decode_rgb(data: bytes, path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """`read_rgb` on bytes already read; `path` only names the file in error messages."""
    if not data:
        raise SiqaError(f"{path}: empty file (0 bytes)")
    try:
        with _own_bomb_check(), Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", _fit(im.size, max_pixels))  # JPEG: decode at a reduced DCT scale if huge
            w, h = im.size
            if w * h > MAX_DECODE_PIXELS:
                raise SiqaError(f"{path}: image is {w}x{h} ({w * h / 1e6:.0f} megapixels), over the "
                                f"{MAX_DECODE_PIXELS / 1e6:.0f}-megapixel decode limit; downscale it first")
            im.load()
            orientation = _orientation(im)  # after load: Pillow's PNG reader loads pixels to find EXIF
            rgb = _to_rgb(im, path)
    except SiqaError:
        raise
    except UnidentifiedImageError:
        raise SiqaError(f"{path}: not an image file (no image format recognised in its "
                        f"{len(data)} bytes)") from None
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise SiqaError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from None
    if rgb.width * rgb.height > max_pixels:
        rgb = rgb.resize(_fit(rgb.size, max_pixels), Image.Resampling.LANCZOS, reducing_gap=3.0)
    if orientation in _TRANSPOSE_FOR_ORIENTATION:
        rgb = rgb.transpose(_TRANSPOSE_FOR_ORIENTATION[orientation])
    if min(rgb.size) < MIN_SIDE:
        raise SiqaError(f"{path}: image is {rgb.width}x{rgb.height}, smaller than {MIN_SIDE}x{MIN_SIDE}")
    return np.asarray(rgb, dtype=np.uint8)


def pixel_sha256(rgb: np.ndarray) -> str:
    """sha256 of decoded pixels (shape, then the HxWx3 uint8 bytes): the same picture from a JPEG file, its
    decoded array or a PNG of that array hashes alike, where the file hashes (the store's keys) differ."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    digest = hashlib.sha256(f"{rgb.shape}".encode())
    digest.update(memoryview(rgb).cast("B"))  # the pixels where they are, not a copy of them
    return digest.hexdigest()


def image_size(path) -> tuple[int, int]:
    """(width, height) of an image file as decoded (EXIF rotation applied), from its header: no pixels decoded."""
    try:
        with open_regular(path) as file, _own_bomb_check(), Image.open(file) as im:
            w, h = im.size
            return (h, w) if _orientation(im) in _SWAPS_SIDES else (w, h)
    except SiqaError:
        raise
    except (UnidentifiedImageError, OSError) as exc:
        raise SiqaError(f"{path}: cannot read the image size ({type(exc).__name__}: {exc})") from None


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a malformed EXIF block must not cost the pixels; it only loses the rotation
        return 1


def _fit(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    w, h = size
    if w * h <= max_pixels:
        return size
    scale = (max_pixels / (w * h)) ** 0.5
    return max(1, int(w * scale)), max(1, int(h * scale))


def _to_rgb(im: Image.Image, path) -> Image.Image:
    if im.mode.startswith("I"):  # I;16, I;16B, I;16L, I: 16-bit grey
        a = np.clip(np.asarray(im), 0, 65535).astype(np.uint32)
        return Image.fromarray(((a + 128) // 257).astype(np.uint8)).convert("RGB")
    if im.mode == "F":
        raise SiqaError(f"{path}: 32-bit float image (mode F) has no defined value range; save it as 8- or 16-bit")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


@dataclass(eq=False)
class DecodedImage:
    """One decoded image and its lazily computed, shared representations."""

    sha256: str
    rgb: np.ndarray  # HxWx3 uint8
    path: str = ""
    decode_seconds: float = 0.0  # read + hash + decode, for the per-image runtime a submission declares
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @cached_property
    def pixel_sha256(self) -> str:
        """`pixel_sha256(self.rgb)`."""
        return pixel_sha256(self.rgb)

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

    def has_cached(self, key) -> bool:
        """Whether `cached(key, ...)` would return without computing (for batching the missing ones)."""
        return key in self._cache

    def __getstate__(self) -> dict:
        """What goes to a worker process (`featurestore.store.workers`): the pixels and their file, not what was
        derived from them here (tensors, GPU copies, model inputs), which the worker derives again if it needs
        it; read from fields this process never changes, so it may be taken while extractors work here."""
        return {"sha256": self.sha256, "rgb": self.rgb, "path": self.path, "decode_seconds": self.decode_seconds,
                "_cache": {}}


@dataclass(eq=False)
class DecodedPair:
    """A (reference, degraded) pair; `dist` has been resized to the reference size if they differed."""

    pair_id: str
    ref: DecodedImage
    dist: DecodedImage
    resized: bool = False


def decode(path: str | Path, sha256: str | None = None, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Read the file once, hash and decode those bytes; `sha256` (from the pair table) must still match."""
    t0 = time.perf_counter()
    data = read_bytes(path)
    actual = hashlib.sha256(data).hexdigest()
    if sha256 is not None and actual != sha256:
        raise SiqaError(f"{path}: file changed since the pair table was read (sha256 differs); run again")
    rgb = decode_rgb(data, path, max_pixels)
    return DecodedImage(sha256=actual, rgb=rgb, path=str(path), decode_seconds=time.perf_counter() - t0)


def match_size(ref: DecodedImage, dist: DecodedImage) -> tuple[DecodedImage, bool]:
    """Policy for pairs of different sizes: resize the degraded image to the reference size (bicubic).

    Full-reference metrics need aligned pixels; the reference defines the content. The resized copy keeps
    the degraded image's sha256 since it is a deterministic function of that file."""
    if ref.rgb.shape == dist.rgb.shape:
        return dist, False
    im = Image.fromarray(dist.rgb).resize((ref.width, ref.height), Image.BICUBIC)
    return DecodedImage(sha256=dist.sha256, rgb=np.asarray(im), path=dist.path), True
