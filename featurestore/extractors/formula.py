"""pyiqa's formula full-reference metrics (no weights), fed from the decoded batch every extractor shares.

Running `pyiqa <metric> -t dist -r ref` pays, per metric and per pair: two image decodes, the input range
check, a fresh RGB->Y conversion inside each metric, and autograd bookkeeping. Here pairs run under
`torch.inference_mode` (pairs of equal size as one batch where that pays: on a GPU, or small images; see
`BATCH_PIXELS`), and what several metrics share is computed once per batch: both sides as one tensor, the
rounded YIQ luma on the 0..255 scale (pyiqa's `to_y_channel(x, 255)`) for ssim, ms_ssim, vif and gmsd, and
`ssim` is level 0 of `ms_ssim`, so asking for both costs one SSIM pyramid. The metrics themselves are pyiqa's
arithmetic without its waste (`_formula_metrics`, which says what and how close); psnr runs pyiqa's own
function and mad pyiqa's own module. On a CPU the work of a call is cut into pieces (batch x metric) that run
side by side on the threads the executor allows (`featurestore.threads.thread_budget`), torch on one thread in
each: the values do not depend on the number of threads.

Where: `device = "auto"` (the default) runs on the GPU when there is one. The device is a runtime key (not
hashed), so CPU and GPU runs share one store folder and their values must agree: the GPU computes in full
float32 (no TF32, `_full_float32`) and float64 where pyiqa does; what remains is the order of sums in cuDNN,
cuFFT and CUDA's reductions, expected within the tolerances `tests/test_extractors_formula.py` holds the CPU
values to against pyiqa (1e-5 relative, vif 1e-4; vif's GSM fit is the sensitive one). Not yet measured on a
GPU with these kernels (`bench/bench_formula.py --device cuda` compares siqa with pyiqa, both on the GPU).

Scores keep pyiqa's orientation (gmsd, nlpd, mad: lower is better). A metric that fails on a batch is retried
pair by pair; a pair it still fails on gets NaN and a warning, the other metrics and pairs keep their values.
"""
from __future__ import annotations

import contextlib
import logging
import math
import threading
import warnings
from collections import Counter, defaultdict
from functools import cached_property
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from ..io import DecodedPair
from ..threads import fewer_gil_switches, side_by_side, thread_budget
from . import _formula_metrics as kernels
from .base import EXTRACTORS, Column, ExtractorSettings, PairExtractor

log = logging.getLogger(__name__)

DEFAULT_METRICS = ["psnr", "ssim", "ms_ssim", "cw_ssim", "fsim", "vsi", "gmsd", "vif", "nlpd"]
#: known but off by default: MAD costs about 3 s a 512x384 pair on a CPU core
OPTIONAL_METRICS = ["mad"]
KNOWN_METRICS = DEFAULT_METRICS + OPTIONAL_METRICS
#: pairs of one size are batched up to this many pixels (pairs x height x width). On a GPU a batch fills the
#: device (memory bounds it: VSI's float64 full-size maps and FSIM's 16 complex responses a pixel are the
#: largest). On a CPU one 512x384 pair at a time measured faster than the five calibration pairs as one batch
#: (1.36 s against 1.80 s of CPU time, one thread): the working set leaves the caches; only small images are
#: batched there.
BATCH_PIXELS = {"cuda": 16 * 1024 * 1024, "cpu": 256 * 256}

# pyiqa's MS-SSIM weights, kept as float32 as pyiqa stores them (`torch.FloatTensor`)
_MS_SSIM_WEIGHTS = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333], dtype=np.float32)

# MS-SSIM halves the image 4 times and its 11x11 window must fit the coarsest scale: 11 * 2**4 px.
MIN_SIDE = {"ms_ssim": 11 * 2 ** 4}


class _PairBatch:
    """One batch of equal-size pairs on the device, with the representations several metrics share: the
    images of both sides as one tensor (dist first), and its luma."""

    def __init__(self, pairs: list[DecodedPair], device):
        self.n = len(pairs)
        self.both = torch.cat([p.dist.tensor for p in pairs] + [p.ref.tensor for p in pairs]).to(device)
        self.dist, self.ref = self.both[:self.n], self.both[self.n:]
        self._ssim_levels: list[tuple] = []
        self._pyramid = None

    @cached_property
    def luma_unit(self):
        """pyiqa's `to_y_channel(x)`: YIQ luma on 0..1, not rounded, float32 (nlpd; `luma` is made from it)."""
        return _yiq_luma(self.both)

    @cached_property
    def luma(self):
        """pyiqa's `to_y_channel(x, 255)`: YIQ luma on 0..255, rounded, float32 (ssim, ms_ssim, vif, gmsd): the
        same products as `luma_unit`, scaled (pyiqa's `y - y.detach() + y.round()` is `y.round()` without autograd)."""
        return (self.luma_unit * 255).round()

    @property
    def dist_y(self):
        return self.luma[:self.n]

    @property
    def ref_y(self):
        return self.luma[self.n:]

    @cached_property
    def luma64(self):
        """The same from the float64 RGB, as pyiqa's CW_SSIM rounds it."""
        return (_yiq_luma(self.both.to(torch.float64)) * 255).round()

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
            self._ssim_levels.append(kernels.ssim_level(x, y))
        return self._ssim_levels[:levels]


#: the Y row of pyiqa's `rgb2yiq` matrix
_YIQ_Y = (0.299, 0.587, 0.114)


def _yiq_luma(rgb):
    """The Y of pyiqa's `rgb2yiq` of RGB (N, 3, H, W), as (N, 1, H, W): its row of the product as two fused
    multiply-adds, with its float32 constants. pyiqa multiplies all three rows (a batched 3x3 product through
    the pixel-major layout) and gathers the first (`[:, [0]]`): 1.9 ms a float32 pair against 0.5 here, 2.5
    against 0.9 in float64. The same bits as pyiqa's product on this CPU (MKL; float32 and float64, the 13M
    pixels of the demo and calibration images); where a product rounds otherwise (another BLAS, a GPU) the two
    differ by float rounding, which rounding to 0..255 levels can turn into one level at a pixel."""
    w = torch.tensor(_YIQ_Y).to(rgb)  # float32 constants, as pyiqa's, then the images' dtype
    return torch.addcmul(torch.addcmul(rgb[:, 0:1] * w[0], rgb[:, 1:2], w[1]), rgb[:, 2:3], w[2])


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
    return kernels.cw_ssim(batch.luma64[:batch.n], batch.luma64[batch.n:])


def _score_rgb(name):
    def score(batch: _PairBatch, nets):
        return nets[name](batch.dist, batch.ref)
    return score


#: how each metric is computed from a batch: pyiqa's network for mad, `_formula_metrics` for the others
_SCORERS = {
    "psnr": lambda batch, nets: kernels.psnr(batch.dist, batch.ref),
    "ssim": _score_ssim,
    "ms_ssim": _score_ms_ssim,
    "cw_ssim": _score_cw_ssim,
    "fsim": lambda batch, nets: kernels.fsim(batch.dist, batch.ref),
    "vsi": lambda batch, nets: kernels.vsi(batch.dist, batch.ref),
    "gmsd": lambda batch, nets: kernels.gmsd(batch.dist_y, batch.ref_y),
    "vif": lambda batch, nets: kernels.vif(batch.dist_y, batch.ref_y),
    "nlpd": lambda batch, nets: kernels.nlpd(batch.luma_unit[:batch.n], batch.luma_unit[batch.n:]),
    "mad": _score_rgb("mad"),
}
_PYIQA_NETWORKS = {"mad"}  # the metrics run by pyiqa's own module
#: metrics computed together because they share work: ssim is level 0 of ms_ssim's pyramid
_SHARING = [("ssim", "ms_ssim")]
#: CPU seconds of each metric on a 512x384 pair, one thread (`bench/bench_formula.py`'s breakdown in bench/results):
#: the dearest piece of a batch starts first, so that threads running side by side finish together
_COST = {"mad": 3.0, "vif": 0.045, "vsi": 0.037, "fsim": 0.025, "cw_ssim": 0.015, "ssim": 0.012, "nlpd": 0.011,
         "ms_ssim": 0.007, "gmsd": 0.002, "psnr": 0.001}


def _metric_groups(metrics: list[str]) -> list[tuple[str, ...]]:
    """`metrics` as the pieces of work one batch is cut into (`_SHARING`), the dearest first."""
    groups = [tuple(m for m in shared if m in metrics) for shared in _SHARING]
    groups = [g for g in groups if g]
    groups += [(m,) for m in metrics if not any(m in g for g in groups)]
    return sorted(groups, key=lambda g: -sum(_COST[m] for m in g))


@EXTRACTORS.register()
class FormulaExtractor(PairExtractor):
    """pyiqa's formula FR metrics, one float64 column per metric, named as the metric."""

    name = "formula"
    # v2: cw_ssim takes its luma from float64 RGB as pyiqa does (stored values moved by up to 2.8e-5, onto pyiqa's),
    # and the other metrics by float rounding at most: a store's v1 values are never mixed with these.
    # v3: fsim and vif sum in another order (float32 rounding; from v2 on the 108 demo pairs fsim moved up to 1.9e-7
    # and vif up to 3.8e-6 relative, no farther from pyiqa), the other metrics the same bits as v2
    version = 3
    # The device changes where the metrics run, not what they compute: CPU and GPU share stored features.
    runtime_keys = ("device",)
    batch_size = 16

    class Settings(ExtractorSettings):
        metrics: list[Literal[tuple(KNOWN_METRICS)]] = Field(
            DEFAULT_METRICS, min_length=1, description=f"distinct metric names, one column each: {', '.join(KNOWN_METRICS)}")
        device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda or cuda:N; not hashed")

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
                self._nets = {m: _build_net(m, self.device) for m in self.metrics if m in _PYIQA_NETWORKS}
        return self._nets

    def compute_pairs(self, pairs: list[DecodedPair]) -> dict[str, np.ndarray]:
        """Every metric of every pair. The work is cut into pieces, one per batch and metric (ssim and ms_ssim as
        one: they share a pyramid), the dearest of a batch first. On a CPU the pieces run side by side on
        `thread_budget()` threads (the executor sets it; torch computes on one thread in each); a piece's
        arithmetic does not depend on the others, so the values are the same for any number of threads."""
        out = {m: np.full(len(pairs), np.nan) for m in self.metrics}
        batches = _size_batches(pairs, BATCH_PIXELS.get(self.device.type, BATCH_PIXELS["cpu"]))
        groups = _metric_groups(self.metrics)
        pieces = [(b, group) for b in range(len(batches)) for group in groups]
        threads = min(len(pieces), thread_budget() or 1) if self.device.type == "cpu" else 1
        _ = self.nets  # built once, before threads share them
        kernels.import_pyiqa()  # imported in this thread, before threads share the kernels
        lock = threading.Lock()
        live: dict[int, _PairBatch] = {}  # the batches pieces are working on: dropped after their last piece
        left = Counter(b for b, _ in pieces)

        def score(piece):
            b, group = piece
            members = [pairs[i] for i in batches[b]]
            with lock:
                batch = live.get(b) or live.setdefault(b, _PairBatch(members, self.device))
            with torch.inference_mode():
                scores = {m: self._score(m, batch, members) for m in group}
            with lock:
                left[b] -= 1
                if not left[b]:
                    del live[b]
            return b, scores

        switches = fewer_gil_switches() if threads > 1 else contextlib.nullcontext()
        with _full_float32(), side_by_side(threads) as pool, switches:
            done = defaultdict(dict)
            for b, scores in pool.map(score, pieces) if threads > 1 else map(score, pieces):
                done[b].update(scores)
                if len(done[b]) == len(self.metrics):  # the batch's last piece: one transfer a batch
                    scores = done.pop(b)
                    values = torch.stack([scores[m] for m in self.metrics]).cpu().numpy()
                    for m, v in zip(self.metrics, values):
                        out[m][batches[b]] = v
        return out

    def _score(self, metric: str, batch: _PairBatch, pairs: list[DecodedPair]) -> torch.Tensor:
        """The metric's float64 scores (n,) on the device; NaN for a pair it is undefined on or fails on."""
        short_side = min(min(p.ref.height, p.ref.width) for p in pairs)
        if short_side < MIN_SIDE.get(metric, 0):
            if len(pairs) > 1:
                return torch.cat([self._score(metric, _PairBatch([p], self.device), [p]) for p in pairs])
            log.info("formula: %s undefined for a %d px short side (needs %d); stored as NaN",
                     metric, short_side, MIN_SIDE[metric])
            return torch.full((1,), math.nan, dtype=torch.float64, device=self.device)
        try:
            return _checked(_SCORERS[metric](batch, self.nets), len(pairs))
        except Exception as exc:  # noqa: BLE001 - one metric failing must not lose the other metrics
            if len(pairs) > 1:  # find the pair(s) at fault; the others keep their value
                return torch.cat([self._score(metric, _PairBatch([p], self.device), [p]) for p in pairs])
            log.warning("formula: %s failed on pair %s (%s: %s); stored as NaN",
                        metric, pairs[0].pair_id, type(exc).__name__, exc)
            return torch.full((1,), math.nan, dtype=torch.float64, device=self.device)

    def close(self) -> None:
        self._nets = None


def _build_net(metric: str, device) -> torch.nn.Module:
    import pyiqa

    return pyiqa.create_metric(metric, device=device).net


def _checked(scores: torch.Tensor, n: int) -> torch.Tensor:
    """A scorer's output as (n,) float64, where it is (no transfer: the batch's scores come back together)."""
    values = scores.detach().to(torch.float64).reshape(-1)
    if values.shape != (n,):
        raise RuntimeError(f"metric returned {values.shape[0]} values for {n} pairs")
    return values


@contextlib.contextmanager
def _full_float32():
    """Float32 as float32 on a GPU: no TF32 in convolutions or matrix products. cuDNN's default TF32
    convolutions moved vif by 4e-4 and nlpd by 8e-5 from the CPU values on an H100, and CPU and GPU runs share
    one store folder (`device` is a runtime key). The matmul setting is process-wide (another extractor or a
    benchmark may have lowered it): restored on the way out."""
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.backends.cudnn.flags(enabled=True, deterministic=True, allow_tf32=False):
            yield
    finally:
        torch.set_float32_matmul_precision(precision)


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
