"""Frequency-domain pair features: what a degradation did to the spectrum of the reference.

Blur removes high-frequency energy, noise adds it, compression removes some bands and adds blocking
harmonics, a shift or warp leaves magnitudes alone but moves phase. Each image's spectrum (grey, mean
removed, Hann-windowed so the image border adds no spurious cross, orthonormal FFT) is computed once and
kept on the `DecodedImage`, so a reference shared by many pairs is transformed once.

Columns (dist relative to ref; 0 / 1 for identical images as noted):
    band<k>_log_ratio   log10 energy ratio dist/ref in octave band k of radial frequency (0)
    spectral_error      RMS difference of the log power spectra (0)
    hf_fraction_diff    share of AC energy above 1/8 cycle/pixel, dist minus ref (0)
    slope_diff          slope of the radially averaged log power vs log frequency, dist minus ref (0)
    phase_coherence     magnitude-weighted mean cosine of the phase differences (1)
    phase_corr_peak     height of the phase-correlation peak (1; falls with noise, blur, local warps)
    phase_corr_shift    distance of that peak from the origin in reference pixels (0; global misalignment)
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from ..io import DecodedImage, DecodedPair
from .base import EXTRACTORS, Column, ExtractorSettings, PairExtractor, scalar_columns

#: spectra are taken on the grey image block-averaged until its long side is at most this
ANALYSIS_SIDE = 1024
#: octave band edges in cycles per pixel; the last band runs to the corners of the spectrum (0.707)
BAND_EDGES = (1 / 128, 1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, np.inf)
HF_CUTOFF = 1 / 8
#: about the power 8-bit quantisation leaves in each bin of an orthonormal FFT: the variance of a uniform
#: 1/255 step, 1/(12*255^2), times the mean square (3/8)^2 of the 2-D Hann window. Power below it is not
#: signal, so spectra and band energies are compared above this floor.
NOISE_FLOOR = (3 / 8) ** 2 / (12 * 255.0**2)
SLOPE_BINS = 16


@lru_cache(maxsize=4)  # a data set has few image sizes; each grid is ~12 MB at 1024 px
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Radial frequency of every rfft2 bin, the Hann window, and each bin's weight (rfft2 stores
    columns 1..w/2-1 once for two conjugate bins)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    radius = np.sqrt(fy * fy + fx * fx)
    window = np.outer(np.hanning(h), np.hanning(w))
    weight = np.full(radius.shape, 2.0)
    weight[:, 0] = 1.0
    if w % 2 == 0:
        weight[:, -1] = 1.0
    return radius, window, weight


def _block_mean(grey: np.ndarray, side: int) -> tuple[np.ndarray, int]:
    factor = int(np.ceil(max(grey.shape) / side))
    if factor <= 1:
        return grey, 1
    h, w = (grey.shape[0] // factor) * factor, (grey.shape[1] // factor) * factor
    return grey[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3)), factor


class Spectrum(NamedTuple):
    coeffs: np.ndarray       # rfft2 of the windowed, mean-removed grey image (orthonormal)
    shape: tuple[int, int]   # the analysed grey image's shape
    factor: int              # block-average factor from the decoded image to the analysed one


def spectrum(image: DecodedImage) -> Spectrum:
    """The image's spectrum, computed once and cached on the image."""
    def compute():
        grey, factor = _block_mean(image.gray, ANALYSIS_SIDE)
        _, window, _ = _grid(*grey.shape)
        return Spectrum(np.fft.rfft2((grey - grey.mean()) * window, norm="ortho"), grey.shape, factor)

    return image.cached(("frequency.spectrum", ANALYSIS_SIDE), compute)


@EXTRACTORS.register()
class FrequencyExtractor(PairExtractor):
    name = "frequency"
    version = 1

    class Settings(ExtractorSettings):
        """No settings: the features are fixed formulas."""

    def pair_columns(self) -> list[Column]:
        bands = [Column(f"band{k}_log_ratio") for k in range(len(BAND_EDGES))]
        return bands + [Column(n) for n in ("spectral_error", "hf_fraction_diff", "slope_diff",
                                            "phase_coherence", "phase_corr_peak", "phase_corr_shift")]

    def compute_pairs(self, pairs: list[DecodedPair]) -> dict[str, np.ndarray]:
        return scalar_columns([_pair_features(p) for p in pairs], [c.name for c in self.pair_columns()])


def _pair_features(pair: DecodedPair) -> dict[str, float]:
    ref, dist = spectrum(pair.ref), spectrum(pair.dist)
    f_ref, f_dist = ref.coeffs, dist.coeffs
    radius, _, weight = _grid(*ref.shape)
    p_ref = np.abs(f_ref) ** 2
    p_dist = np.abs(f_dist) ** 2
    ac = radius > 0

    out = {}
    for k, (lower, upper) in enumerate(zip((0.0,) + BAND_EDGES[:-1], BAND_EDGES)):
        band = (radius > lower) & (radius <= upper)
        if not band.any():  # an image too small to hold this band: not measurable, not "unchanged"
            out[f"band{k}_log_ratio"] = float("nan")
            continue
        floor = NOISE_FLOOR * weight[band].sum()
        out[f"band{k}_log_ratio"] = float(np.log10((np.sum(weight[band] * p_dist[band]) + floor)
                                                   / (np.sum(weight[band] * p_ref[band]) + floor)))

    log_ratio = np.log10((p_dist[ac] + NOISE_FLOOR) / (p_ref[ac] + NOISE_FLOOR))
    out["spectral_error"] = float(np.sqrt(np.average(log_ratio**2, weights=weight[ac])))
    out["hf_fraction_diff"] = _hf_fraction(p_dist, radius, weight) - _hf_fraction(p_ref, radius, weight)
    out["slope_diff"] = _spectral_slope(p_dist, radius, weight) - _spectral_slope(p_ref, radius, weight)

    cross = f_ref * np.conj(f_dist)
    magnitudes = np.sum(weight * np.abs(cross))
    out["phase_coherence"] = float(np.sum(weight * cross.real) / magnitudes) if magnitudes > 0 else 0.0
    out["phase_corr_peak"], out["phase_corr_shift"] = _phase_correlation(cross, ref.shape, ref.factor)
    return out


def _hf_fraction(power: np.ndarray, radius: np.ndarray, weight: np.ndarray) -> float:
    total = np.sum(weight * power) - weight[0, 0] * power[0, 0]
    high = np.sum((weight * power)[radius > HF_CUTOFF])
    return float(high / total) if total > 0 else 0.0


def _spectral_slope(power: np.ndarray, radius: np.ndarray, weight: np.ndarray) -> float:
    """Least-squares slope of log10 power vs log10 frequency over log-spaced radial bins, so that the many
    high-frequency bins do not outvote the few low ones."""
    lo = 2.0 / min(power.shape[0], 2 * (power.shape[1] - 1))
    edges = np.geomspace(lo, 0.5, SLOPE_BINS + 1)
    index = np.digitize(radius, edges) - 1
    inside = (index >= 0) & (index < SLOPE_BINS)
    counts = np.bincount(index[inside], weights=weight[inside], minlength=SLOPE_BINS)
    sums = np.bincount(index[inside], weights=(weight * power)[inside], minlength=SLOPE_BINS)
    used = counts > 0
    x = np.log10(np.sqrt(edges[:-1] * edges[1:])[used])
    y = np.log10(sums[used] / counts[used] + NOISE_FLOOR)
    return float(np.polyfit(x, y, 1)[0])


def _phase_correlation(cross: np.ndarray, shape: tuple[int, int], factor: int) -> tuple[float, float]:
    magnitude = np.abs(cross)
    if not np.any(magnitude > 0):
        return 0.0, 0.0
    normalised = np.divide(cross, magnitude, out=np.zeros_like(cross), where=magnitude > 0)
    surface = np.fft.irfft2(normalised, s=shape)
    # irfft2 of a unit-magnitude spectrum peaks at 1 for a pure shift (numpy's 1/N inverse normalisation)
    peak = np.unravel_index(np.argmax(surface), shape)
    dy = min(peak[0], shape[0] - peak[0])
    dx = min(peak[1], shape[1] - peak[1])
    return float(surface[peak]), float(np.hypot(dy, dx) * factor)
