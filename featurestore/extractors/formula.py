"""pyiqa's formula full-reference metrics (no weights), fed from the decoded batch every extractor shares.

Running `pyiqa <metric> -t dist -r ref` pays, per metric and per pair: two image decodes, the input range
check, a fresh RGB->Y conversion inside each metric, and autograd bookkeeping. Here each pyiqa network is built
once per extractor, pairs run under `torch.inference_mode` (pairs of equal size as one batch where that pays:
on a GPU, or small images; see `BATCH_PIXELS`), and what several metrics share is computed once per batch:
the rounded YIQ luma on the 0..255 scale (pyiqa's `to_y_channel(x, 255)`) feeds ssim, ms_ssim and cw_ssim,
and `ssim` is level 0 of `ms_ssim`, so asking for both costs one SSIM pyramid.

Profiling pyiqa's path on the 512x384 calibration pairs (one CPU thread) put 70 % of the time in SSIM and
MS-SSIM and 25 % in CW-SSIM and VIF. What was waste there is done differently here, with the same
arithmetic; `tests/test_extractors_formula.py` holds each to pyiqa's own output:
- SSIM / MS-SSIM (`_ssim_level`): pyiqa filters with an 11x11 float64 `conv2d` (im2col over 121 taps); the
  Gaussian window is separable, so two 11-tap passes of in-place shifted adds do it ~30x cheaper. Agrees
  with pyiqa to ~1e-7 (the exact float64 window here, pyiqa's rounded to float32).
- CW-SSIM (`_cw_ssim`): pyiqa builds the whole steerable pyramid (high-pass, all levels, 8 bands each) and
  reads one level; only that level is built here. Bit-identical, ~12x cheaper.
- VIF (`_strided_vif_class`): pyiqa correlates at every pixel and keeps one position in nine. Bit-identical,
  2x cheaper.

Scores keep pyiqa's orientation (gmsd, nlpd, mad: lower is better). A metric that fails on a batch is retried
pair by pair; a pair it still fails on gets NaN and a warning, the other metrics and pairs keep their values.
"""
from __future__ import annotations

import logging
import math
import warnings
from collections import defaultdict
from functools import cache, cached_property
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from ..io import DecodedPair
from .base import EXTRACTORS, Column, ExtractorSettings, PairExtractor

log = logging.getLogger(__name__)

DEFAULT_METRICS = ["psnr", "ssim", "ms_ssim", "cw_ssim", "fsim", "vsi", "gmsd", "vif", "nlpd"]
#: known but off by default: MAD costs about 3 s a 512x384 pair on a CPU core
OPTIONAL_METRICS = ["mad"]
KNOWN_METRICS = DEFAULT_METRICS + OPTIONAL_METRICS
#: pairs of one size are batched up to this many pixels (pairs x height x width). On a GPU a batch fills the device (memory
#: bounds it: the float64 steerable pyramids of cw_ssim and vif hold ~40 copies of each image). On a CPU these
#: metrics are memory-bound, and a batch of four 512x384 pairs measured 1.2x (1024x768: 1.8x) slower per
#: pair than one pair at a time, as the working set leaves the cache: only small images are batched there.
BATCH_PIXELS = {"cuda": 16 * 1024 * 1024, "cpu": 256 * 256}

# pyiqa's MS-SSIM weights, kept as float32 as pyiqa stores them (`torch.FloatTensor`)
_MS_SSIM_WEIGHTS = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333], dtype=np.float32)
_SSIM_RANGE = 255.0


# MS-SSIM halves the image 4 times and its 11x11 window must fit the coarsest scale: 11 * 2**4 px.
MIN_SIDE = {"ms_ssim": 11 * 2 ** 4}


def _gaussian_taps(size: int = 11, sigma: float = 1.5) -> list[float]:
    """1-D factor of MATLAB's fspecial('gaussian', size, sigma): the 2-D window is its outer product."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return (g / g.sum()).tolist()


_TAPS = _gaussian_taps()


def _gaussian_valid(maps):
    """'valid' correlation of every map with the 11x11 SSIM window, as two separable 11-tap passes."""
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


def _ssim_level(x, y):
    """pyiqa `ssim(..., get_cs=True)` at one scale: (mean SSIM, mean contrast-structure), each (n,)."""
    c1 = (0.01 * _SSIM_RANGE) ** 2
    c2 = (0.03 * _SSIM_RANGE) ** 2
    mu1, mu2, xx, yy, xy = _gaussian_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1)).unbind(1)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    cs_map = F.relu((2 * (xy - mu1_mu2) + c2) / ((xx - mu1_sq) + (yy - mu2_sq) + c2))
    ssim_map = ((2 * mu1_mu2 + c1) / (mu1_sq + mu2_sq + c1)) * cs_map
    return ssim_map.mean((1, 2)), cs_map.mean((1, 2))


def _coarsest_oriented_bands(images, levels: int, nbands: int):
    """Level `levels` of the complex steerable pyramid pyiqa's CW_SSIM builds, the only level it reads:
    `SCFpyr_PyTorch(height=levels, nbands=nbands, scale_factor=2).build(images)[levels]`, as one complex
    tensor (nbands, N, h, w). pyiqa builds the high-pass and every level's oriented bands first; the finer
    bands are 98 % of its inverse FFTs and most of its mask interpolations, and they are skipped here. The
    low-pass path is the same: pyiqa's lookup tables (`rcosFn`, `pointOp`), its masks rounded to float32,
    its crops, in its order, so the bands agree with pyiqa's to rounding (~1e-16)."""
    from pyiqa.matlab_utils.math_util import pointOp, prepare_grid, rcosFn

    h, w = images.shape[-2:]
    if levels > int(np.floor(np.log2(min(h, w)))) - 2:
        raise RuntimeError(f"cannot build {levels} pyramid levels on a {w}x{h} image")

    def mask(grid, table, x):
        return torch.from_numpy(pointOp(grid, table, x)).float().to(images.device)

    log_rad, angle = prepare_grid(h, w)
    xrcos, yrcos = rcosFn(1, -0.5)
    yrcos = np.sqrt(yrcos)
    yircos = np.sqrt(1 - yrcos**2)
    dft = torch.fft.fftshift(torch.fft.fft2(images[:, 0]), dim=(-2, -1)) * mask(log_rad, yircos, xrcos)
    for _ in range(levels - 1):  # low-pass and subsample, as pyiqa does after each level's bands
        xrcos = xrcos - 1
        dims = np.array(dft.shape[-2:])
        start = (np.ceil((dims + 0.5) / 2) - np.ceil((np.ceil((dims - 0.5) / 2) + 0.5) / 2)).astype(int)
        end = (start + np.ceil((dims - 0.5) / 2)).astype(int)
        log_rad = log_rad[start[0]:end[0], start[1]:end[1]]
        angle = angle[start[0]:end[0], start[1]:end[1]]
        dft = dft[:, start[0]:end[0], start[1]:end[1]] * mask(log_rad, yircos, xrcos)

    xrcos = xrcos - 1
    himask = mask(log_rad, yrcos, xrcos)
    lutsize = 1024
    xcosn = np.pi * np.arange(-(2 * lutsize + 1), lutsize + 2) / lutsize
    alpha = (xcosn + np.pi) % (2 * np.pi) - np.pi
    order = nbands - 1
    const = 2.0 ** (2 * order) * math.factorial(order) ** 2 / (nbands * math.factorial(2 * order))
    ycosn = 2 * np.sqrt(const) * np.cos(xcosn) ** order * (np.abs(alpha) < np.pi / 2)
    rotate = complex(np.power(complex(0, -1), order))  # pyiqa's `complex_fact_construct`
    bands = [(dft * mask(angle, ycosn, xcosn + np.pi * b / nbands) * himask) * rotate for b in range(nbands)]
    return torch.fft.ifft2(torch.fft.ifftshift(torch.stack(bands), dim=(-2, -1)))


def _cw_ssim(x, y, levels: int = 4, nbands: int = 8):
    """pyiqa's CW-SSIM (K = 0, no guard band) of Y images (N, 1, H, W), from the one pyramid level it uses.
    Dist and ref go through one pyramid so each mask is interpolated once."""
    from pyiqa.matlab_utils import fspecial

    bands = _coarsest_oriented_bands(torch.cat([x, y]).to(torch.float64), levels, nbands)
    bx, by = bands[:, :len(x)], bands[:, len(x):]
    box = torch.ones(1, 1, 7, 7, dtype=torch.float64, device=x.device) / 49

    def local_mean(maps):  # (nbands, N, h, w) -> 7x7 box means, 'valid'
        b, n, h, w = maps.shape
        return F.conv2d(maps.reshape(b * n, 1, h, w), box).reshape(b, n, h - 6, w - 6)

    def modulus(z):  # pyiqa's |z| keeps 1e-12 under the root
        return torch.sqrt(z.real**2 + z.imag**2 + 1e-12)

    corr = bx * by.conj()
    corr_mean = torch.complex(local_mean(corr.real), local_mean(corr.imag))
    energy_mean = local_mean(modulus(bx) ** 2 + modulus(by) ** 2)
    cssim = 2 * modulus(corr_mean) / energy_mean
    h = bands.shape[-2]
    weight = fspecial([s - 6 for s in bands.shape[-2:]], h / 4, 1).to(device=x.device, dtype=torch.float64)[0, 0]
    return (cssim * weight).sum((-2, -1)).mean(0)


class _PairBatch:
    """One batch of equal-size pairs on the device, with the representations several metrics share."""

    def __init__(self, pairs: list[DecodedPair], device):
        self.dist = torch.cat([p.dist.tensor for p in pairs]).to(device)
        self.ref = torch.cat([p.ref.tensor for p in pairs]).to(device)
        self._ssim_levels: list[tuple] = []
        self._pyramid = None

    @cached_property
    def dist_y(self):
        from pyiqa.utils.color_util import to_y_channel

        return to_y_channel(self.dist, 255, "yiq")

    @cached_property
    def ref_y(self):
        from pyiqa.utils.color_util import to_y_channel

        return to_y_channel(self.ref, 255, "yiq")

    def ssim_levels(self, levels: int) -> list[tuple]:
        """The first `levels` (ssim, cs) scales of pyiqa's MS-SSIM pyramid, extended on demand."""
        if self._pyramid is None:
            self._pyramid = (self.dist_y.to(torch.float64), self.ref_y.to(torch.float64))
        while len(self._ssim_levels) < levels:
            x, y = self._pyramid
            if self._ssim_levels:  # pyiqa pools after each level, zero-padding odd sides
                padding = (x.shape[2] % 2, x.shape[3] % 2)
                x = F.avg_pool2d(x, kernel_size=2, padding=padding)
                y = F.avg_pool2d(y, kernel_size=2, padding=padding)
                self._pyramid = (x, y)
            self._ssim_levels.append(_ssim_level(x, y))
        return self._ssim_levels[:levels]


def _score_ssim(batch: _PairBatch, nets):
    return batch.ssim_levels(1)[0][0]


def _score_ms_ssim(batch: _PairBatch, nets):
    levels = batch.ssim_levels(len(_MS_SSIM_WEIGHTS))
    weights = torch.from_numpy(_MS_SSIM_WEIGHTS).to(levels[0][0])
    score = levels[-1][0] ** weights[-1]
    for (_, cs), w in zip(levels[:-1], weights[:-1]):
        score = score * cs ** w
    return score


def _score_cw_ssim(batch: _PairBatch, nets):
    return _cw_ssim(batch.dist_y, batch.ref_y)


def _score_rgb(name):
    def score(batch: _PairBatch, nets):
        return nets[name](batch.dist, batch.ref)
    return score


#: how each metric is computed from a batch and the pyiqa networks
_SCORERS = {
    "psnr": _score_rgb("psnr"),
    "ssim": _score_ssim,
    "ms_ssim": _score_ms_ssim,
    "cw_ssim": _score_cw_ssim,
    "fsim": _score_rgb("fsim"),
    "vsi": _score_rgb("vsi"),
    "gmsd": _score_rgb("gmsd"),
    "vif": _score_rgb("vif"),
    "nlpd": _score_rgb("nlpd"),
    "mad": _score_rgb("mad"),
}
_NO_NETWORK = {"ssim", "ms_ssim", "cw_ssim"}  # computed here, from the shared luma


@EXTRACTORS.register()
class FormulaExtractor(PairExtractor):
    """pyiqa's formula FR metrics, one float64 column per metric, named as the metric."""

    name = "formula"
    version = 1
    # The device changes where the metrics run, not what they compute: CPU and GPU share stored features.
    runtime_keys = ("device",)
    batch_size = 16

    class Settings(ExtractorSettings):
        metrics: list[Literal[tuple(KNOWN_METRICS)]] = Field(
            DEFAULT_METRICS, min_length=1, description=f"distinct metric names, one column each: {', '.join(KNOWN_METRICS)}")
        device: str = Field("cpu", description="cpu, auto (CUDA when present), cuda or cuda:N; not hashed")

        @field_validator("metrics")
        @classmethod
        def _distinct(cls, metrics: list[str]) -> list[str]:
            if len(set(metrics)) != len(metrics):
                raise ValueError("metrics must be distinct")
            return metrics

    def __init__(self, settings=None, **config):
        super().__init__(settings, **config)
        self.metrics = list(self.config["metrics"])
        self._nets = None

    def pair_columns(self) -> list[Column]:
        return [Column(m) for m in self.metrics]

    @property
    def device(self):
        from ..devices import pick_device

        return pick_device(self.config["device"])

    @property
    def nets(self) -> dict:
        """pyiqa's networks with its default options, built once (not the per-call InferenceModel wrapper)."""
        if self._nets is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._nets = {m: _build_net(m, self.device) for m in self.metrics if m not in _NO_NETWORK}
        return self._nets

    def compute_pairs(self, pairs: list[DecodedPair]) -> dict[str, np.ndarray]:
        out = {m: np.full(len(pairs), np.nan) for m in self.metrics}
        # cuDNN's default TF32 convolutions moved vif by 4e-4 and nlpd by 8e-5 from the CPU values on an H100;
        # CPU and GPU runs share one store folder (see `config_hash`), so the GPU runs in full float32 here
        with torch.inference_mode(), torch.backends.cudnn.flags(enabled=True, deterministic=True, allow_tf32=False):
            for index in _size_batches(pairs, BATCH_PIXELS.get(self.device.type, BATCH_PIXELS["cpu"])):
                batch_pairs = [pairs[i] for i in index]
                scores = self._score_batch(batch_pairs)
                for m, values in scores.items():
                    out[m][index] = values
        return out

    def _score_batch(self, pairs: list[DecodedPair]) -> dict[str, np.ndarray]:
        batch = _PairBatch(pairs, self.device)
        return {m: self._score(m, batch, pairs) for m in self.metrics}

    def _score(self, metric: str, batch: _PairBatch, pairs: list[DecodedPair]) -> np.ndarray:
        short_side = min(min(p.ref.height, p.ref.width) for p in pairs)
        if short_side < MIN_SIDE.get(metric, 0):
            if len(pairs) > 1:
                return np.concatenate([self._score(metric, _PairBatch([p], self.device), [p]) for p in pairs])
            log.info("formula: %s undefined for a %d px short side (needs %d); stored as NaN",
                     metric, short_side, MIN_SIDE[metric])
            return np.full(1, np.nan)
        try:
            return _as_numpy(_SCORERS[metric](batch, self.nets), len(pairs))
        except Exception as exc:  # noqa: BLE001 - one metric failing must not lose the other metrics
            if len(pairs) > 1:  # find the pair(s) at fault; the others keep their value
                return np.concatenate([self._score(metric, _PairBatch([p], self.device), [p]) for p in pairs])
            log.warning("formula: %s failed on pair %s (%s: %s); stored as NaN",
                        metric, pairs[0].pair_id, type(exc).__name__, exc)
            return np.full(1, np.nan)

    def close(self) -> None:
        self._nets = None


def _build_net(metric: str, device) -> torch.nn.Module:
    import pyiqa
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    if metric == "vif":
        options = {k: v for k, v in DEFAULT_CONFIGS[metric]["metric_opts"].items() if k != "type"}
        return _strided_vif_class()(**options).to(device).eval()
    return pyiqa.create_metric(metric, device=device).net


@cache
def _strided_vif_class():
    from pyiqa.archs.vif_arch import VIF

    class StridedVIF(VIF):
        """pyiqa's VIF, except that its windowed statistics are correlated only at the positions kept.

        pyiqa's `corrDn_win` correlates at every pixel and then keeps one position in 3x3 (the GSM block
        grid): 8/9 of its 40 convolutions were thrown away, half of VIF's time. Striding the same
        correlation over the same padded window gives bit-identical values."""

        def corrDn_win(self, image, filt, step=1, channels=1, start=(0, 0), end=(0, 0)):
            k = filt.shape[0]
            p = (k - 1) // 2
            weight = torch.from_numpy(filt).float().expand(channels, 1, k, k).to(image.device)
            image = F.pad(image, (p, p, p, p), "reflect")[:, :, start[0]:end[0] - 1 + k, start[1]:end[1] - 1 + k]
            return F.conv2d(image, weight, stride=step, groups=channels)

    return StridedVIF


def _as_numpy(scores, n: int) -> np.ndarray:
    values = scores.detach().double().cpu().numpy().reshape(-1)
    if values.shape != (n,):
        raise RuntimeError(f"metric returned {values.shape[0]} values for {n} pairs")
    return values


def _size_batches(pairs: list[DecodedPair], max_pixels: int) -> list[list[int]]:
    """Indices of pairs grouped by image size, each group cut to `max_pixels` pixels (at least one pair)."""
    by_size = defaultdict(list)
    for i, p in enumerate(pairs):
        by_size[p.ref.rgb.shape[:2]].append(i)
    batches = []
    for (h, w), index in by_size.items():
        step = max(1, max_pixels // (h * w))
        batches.extend(index[i:i + step] for i in range(0, len(index), step))
    return batches
