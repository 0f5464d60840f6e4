"""pyiqa's formula metrics with pyiqa's arithmetic, computed without its waste (the `formula` extractor's kernels).

Every function takes the distorted and the reference batch (N images of one size) and returns N scores, the
values pyiqa's own module gives pair by pair (`tests/test_extractors_formula.py` holds each to it, also for
a batch of odd-sized pairs). What pyiqa's code spends for nothing, and what is done instead:

- Ref and dist go through one pass: one pyramid, one FFT, one filter bank per batch, not one per image.
- Filter banks are built once (`_per_size`: an LRU over image sizes for FSIM's 16 log-Gabor filters with
  their noise sums and CW-SSIM's pyramid masks; `functools.cache` for the size-free ones). pyiqa rebuilds
  FSIM's bank for each image, twice a pair: a third of its FSIM time.
- Single-channel float32 convolutions (`filter_each`): pyiqa filters grey images as an (N, 1, H, W) batch,
  which oneDNN runs through a generic kernel that slows down with N; the same filters over the images laid
  side by side as the channels of one channels-last tensor are a depthwise convolution, vectorised across
  images, with the same sums.
- SSIM / MS-SSIM (`ssim_level`): pyiqa filters with an 11x11 float64 `conv2d` (im2col over 121 taps); the
  Gaussian window is separable, so two 11-tap passes of in-place shifted adds do it ~30x cheaper (on a CPU
  one map and 64 rows at a time, in the caches).
- CW-SSIM (`cw_ssim`): pyiqa builds the whole steerable pyramid (high-pass, all levels, 8 bands each) and
  reads one level; only that level is built here.
- VIF (`vif`): pyiqa builds the full steerable pyramid (high-pass and 6 orientations a level) and reads 2
  orientations a level, then correlates its windowed statistics at every pixel to keep one position in
  nine; here only the bands read are built, the five statistics are correlated at the kept positions
  only, as the channels of one grouped convolution, and a level's two subbands go through every step
  together, as two channels (pyiqa: one subband at a time; the same values).
- VSI (`vsi`): pyiqa converts the full-size images to LMN and normalises the full-size saliency map before
  averaging 2x2 blocks; both are linear per pixel, so they follow the averaging here (float64 rounding).
  Its float64 Scharr gradients are shifted adds (`_shifted_sums`), not im2col.
- FSIM (`_phase_congruency`): on a CPU, the 16 filter responses' energy one image and orientation at a
  time, in the caches, instead of whole-batch maps through memory on each of a dozen operations.
- FSIM, NLPD, GMSD: pyiqa's code, batched, with the filter banks and convolutions above.
- Where pyiqa's way through an operation is slow for the same values, another way gives them: block averages
  as sums of strided views in the pooling kernel's order (`avg_pool`), FSIM's noise median by selection
  (`_median`), VSI's exp without torch's slow path far below its range (`_exp`), MATLAB's symmetric pad and
  torch's replicate pad as copied strips (`_pyiqa_filters.symmetric_pad`, `replicate_pad`); `tests/` checks each
  bit for bit.

pyiqa's size-only pieces (grids, filter banks, constants) come from `_pyiqa_filters`, which restates them so
that nothing here imports `pyiqa.matlab_utils` (and scipy.special with it). Measured against pyiqa's own path
on the five 512x384 calibration pairs (`bench/bench_formula.py`, one thread), max relative difference: psnr,
fsim, gmsd 0 (the same bits); vsi, cw_ssim ~3e-16 (float64 rounding); nlpd 7e-8; ssim, ms_ssim 5e-7 (the
exact float64 window here, pyiqa's rounded to float32); vif 5e-7 (the grouped convolution's order of sums;
on the 108 demo pairs 5.7e-6 from pyiqa, where the one-statistic-at-a-time version was 6.1e-6). VIF's
Gaussian-scale-mixture fit is ill-conditioned (a float32-rounding change in its covariance moved VIF by
9e-5), so the covariance and the fit are summed exactly as pyiqa sums them.
"""
from __future__ import annotations

import importlib
import math
import threading
from collections import OrderedDict
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F

from . import _pyiqa_filters as P

#: filter banks that depend on the image size (FSIM's, CW-SSIM's: two a size), kept for the sizes met last;
#: those that do not (VIF's, NLPD's, VSI's at its fixed 256x256) are kept once per device (`functools.cache`)
PER_SIZE_CACHE = 16
_cache: OrderedDict = OrderedDict()


_cache_lock = threading.Lock()  # the formula extractor scores batches on several threads


def _per_size(key: tuple, build):
    """`build()` for `key` (which names the metric, size, device and dtype), kept for the last few keys."""
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        value = _cache[key] = build()
        while len(_cache) > PER_SIZE_CACHE:
            _cache.popitem(last=False)
        return value


#: the pyiqa modules the kernels take functions and settings from, imported on first use (a cold run of a few
#: metrics pays only for theirs)
PYIQA_MODULES = ("pyiqa.archs.psnr_arch", "pyiqa.archs.vif_arch", "pyiqa.utils.color_util")


def import_pyiqa() -> None:
    """Import `PYIQA_MODULES` in this thread, before threads share the kernels: two threads importing pyiqa's
    modules at once meet its circular imports half done ("cannot import name 'build_network' from partially
    initialized module 'pyiqa.archs'"), and the metric fails on that pair."""
    for name in PYIQA_MODULES:
        importlib.import_module(name)


def clear_cache() -> None:
    _cache.clear()
    for built in (_vif_filters, _vif_windows, _sdsp_maps, _nlpd_filters):
        built.cache_clear()


def in_blocks(x: torch.Tensor) -> bool:
    """Work through `x` a few rows or images at a time, in the CPU's caches (SSIM, FSIM), rather than all at once
    (a GPU: one launch per operation)? The values are the same either way (`tests/` checks both on a CPU)."""
    return x.device.type == "cpu"


def joined(x, y):
    """`torch.cat([x, y])`, as a view where y follows x in one tensor, as the dist and ref halves of the formula
    extractor's batch do (a copy of both sides saved in every metric that takes them through one pass)."""
    if (x.dtype == y.dtype and x.shape[1:] == y.shape[1:] and x.is_contiguous() and y.is_contiguous()
            and x.untyped_storage().data_ptr() == y.untyped_storage().data_ptr()
            and y.storage_offset() == x.storage_offset() + x.numel()):
        return x.as_strided((len(x) + len(y), *x.shape[1:]), x.stride())
    return torch.cat([x, y])


def filter_each(images, weights, stride: int = 1, padding: int = 0):
    """`F.conv2d(images, weights, stride, padding)` for single-channel images (N, 1, H, W) and filters
    (K, 1, kh, kw): (N, K, h, w), each image correlated with each filter. On float32 (oneDNN's) it runs as one
    depthwise convolution (K filters per channel) over the N images as the channels of one channels-last
    image: oneDNN vectorises that across channels, where it runs an (N, 1, H, W) batch through a generic
    kernel that slows down with N (a 7x7 filter pair over four 512x384 images: 9 ms against 33 ms; over ten:
    30 against 79), with the same taps in the same order per output (bit-identical in every shape checked;
    oneDNN does not promise it, so `tests/` compares with pyiqa). Float64 has no oneDNN kernel, and the
    grouped form is the slow one there: pyiqa's plain call is kept."""
    n, _, h, w = images.shape
    k = weights.shape[0]
    if images.dtype == torch.float64 and images.device.type == "cpu" and stride == 1:
        return _shifted_sums(images, weights, padding)
    if images.dtype != torch.float32 or n == 1:  # one map: channels-last would pick another kernel
        return F.conv2d(images, weights, stride=stride, padding=padding)
    x = images.reshape(1, n, h, w).contiguous(memory_format=torch.channels_last)
    out = F.conv2d(x, weights.repeat(n, 1, 1, 1), stride=stride, padding=padding, groups=n)
    oh, ow = out.shape[-2:]
    return out.as_strided((n, k, oh, ow), (k, 1, ow * n * k, n * k)).contiguous()


def avg_pool(x, k: int):
    """`F.avg_pool2d(x, k)` (no padding). On a CPU as torch's kernel sums each window (row by row, in the
    images' dtype, then divided by k*k), over the k*k strided views of `x`: the same bits (`tests/` checks them)
    in a third of the time (a float32 512x384 pair: 0.9 ms against 2.6; float64: 1.3 against 2.4)."""
    if x.device.type != "cpu" or k == 1:
        return F.avg_pool2d(x, k)
    h, w = x.shape[-2] // k * k, x.shape[-1] // k * k
    views = [x[..., i:h:k, j:w:k] for i in range(k) for j in range(k)]
    total = views[0] + views[1]
    for view in views[2:]:
        total.add_(view)
    return total.div_(k * k)


def replicate_pad(x, pad: tuple[int, int, int, int], dtype=None):
    """`F.pad(x.to(dtype), pad, mode="replicate")` (pad: left, right, top, bottom) on a CPU: x converted once, straight
    into the middle of the result, then the edges copied from it. torch's replication kernel is a slow copy
    (float64, VSI's 512x384 pair: 1.4 ms for the conversion and the pad against 0.7 ms); the same values."""
    left, right, top, bottom = pad
    if x.device.type != "cpu":
        return F.pad(x.to(dtype or x.dtype), pad, mode="replicate")
    *lead, h, w = x.shape
    out = x.new_empty(*lead, h + top + bottom, w + left + right, dtype=dtype or x.dtype)
    rows = slice(top, top + h)
    out[..., rows, left:left + w] = x
    out[..., rows, :left] = out[..., rows, left:left + 1]
    out[..., rows, left + w:] = out[..., rows, left + w - 1:left + w]
    out[..., :top, :] = out[..., top:top + 1, :]
    out[..., top + h:, :] = out[..., top + h - 1:top + h, :]
    return out


def _shifted_sums(images, weights, padding: int):
    """`F.conv2d(images, weights, padding=padding)` as a sum of shifted images, one per nonzero tap: float64 on a
    CPU has only im2col (`_slow_conv2d_forward`). Alone the two are close (0.8 ms for VSI's two 3x3 Scharr filters
    on two 256x192 maps), but inside VSI this one measured 31.7 ms a pair against 36.9 (best of 15, interleaved).
    The same products, summed in another order (float64 rounding; the same bits on the calibration pairs)."""
    x = F.pad(images, (padding,) * 4)
    kh, kw = weights.shape[-2:]
    h, w = x.shape[-2] - kh + 1, x.shape[-1] - kw + 1
    out = images.new_zeros(len(images), len(weights), h, w)
    for j, taps in enumerate(weights[:, 0].tolist()):
        for a, row in enumerate(taps):
            for b, tap in enumerate(row):
                if tap:
                    out[:, j].add_(x[:, 0, a:a + h, b:b + w], alpha=tap)
    return out


def _taps(filt: np.ndarray, device) -> torch.Tensor:
    """A numpy filter as pyiqa makes it a conv weight: rounded to float32, (1, 1, kh, kw)."""
    return torch.from_numpy(np.ascontiguousarray(filt)).float()[None, None].to(device)


# ----------------------------------------------------------------------------------------------- PSNR
def psnr(x, y):
    """pyiqa's own `psnr_arch.psnr` with `PSNR()`'s defaults (all three channels, no border crop) of RGB batches
    x (dist) and y (ref) on 0..1: the function, without `create_metric`, whose first call scans every installed
    package's entry points for pyiqa plug-ins (14 ms of a cold run)."""
    from pyiqa.archs.psnr_arch import psnr as pyiqa_psnr

    return pyiqa_psnr(x, y, test_y_channel=False)


# ----------------------------------------------------------------------------------------------- SSIM
_SSIM_RANGE = 255.0


def _gaussian_taps(size: int = 11, sigma: float = 1.5) -> list[float]:
    """1-D factor of MATLAB's fspecial('gaussian', size, sigma): the 2-D window is its outer product."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return (g / g.sum()).tolist()


_TAPS = _gaussian_taps()


#: output rows of an SSIM level computed at a time on a CPU: with a 512x384 image in float64, 64 rows keep the
#: separable filter's passes and the maps after it in the caches (the filter alone: 8.4 ms for five maps
#: against 13 ms whole)
SSIM_ROWS = 64


def _gaussian_valid(maps):
    """'valid' correlation of every map (..., H, W) with the 11x11 SSIM window, as two separable 11-tap passes."""
    k = len(_TAPS)
    w = maps.shape[-1] - k + 1
    rows = maps[..., :w] * _TAPS[0]
    for i in range(1, k):
        rows.add_(maps[..., i:i + w], alpha=_TAPS[i])
    h = rows.shape[-2] - k + 1
    out = rows[..., :h, :] * _TAPS[0]
    for i in range(1, k):
        out.add_(rows[..., i:i + h, :], alpha=_TAPS[i])
    return out


def _ssim_maps(x, y):
    """pyiqa's SSIM and contrast-structure maps of grey images (..., H, W), 'valid' (..., H - 10, W - 10)."""
    c1 = (0.01 * _SSIM_RANGE) ** 2
    c2 = (0.03 * _SSIM_RANGE) ** 2
    mu1, mu2, xx, yy, xy = (_gaussian_valid(m) for m in (x, y, x * x, y * y, x * y))
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    cs_map = F.relu((2 * (xy - mu1_mu2) + c2) / ((xx - mu1_sq) + (yy - mu2_sq) + c2))
    ssim_map = ((2 * mu1_mu2 + c1) / (mu1_sq + mu2_sq + c1)) * cs_map
    return ssim_map, cs_map


def ssim_level(x, y):
    """pyiqa `ssim(..., get_cs=True)` at one scale of (n, 1, H, W) images: (mean SSIM, mean contrast-structure),
    each (n,). On a CPU one image and `SSIM_ROWS` rows of the maps at a time: the same operations per element,
    so the same bits, without the whole maps going to memory and back on each of two dozen operations."""
    if not in_blocks(x):
        ssim_map, cs_map = _ssim_maps(x[:, 0], y[:, 0])
        return ssim_map.mean((1, 2)), cs_map.mean((1, 2))
    k = len(_TAPS)
    n, h, w = len(x), x.shape[-2] - k + 1, x.shape[-1] - k + 1
    ssim_map, cs_map = x.new_empty(2, n, h, w)
    for i in range(n):
        for r in range(0, h, SSIM_ROWS):
            rows = slice(r, min(h, r + SSIM_ROWS))
            ssim_map[i, rows], cs_map[i, rows] = _ssim_maps(x[i, 0, r:rows.stop + k - 1], y[i, 0, r:rows.stop + k - 1])
    return ssim_map.mean((1, 2)), cs_map.mean((1, 2))


# -------------------------------------------------------------------------------------------- CW-SSIM
def _cw_ssim_masks(h: int, w: int, levels: int, nbands: int, device):
    """The masks of pyiqa's `SCFpyr_PyTorch` on the low-pass path down to level `levels` and that level's
    oriented bands: pyiqa's lookup tables (`rcosFn`, `pointOp`), rounded to float32 as pyiqa does."""
    def mask(grid, table, x):
        return torch.from_numpy(P.point_op(grid, table, x)).float().to(device)

    log_rad, angle = P.prepare_grid(h, w)
    xrcos, yrcos = P.rcos_fn(1, -0.5)
    yrcos = np.sqrt(yrcos)
    yircos = np.sqrt(1 - yrcos**2)
    lowpass = [((0, h), (0, w), mask(log_rad, yircos, xrcos))]
    for _ in range(levels - 1):  # low-pass and subsample, as pyiqa does after each level's bands
        xrcos = xrcos - 1
        dims = np.array(log_rad.shape)
        start = (np.ceil((dims + 0.5) / 2) - np.ceil((np.ceil((dims - 0.5) / 2) + 0.5) / 2)).astype(int)
        end = (start + np.ceil((dims - 0.5) / 2)).astype(int)
        log_rad = log_rad[start[0]:end[0], start[1]:end[1]]
        angle = angle[start[0]:end[0], start[1]:end[1]]
        lowpass.append(((start[0], end[0]), (start[1], end[1]), mask(log_rad, yircos, xrcos)))
    xrcos = xrcos - 1
    himask = mask(log_rad, yrcos, xrcos)
    lutsize = 1024
    xcosn = np.pi * np.arange(-(2 * lutsize + 1), lutsize + 2) / lutsize
    alpha = (xcosn + np.pi) % (2 * np.pi) - np.pi
    order = nbands - 1
    const = 2.0 ** (2 * order) * math.factorial(order) ** 2 / (nbands * math.factorial(2 * order))
    ycosn = 2 * np.sqrt(const) * np.cos(xcosn) ** order * (np.abs(alpha) < np.pi / 2)
    angles = [mask(angle, ycosn, xcosn + np.pi * b / nbands) for b in range(nbands)]
    return lowpass, himask, angles


def _coarsest_oriented_bands(images, levels: int, nbands: int):
    """Level `levels` of the complex steerable pyramid pyiqa's CW_SSIM builds, the only level it reads:
    `SCFpyr_PyTorch(height=levels, nbands=nbands, scale_factor=2).build(images)[levels]`, as one complex
    tensor (nbands, N, h, w). pyiqa builds the high-pass and every level's oriented bands first; the finer
    bands are 98 % of its inverse FFTs and most of its mask interpolations, and they are skipped here. The
    low-pass path is the same: pyiqa's masks, its crops, in its order, so the bands agree with pyiqa's to
    rounding (~1e-16)."""
    h, w = images.shape[-2:]
    if levels > int(np.floor(np.log2(min(h, w)))) - 2:
        raise RuntimeError(f"cannot build {levels} pyramid levels on a {w}x{h} image")
    lowpass, himask, angles = _per_size(("cw_ssim", h, w, levels, nbands, str(images.device)),
                                        lambda: _cw_ssim_masks(h, w, levels, nbands, images.device))
    dft = torch.fft.fftshift(torch.fft.fft2(images[:, 0]), dim=(-2, -1))
    for (r0, r1), (c0, c1), mask in lowpass:  # the first is the whole spectrum: a fresh tensor, masked in place
        dft = dft.mul_(mask) if (r1 - r0, c1 - c0) == dft.shape[-2:] else dft[:, r0:r1, c0:c1] * mask
    order = nbands - 1
    rotate = complex(np.power(complex(0, -1), order))  # pyiqa's `complex_fact_construct`
    bands = [(dft * anglemask * himask) * rotate for anglemask in angles]
    return torch.fft.ifft2(torch.fft.ifftshift(torch.stack(bands), dim=(-2, -1)))


def cw_ssim(x, y, levels: int = 4, nbands: int = 8):
    """pyiqa's CW-SSIM (K = 0, no guard band) of Y images (N, 1, H, W), from the one pyramid level it uses.
    Dist and ref go through one pyramid."""
    bands = _coarsest_oriented_bands(joined(x, y).to(torch.float64), levels, nbands)
    bx, by = bands[:, :len(x)], bands[:, len(x):]
    box = torch.ones(1, 1, 7, 7, dtype=torch.float64, device=x.device) / 49

    def local_means(maps):  # (..., h, w) -> 7x7 box means, 'valid'
        *lead, h, w = maps.shape
        # every map as a channel of one image, one group each: the same sums as pyiqa's conv2d of a batch of
        # single-channel maps (im2col in float64), three calls of it in one (1.0-1.2 ms a 512x384 pair less)
        flat = maps.reshape(1, -1, h, w)
        means = F.conv2d(flat, box.expand(flat.shape[1], 1, 7, 7), groups=flat.shape[1])
        return means.reshape(*lead, h - 6, w - 6)

    def modulus(z):  # pyiqa's |z| keeps 1e-12 under the root
        return torch.sqrt(z.real**2 + z.imag**2 + 1e-12)

    corr = bx * by.conj()
    corr_real, corr_imag, energy_mean = local_means(
        torch.stack([corr.real, corr.imag, modulus(bx) ** 2 + modulus(by) ** 2]))
    corr_mean = torch.complex(corr_real, corr_imag)
    cssim = 2 * modulus(corr_mean) / energy_mean
    h = bands.shape[-2]
    weight = P.fspecial_gaussian([s - 6 for s in bands.shape[-2:]], h / 4).to(device=x.device, dtype=torch.float64)[0, 0]
    return (cssim * weight).sum((-2, -1)).mean(0)


# ------------------------------------------------------------------------------------------------ VIF
@cache
def _vif_filters(bands: tuple[int, ...], device):
    """pyiqa's sp5 pyramid filters as conv weights: the first low-pass, the subsampling low-pass and the
    oriented band filters `bands` stacked (len(bands), 1, 7, 7)."""
    from pyiqa.archs.vif_arch import sp5_filters

    f = sp5_filters()
    size = int(np.floor(np.sqrt(f["bfilts"].shape[0])))
    oriented = torch.cat([_taps(f["bfilts"][:, b].reshape(size, size).T, device) for b in bands])
    return _taps(f["lo0filt"], device), _taps(f["lofilt"], device), oriented


def _reflect_filter(images, weight, stride: int = 1):
    """pyiqa's `corrDn`: reflect-pad by half the filter, correlate, subsample; every image with every filter."""
    p = (weight.shape[-1] - 1) // 2
    return filter_each(F.pad(images, (p, p, p, p), "reflect"), weight, stride)


def _vif_winsize(s: int) -> int:
    """pyiqa's window for subband `s` (`net.subbands`' numbering)."""
    return int(2 ** np.ceil((s - 2) / 6) + 1)


def _vif_levels(net, images) -> list[tuple[tuple[int, ...], torch.Tensor]]:
    """The bands of pyiqa's `SteerablePyramidSpace(images, net.level, net.ori)[::-1]` that VIF reads (`net.subbands`,
    1-based in that list), built here only: [(subbands, maps (N, len(subbands), h, w))], the subbands of one level
    and one window as the channels of one tensor, so that each step below runs once for them (pyiqa: once a subband;
    the same values, one channel each)."""
    nori = net.ori + 1
    total = 2 + net.level * nori  # high-pass, level x orientation bands, low-pass residual
    wanted = {total - s for s in net.subbands}  # their index in build order
    if any(k in (0, total - 1) for k in wanted):
        raise NotImplementedError("VIF subbands reading the high-pass or the residual")
    bands = tuple(sorted({(k - 1) % nori for k in wanted}))
    lo0, lofilt, oriented = _vif_filters(bands, images.device)
    levels = []
    lo = _reflect_filter(images, lo0)
    top = max((k - 1) // nori for k in wanted)
    for level in range(top + 1):
        out = _reflect_filter(lo, oriented)
        subbands = [total - (1 + level * nori + b) for b in bands]  # out's channels, numbered as net.subbands
        for winsize in sorted({_vif_winsize(s) for s in subbands if s in net.subbands}):
            keep = [i for i, s in enumerate(subbands) if s in net.subbands and _vif_winsize(s) == winsize]
            levels.append((tuple(subbands[i] for i in keep), out if len(keep) == len(bands) else out[:, keep]))
        if level < top:
            lo = _reflect_filter(lo, lofilt, stride=2)
    return levels


@cache
def _vif_windows(winsize: int, device):
    """pyiqa's windows for the five statistics: mean, mean, then sums (x*y, x^2, y^2), (5, 1, k, k)."""
    win = np.ones((winsize, winsize))
    return torch.cat([_taps(win / winsize**2, device)] * 2 + [_taps(win, device)] * 3)


def _correlate_kept(y, yn, windows, step: int, start: int, end: tuple[int, int]):
    """pyiqa's `VIF.corrDn_win` (reflect-pad, correlate at every pixel, keep start::step up to end) of the five
    statistics' maps y, yn, y * yn, y^2, yn^2 of subbands y, yn (N, C, H, W), each map with its window (5C, 1, k, k),
    correlating at the kept positions only, as one grouped convolution (pyiqa: one convolution a statistic; VIF
    moves by float32 rounding, 5e-7 relative on the calibration pairs). Reflecting a map copies its values, so
    the products of the reflected subbands are the reflected products: y and yn are padded, and the five maps
    written once, into the convolution's input (not stacked, padded and cropped, three passes over all five)."""
    k = windows.shape[-1]
    p = (k - 1) // 2
    region = (slice(None), slice(None), slice(start, end[0] - 1 + k), slice(start, end[1] - 1 + k))
    y, yn = (F.pad(m, (p, p, p, p), "reflect")[region] for m in (y, yn))
    c = y.shape[1]
    maps = y.new_empty(len(y), 5 * c, *y.shape[2:])
    maps[:, :c], maps[:, c:2 * c] = y, yn
    torch.mul(y, yn, out=maps[:, 2 * c:3 * c])
    torch.pow(y, 2, out=maps[:, 3 * c:4 * c])
    torch.pow(yn, 2, out=maps[:, 4 * c:])
    if len(maps) == 1 or maps.device.type != "cpu":
        return F.conv2d(maps, windows, stride=step, groups=len(windows))
    # image by image on a CPU, as pyiqa runs a pair: oneDNN's kernel for a batch of images is another
    # one, slower with every image (4x the time of one image for 2, 8x for 4)
    return torch.cat([F.conv2d(one, windows, stride=step, groups=len(windows)) for one in maps.split(1)])


def _vif_channel(net, winsize: int, y, yn):
    """pyiqa `VIF.vifsub_est_M` (gain g and noise variance vv of the distortion channel) of reference and distorted
    subbands y, yn (N, C, h, w) of one window, with its windowed sums computed only at the positions it keeps (every
    M-th, from the window's centre)."""
    M, tol = net.M, net.tol
    h, w = int(np.floor(y.shape[2] / M) * M), int(np.floor(y.shape[3] / M) * M)
    y, yn = y[:, :, :h, :w], yn[:, :, :h, :w]
    start = int(np.floor(M / 2))
    end = (int(h - np.ceil(M / 2)) + 1, int(w - np.ceil(M / 2)) + 1)
    # the five windowed statistics of every subband as the channels of one convolution
    windows = _vif_windows(winsize, y.device).repeat_interleave(y.shape[1], dim=0)  # each statistic's, per subband
    stats = _correlate_kept(y, yn, windows, step=M, start=start, end=end)
    mean_x, mean_y, sum_xy, sum_xx, sum_yy = stats.chunk(5, dim=1)
    cov_xy = sum_xy - (winsize**2) * mean_x * mean_y
    ss_x = sum_xx - (winsize**2) * mean_x**2
    ss_y = sum_yy - (winsize**2) * mean_y**2
    ss_x = F.relu(ss_x)
    ss_y = F.relu(ss_y)
    g = cov_xy / (ss_x + tol)
    vv = (ss_y - g * cov_xy) / (winsize**2)
    g = g.masked_fill(ss_x < tol, 0)
    vv = torch.where(ss_x < tol, ss_y, vv)  # pyiqa: vv[ss_x < tol] = ss_y[ss_x < tol]
    g = g.masked_fill(ss_y < tol, 0)
    vv = vv.masked_fill(ss_y < tol, 0)
    vv = torch.where(g < 0, ss_y, vv)  # pyiqa: vv[g < 0] = ss_y[g < 0]
    g = F.relu(g)
    vv = vv.masked_fill(vv < tol, tol)
    return g, vv


def _vif_reference(net, y):
    """pyiqa `VIF.refparams_vecgsm` of reference subbands y (N, C, h, w): the GSM covariance of each, its eigenvalues
    (N, C, M*M), and the multiplier field s^2 (N, C, h / M, w / M), centring the M x M neighbourhood vectors once
    instead of twice and without a repeated copy. The covariance is summed exactly as pyiqa sums it: the fit is
    ill-conditioned (a float32-rounding change in it, laying the vectors out as rows, moved VIF by 9e-5 on the
    calibration pairs)."""
    M = net.M
    y = y[:, :, :int(np.floor(y.shape[2] / M) * M), :int(np.floor(y.shape[3] / M) * M)]
    B, C, H, W = y.shape
    # pyiqa stacks the M*M shifted copies as the last dimension (L, M*M), element by element; here each column
    # shift j fills its M entries of every vector at once, from the M row shifts as one unfolded view: the same
    # tensor in a third of the time (2.2 against 3.7-4.9 ms on a 384x510 subband pair)
    h, w = H - M + 1, W - M + 1
    temp = y.new_empty(B, C, h, w, M, M)
    for j in range(M):
        temp[..., j, :] = y[:, :, :, j:j + w].unfold(2, M, 1)
    temp = temp.view(B, C, h * w, M * M)
    centred = temp.sub_(torch.mean(temp, dim=2).unsqueeze(2))  # in place: the stacked copy is not read again
    cu = torch.matmul(centred.permute(0, 1, 3, 2), centred) / temp.shape[2]
    temp = torch.stack([y[:, :, k:H + 1:M, j:W + 1:M] for j in range(M) for k in range(M)], dim=2)
    temp = temp.reshape(B, C, M * M, -1)
    ss = torch.matmul(torch.pinverse(cu), temp)
    ss = torch.sum(ss * temp, dim=2) / (M * M)
    return ss.reshape(B, C, H // M, W // M), torch.linalg.eigh(cu, UPLO="U")[0]


@cache
def _vif_module():
    """pyiqa's `VIF()` (its defaults, as `create_metric("vif")` builds it): its settings, not its forward."""
    from pyiqa.archs.vif_arch import VIF

    return VIF()


def vif(x, y):
    """pyiqa's `VIF.vif` of the Y images x (dist) and y (ref), (N, 1, H, W) float32 on 0..255, rounded
    (`to_y_channel(img, 255)`): the subbands of one level and window together (`_vif_levels`), the same values."""
    net = _vif_module()
    n = len(x)
    num, den = {}, {}
    for subbands, maps in _vif_levels(net, joined(x, y)):
        winsize = _vif_winsize(subbands[0])
        g, vv = _vif_channel(net, winsize, maps[n:], maps[:n])
        ss, lamda = _vif_reference(net, maps[n:])
        offset = int(np.ceil(((winsize - 1) / 2) / net.M))
        _, _, H, W = g.shape
        g = g[:, :, offset:H - offset, offset:W - offset]
        vv = vv[:, :, offset:H - offset, offset:W - offset]
        ss = ss[:, :, offset:H - offset, offset:W - offset]
        # pyiqa loops over the eigenvalues, one map each; all of them at once here, with pyiqa's expression
        # per element (in place: without a fresh map for each) and its sum per map, the maps' sums added in its order
        cc = lamda[:, :, :, None, None]
        sums1 = ((g * g * ss)[:, :, None] * cc).div_((vv + net.sigma_nsq)[:, :, None]).add_(1).log2_().sum(dim=[3, 4])
        sums2 = (ss[:, :, None] * cc).div_(net.sigma_nsq).add_(1).log2_().sum(dim=[3, 4])
        temp1 = 0
        temp2 = 0
        for j in range(lamda.shape[2]):
            temp1 = temp1 + sums1[:, :, j]
            temp2 = temp2 + sums2[:, :, j]
        for c, s in enumerate(subbands):  # pyiqa's mean over its one channel: the value itself
            num[s], den[s] = temp1[:, c], temp2[:, c]
    # the subbands' terms added in pyiqa's order
    num = torch.stack([num[s] for s in net.subbands], dim=1).sum(1)
    den = torch.stack([den[s] for s in net.subbands], dim=1).sum(1)
    return num / (den + 1e-12)


# ----------------------------------------------------------------------------------------------- FSIM
def _pc_bank(h: int, w: int, scales: int, orientations: int, min_length, mult, sigma_f, delta_theta, k,
             device, dtype):
    """What pyiqa's `_phase_congruency` derives from the image size alone, for one image: the log-Gabor
    filters (1, orientations * scales, h, w), as complex numbers (the image's spectrum times a real filter converts
    the filter to complex first: done here once, the same products), and the noise model's filter sums (each
    (1, orientations, 1, 1, 1))."""
    like = torch.empty(1, 1, h, w, device=device, dtype=dtype)
    filters = P.fsim_filters(h, w, scales, orientations, min_length, mult, sigma_f, delta_theta).to(like)
    filters_ifft = torch.fft.ifft2(filters).real * math.sqrt(h * w)
    em_n = (filters.view(1, orientations, scales, h, w)[:, :, :1, ...] ** 2).sum(dim=[-2, -1], keepdims=True)
    filters_ifft = filters_ifft.view(1, orientations, scales, h, w)
    sum_an2 = torch.sum(filters_ifft**2, dim=-3, keepdim=True)
    sum_ai_aj = torch.zeros(1, orientations, 1, h, w).to(like)
    for s in range(scales - 1):
        sum_ai_aj = sum_ai_aj + (filters_ifft[:, :, s:s + 1] * filters_ifft[:, :, s + 1:]).sum(dim=-3, keepdim=True)
    sum_an2 = torch.sum(sum_an2, dim=[-1, -2], keepdim=True)
    sum_ai_aj = torch.sum(sum_ai_aj, dim=[-1, -2], keepdim=True)
    return filters.to(dtype.to_complex()), em_n, sum_an2, sum_ai_aj


def _median(x):
    """`torch.median(x, dim=-1, keepdim=True).values`: the lower middle value of each row. On a CPU through numpy's
    selection, the same element (0.6 ms against 4.7 for FSIM's eight rows of a 256x192 pair); a row holding NaN is
    left to torch (NaN, where numpy's selection would sort it last)."""
    if x.device.type != "cpu" or torch.isnan(x).any():
        return torch.median(x, dim=-1, keepdim=True).values
    k = (x.shape[-1] - 1) // 2
    return torch.from_numpy(np.partition(x.numpy(), k, axis=-1)[..., k:k + 1])


def _phase_congruency(x, scales: int = 4, orientations: int = 4, min_length: int = 6, mult: int = 2,
                      sigma_f: float = 0.55, delta_theta: float = 1.2, k: float = 2.0):
    """pyiqa's `fsim_arch._phase_congruency` of grey images (N, 1, H, W), its filter bank built once per size."""
    EPS = torch.finfo(x.dtype).eps
    N, _, H, W = x.shape
    options = (scales, orientations, min_length, mult, sigma_f, delta_theta, k)
    filters, em_n, sum_an2, sum_ai_aj = _per_size(
        ("fsim", H, W, options, str(x.device), x.dtype), lambda: _pc_bank(H, W, *options, x.device, x.dtype))
    imagefft = torch.fft.fft2(x)
    filters = filters.view(1, orientations, scales, H, W)
    # pyiqa's per-scale responses and maps. On a CPU one image and orientation at a time: its scales fit in the
    # caches, where the whole batch's maps went to memory and back on every operation, and a pair's first FSIM
    # touches 30 MB instead of 47 (a GPU takes them all at once; the same bits, `tests/`). Its
    # energy e * mean_e + o * mean_o - |e * mean_o - o * mean_e| is the real part minus the |imaginary part| of
    # (e + io) * conj(mean): the same products, summed in blocks (the same bits as pyiqa's FSIM on the calibration
    # pairs; float32 rounding elsewhere, up to 1.9e-7 relative on the demo pairs)
    blocks = ([(slice(i, i + 1), slice(o, o + 1)) for i in range(N) for o in range(orientations)]
              if in_blocks(x) else [(slice(None), slice(None))])
    energy, an_sum, abs_eo = torch.empty(3, N, orientations, 1, H, W, dtype=x.dtype, device=x.device)
    for images, angles in blocks:
        z = torch.fft.ifft2(imagefft[images, :, None] * filters[:, angles])  # this block's responses only
        even, odd = z.real, z.imag
        an = torch.sqrt(even * even + odd * odd)  # pyiqa: sqrt(sum(even_odd ** 2, -1)), the same two roundings
        abs_eo[images, angles] = an[:, :, :1]  # the smallest scale's amplitude
        an_sum[images, angles] = an.sum(dim=2, keepdim=True)
        sum_e = even.sum(dim=2, keepdim=True)
        sum_o = odd.sum(dim=2, keepdim=True)
        x_energy = torch.sqrt(sum_e**2 + sum_o**2) + EPS
        turned = z * torch.complex(sum_e / x_energy, -(sum_o / x_energy))
        energy[images, angles] = (turned.real - turned.imag.abs()).sum(dim=2, keepdim=True)
    abs_eo = abs_eo.reshape(N, orientations, 1, 1, H * W)
    median_e2n = _median(abs_eo**2)
    mean_e2n = -median_e2n / math.log(0.5)
    noise_power = mean_e2n / em_n
    noise_energy2 = 2 * noise_power * sum_an2 + 4 * noise_power * sum_ai_aj
    tau = torch.sqrt(noise_energy2 / 2)
    noise_energy = tau * math.sqrt(math.pi / 2)
    moise_energy_sigma = torch.sqrt((2 - math.pi / 2) * tau**2)
    T = noise_energy + k * moise_energy_sigma
    T = T / 1.7
    energy = torch.max(energy - T, torch.zeros_like(T))
    eps = torch.finfo(energy.dtype).eps
    energy_all = energy.sum(dim=[1, 2]) + eps
    an_all = an_sum.sum(dim=[1, 2]) + eps
    return (energy_all / an_all).unsqueeze(1)


def _scharr(device, dtype):
    """pyiqa's `gradient_map` kernels: Scharr in x and in y, (2, 1, 3, 3)."""
    return P.scharr_kernels().to(device=device, dtype=dtype)


def _gradient_map(x, kernels):
    """pyiqa's `func_util.gradient_map` of grey images (N, 1, H, W)."""
    grads = filter_each(x, kernels, padding=kernels.size(-1) // 2)
    return torch.sqrt(torch.sum(grads**2, dim=-3, keepdim=True) + torch.finfo(x.dtype).eps)


def fsim(x, y):
    """pyiqa's `fsim_arch.fsim` with `FSIM()`'s options of RGB batches x (dist) and y (ref) in 0..1, through
    one pass over both."""
    from pyiqa.utils.color_util import rgb2yiq

    opts = dict(P.FSIM_OPTIONS)
    chromatic = opts.pop("chromatic")
    n = len(x)
    both = joined(x, y) * 255  # pyiqa: / data_range (1.0: the same values) * 255
    kernel_size = max(1, round(min(both.shape[-2:]) / 256))
    both = avg_pool(both, kernel_size)
    if both.size(1) != 3:
        raise ValueError("fsim expects RGB images")
    yiq = rgb2yiq(both).contiguous()
    lum = yiq[:, :1]
    pc = _phase_congruency(lum, **opts)
    grad = _gradient_map(lum, _scharr(lum.device, lum.dtype))
    pc_x, pc_y = pc[:n], pc[n:]
    T1, T2, T3, T4, lmbda = 0.85, 160, 200, 200, 0.03
    PC = P.similarity_map(pc_x, pc_y, T1)
    GM = P.similarity_map(grad[:n], grad[n:], T2)
    pc_max = torch.where(pc_x > pc_y, pc_x, pc_y)
    score = GM * PC * pc_max
    if chromatic:
        S_I = P.similarity_map(yiq[:n, 1:2], yiq[n:, 1:2], T3)
        S_Q = P.similarity_map(yiq[:n, 2:], yiq[n:, 2:], T4)
        score = score * torch.abs(S_I * S_Q) ** lmbda
    return score.sum(dim=[1, 2, 3]) / pc_max.sum(dim=[1, 2, 3])


# ------------------------------------------------------------------------------------------------ VSI
@cache
def _sdsp_maps(size: tuple[int, int], omega_0, sigma_f, sigma_d, device, dtype):
    """The size-only factors of pyiqa's `vsi_arch.sdsp`: its log-Gabor filter and its centre-bias map."""
    like = torch.empty(0, device=device, dtype=dtype)
    lg = P.log_gabor(size, omega_0, sigma_f).to(like).view(1, 1, *size)
    coordinates = torch.stack(P.meshgrid(size), dim=0).to(like)
    coordinates = coordinates * size[0] + 1
    s_d = torch.exp(-torch.sum(coordinates**2, dim=0) / sigma_d**2).view(1, 1, *size)
    return lg, s_d


def _lab(x):
    """pyiqa's `xyz2lab(rgb2xyz(x))` (D50, 2 degrees) of float64 RGB (N, 3, H, W) on 0..1, per element the same
    operations, with `torch.where` for its 0/1 masks (pyiqa multiplies both branches by them and adds: the
    branch not taken is finite, times 0, plus an exact 0) and in the pixel-major layout its matrix products
    use, instead of a conversion to it and back around each: a third of the passes."""
    eps = torch.finfo(x.dtype).eps
    linear = torch.where(x <= 0.04045, x / 12.92, torch.pow((x + 0.055) / 1.055, 2.4))
    rgb_to_xyz = torch.tensor([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                               [0.0193339, 0.1191920, 0.9503041]]).to(x)  # float32 constants, as pyiqa's
    xyz = torch.matmul(linear.permute(0, 2, 3, 1), rgb_to_xyz.t())  # (N, H, W, 3)
    tmp = xyz / torch.tensor((0.9642119944211994, 1, 0.8251882845188288)).to(x)
    # pyiqa: safe_frac_pow(tmp, 1/3) = sign(tmp) * |tmp + eps| ** (1/3), sign 1 where it is taken
    tmp = torch.where(tmp > 0.008856, (tmp + eps).pow(1.0 / 3.0), (903.3 * tmp + 16.0) / 116.0)
    xyz_to_lab = torch.tensor([[0, 116.0, 0], [500.0, -500.0, 0], [0, 200.0, -200.0]]).to(x)
    lab = torch.matmul(tmp, xyz_to_lab.t()) + torch.tensor([-16.0, 0.0, 0.0]).to(x)
    return lab.permute(0, 3, 1, 2).contiguous()


def _exp(x):
    """`torch.exp(x)`, fast where x is far below the smallest float64 exp (-745.13: the result is 0). VSI's colour
    term takes exp of -norm / 1e-6, mostly thousands below it, where torch's vectorised exp leaves its fast path
    (2.9 ms for a 256x256 pair against 0.1 in range). Those elements are computed as exp(0) and zeroed: every
    element keeps its place in the loop, so the others get the same bits."""
    far = x < -746.0
    return torch.exp(x.masked_fill(far, 0.0)).masked_fill_(far, 0.0)


def _saliency(x, omega_0: float = 0.021, sigma_f: float = 1.34, sigma_d: float = 145.0, sigma_c: float = 0.001):
    """pyiqa's `vsi_arch.sdsp` saliency of float64 RGB images (N, 3, H, W) on 0..1, before its min-max
    normalisation: (map (N, 1, H, W), its min, its max). pyiqa scales to 0..255 and back (x / 255 * 255,
    then / 255 in `rgb2lab`) around the bilinear resize; that resize is linear, so it is done here on the
    0..1 images directly (the same up to float64 rounding, ~1e-16)."""
    size = x.size()
    size_to_use = (256, 256)
    x = F.interpolate(input=x, size=size_to_use, mode="bilinear", align_corners=False)
    x_lab = _lab(x)
    lg, s_d = _sdsp_maps(size_to_use, omega_0, sigma_f, sigma_d, x.device, x.dtype)
    # pyiqa: ifft2(fft2(x_lab) * lg).real; lg is radial, hence Hermitian-symmetric, so the half spectrum
    # gives the same real part (to float64 rounding) for half the work
    x_ifft_real = torch.fft.irfft2(torch.fft.rfft2(x_lab) * lg[..., :size_to_use[1] // 2 + 1], s=size_to_use)
    eps = torch.finfo(x_lab.dtype).eps
    s_f = torch.sqrt(x_ifft_real.pow(2).sum(dim=1, keepdim=True) + eps)  # `safe_sqrt`
    min_x = x_lab.amin(dim=(-2, -1), keepdim=True)
    max_x = x_lab.amax(dim=(-2, -1), keepdim=True)
    normalized = (x_lab - min_x) / (max_x - min_x + eps)
    norm = normalized[:, 1:].pow(2).sum(dim=1, keepdim=True)
    s_c = 1 - _exp(-norm / sigma_c**2)
    vs_m = s_f * s_d * s_c
    vs_m = F.interpolate(vs_m, size[-2:], mode="bilinear", align_corners=True)
    return vs_m, vs_m.amin(dim=(-2, -1), keepdim=True), vs_m.amax(dim=(-2, -1), keepdim=True)


def vsi(x, y):
    """pyiqa's `vsi_arch.vsi` with `VSI()`'s options of RGB batches x (dist) and y (ref) in 0..1, through one
    pass over both, in float64 as pyiqa. pyiqa converts the full-size images
    to LMN and normalises the full-size saliency map before averaging 2x2 blocks (on a 512x384 image);
    both are linear per pixel, so here they follow the averaging, on a quarter of the pixels (the same up
    to float64 rounding, ~1e-16)."""
    from pyiqa.utils.color_util import rgb2lmn

    o = P.VSI_OPTIONS
    c1, c2, c3, alpha, beta = o["c1"], o["c2"], o["c3"], o["alpha"], o["beta"]
    if x.size(1) != 3:
        raise ValueError("vsi expects RGB images")
    n = len(x)
    h, w = x.shape[-2:]
    kernel_size = max(1, round(min(h, w) / 256))
    padding = kernel_size // 2
    pad_to_use = (padding, (kernel_size - 1) // 2, padding, (kernel_size - 1) // 2)
    # pyiqa's torch.cat([x, y]).double(), replicate-padded for the block averages below: converted once,
    # into the padded tensor, whose middle is the unpadded one the saliency reads
    padded = replicate_pad(joined(x, y), pad_to_use, torch.float64)
    if o["data_range"] != 1:
        padded = padded / o["data_range"]  # 0..1
    both = padded[..., padding:padding + h, padding:padding + w]
    vs, vs_min, vs_max = _saliency(both, omega_0=o["omega_0"], sigma_f=o["sigma_f"], sigma_d=o["sigma_d"],
                                   sigma_c=o["sigma_c"])
    if padding:
        vs = replicate_pad(vs, pad_to_use)
    eps = torch.finfo(vs.dtype).eps
    vs = (avg_pool(vs, kernel_size) - vs_min) / (vs_max - vs_min + eps)
    lmn = rgb2lmn(avg_pool(padded, kernel_size) * 255.0)
    gm = _gradient_map(lmn[:, :1], _scharr(lmn.device, lmn.dtype))
    vs_x, vs_y = vs[:n], vs[n:]
    s_vs = P.similarity_map(vs_x, vs_y, c1)
    s_gm = P.similarity_map(gm[:n], gm[n:], c2)
    s_m = P.similarity_map(lmn[:n, 1:2], lmn[n:, 1:2], c3)
    s_n = P.similarity_map(lmn[:n, 2:], lmn[n:, 2:], c3)
    s_c = s_m * s_n
    s_c_complex = [s_c.abs(), torch.atan2(torch.zeros_like(s_c), s_c)]
    s_c_complex_pow = [s_c_complex[0] ** beta, s_c_complex[1] * beta]
    s_c_real_pow = s_c_complex_pow[0] * torch.cos(s_c_complex_pow[1])
    s = s_vs * s_gm.pow(alpha) * s_c_real_pow
    vs_max = torch.max(vs_x, vs_y)
    output = s * vs_max
    return ((output.sum(dim=(-1, -2)) + eps) / (vs_max.sum(dim=(-1, -2)) + eps)).squeeze(-1)


# ----------------------------------------------------------------------------------------------- NLPD
@cache
def _nlpd_filters(device):
    """pyiqa `NLPD()`'s weights on `device`: the pyramid filter (1, 1, 5, 5), the divisive normalisation's
    filters rotated by 180 degrees as pyiqa rotates them for each call (`tf.rotate`), and its constants."""
    import torchvision.transforms.functional as tf

    filt = torch.Tensor(P.LAPLACIAN_FILTER.reshape(1, 1, 5, 5)).to(device)
    dn = [tf.rotate(torch.Tensor(np.reshape(f, (1, 1, 3, 3)).astype(np.float32)), 180).to(device)
          for f in P.NLPD_DN_FILTERS]
    sigmas = [torch.Tensor(np.array(x)).to(device) for x in P.NLPD_SIGMAS]
    return filt, dn, sigmas


def _nlpd_pyramid(im):
    """pyiqa's `NLPD.pyramid` (channels = 1), all images through each convolution at once."""
    filt, dn, sigmas = _nlpd_filters(im.device)
    J = im
    pyr = []
    for i in range(P.NLPD_LEVELS - 1):
        I = filter_each(P.symmetric_pad(J, 2, 2, 2, 2), filt, stride=2)  # MATLAB's 'symmetric', as pyiqa
        odd_h, odd_w = 2 * I.size(2) - J.size(2), 2 * I.size(3) - J.size(3)
        I_pad = F.pad(I, (1, 1, 1, 1), mode="replicate")
        # pyiqa upsamples as MATLAB does, with zeros between the pixels (a pixel shuffle of I_pad * 4 and three
        # zero maps), then zero-pads by 2 for the filter: the same map written once into zeros
        h, w = 2 * I_pad.shape[2], 2 * I_pad.shape[3]
        I_up = I_pad.new_zeros(I_pad.shape[0], 1, h + 4, w + 4)
        torch.mul(I_pad, 4, out=I_up[:, :, 2:h + 2:2, 2:w + 2:2])
        I_up_conv = filter_each(I_up, filt)
        I_up_conv = I_up_conv[:, :, 2:(h - 2 - odd_h), 2:(w - 2 - odd_w)]
        out = J - I_up_conv
        out_conv = filter_each(F.pad(torch.abs(out), (1, 1, 1, 1)), dn[i])
        pyr.append(out / (sigmas[i] + out_conv))
        J = I
    out_conv = filter_each(F.pad(torch.abs(J), (1, 1, 1, 1)), dn[-1])
    pyr.append(J / (sigmas[-1] + out_conv))
    return pyr


def nlpd(x, y):
    """pyiqa's `NLPD.nlpd` (one channel, Y: its defaults) of the Y images x (dist) and y (ref) (N, 1, H, W)
    on 0..1 (`to_y_channel(img)`), through one pyramid."""
    n = len(x)
    total = []
    for z in _nlpd_pyramid(joined(x, y)):
        diff = (z[:n] - z[n:]) ** 2
        total.append(torch.sqrt(torch.mean(diff, (1, 2, 3))))
    return torch.stack(total, dim=1).mean(1)


# ----------------------------------------------------------------------------------------------- GMSD
def gmsd(x, y, T: int = 170):
    """pyiqa's `gmsd_arch.gmsd` (test_y_channel) of the Y images x (dist) and y (ref) on 0..255, rounded."""
    n = len(x)
    dx = (torch.Tensor([[1, 0, -1], [1, 0, -1], [1, 0, -1]]) / 3.0).unsqueeze(0).unsqueeze(0).to(x)
    dy = (torch.Tensor([[1, 1, 1], [0, 0, 0], [-1, -1, -1]]) / 3.0).unsqueeze(0).unsqueeze(0).to(x)
    ave = torch.ones(1, 1, 2, 2).to(x) / 4.0
    Y = filter_each(joined(x, y), ave, stride=2)
    grad = filter_each(Y, torch.cat([dx, dy]), padding=1)
    gradient_map = torch.sqrt(grad[:, :1] ** 2 + grad[:, 1:] ** 2 + 1e-12)
    g1, g2 = gradient_map[:n], gradient_map[n:]
    quality_map = (2 * g1 * g2 + T) / (g1**2 + g2**2 + T)
    return torch.std(quality_map.view(quality_map.shape[0], -1), dim=1)
