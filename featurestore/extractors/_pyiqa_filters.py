"""The size-only pieces of pyiqa's formula metrics (grids, filter banks, constants, default options), as pyiqa
0.1.16 builds them, for `_formula_metrics`.

They are restated here, not imported, because the pyiqa modules that hold them (`archs.func_util`,
`archs.fsim_arch`, `archs.vsi_arch`, `archs.nlpd_arch`, `matlab_utils`) import `pyiqa.matlab_utils`, which
imports scipy.special: 0.2-0.35 s of a cold run of five pairs, for a factorial. Each piece is pyiqa's code
with its dtypes and operation order, so the values are the same bits; `tests/test_extractors_formula.py`
compares every one with pyiqa's own (`test_filters_match_pyiqa`), so a pyiqa upgrade that changes one fails
there. pyiqa (PolyForm-Noncommercial-1.0.0) took FSIM and VSI from piq (Apache-2.0) and the MATLAB helpers
from MATLAB's documented behaviour.
"""
from __future__ import annotations

import math

import numpy as np
import torch

#: pyiqa's `FSIM()` defaults (`fsim_arch.fsim`); `chromatic` is FSIMc
FSIM_OPTIONS = {"chromatic": True, "scales": 4, "orientations": 4, "min_length": 6, "mult": 2, "sigma_f": 0.55,
                "delta_theta": 1.2, "k": 2.0}
#: pyiqa's `VSI()` defaults (`vsi_arch.vsi`)
VSI_OPTIONS = {"c1": 1.27, "c2": 386.0, "c3": 130.0, "alpha": 0.4, "beta": 0.02, "data_range": 1.0,
               "omega_0": 0.021, "sigma_f": 1.34, "sigma_d": 145.0, "sigma_c": 0.001}
#: `func_util.EPS`, added to every similarity map's denominator whatever the dtype
FLOAT32_EPS = torch.finfo(torch.float32).eps


def meshgrid(size: tuple[int, int]):
    """`func_util.get_meshgrid`: frequency coordinates centred on zero, float32."""
    def axis(n):
        if n % 2:
            return torch.arange(-(n - 1) / 2, n / 2) / (n - 1)
        return torch.arange(-n / 2, n / 2) / n

    return torch.meshgrid(axis(size[0]), axis(size[1]), indexing="ij")


def ifftshift(x: torch.Tensor) -> torch.Tensor:
    """`func_util.ifftshift` (over every dimension)."""
    shift = [-(ax // 2) for ax in x.size()]
    return torch.roll(x, shift, tuple(range(len(shift))))


def similarity_map(map_x, map_y, constant: float):
    """`func_util.similarity_map` with alpha = 0 (its `- 0 * x * y` terms subtract an exact zero)."""
    return (2.0 * map_x * map_y + constant) / (map_x**2 + map_y**2 + constant + FLOAT32_EPS)


def scharr_kernels() -> torch.Tensor:
    """The Scharr x and y kernels of FSIM's and VSI's gradient maps, (2, 1, 3, 3) float32."""
    scharr = torch.tensor([[[-3.0, 0.0, 3.0], [-10.0, 0.0, 10.0], [-3.0, 0.0, 3.0]]]) / 16
    return torch.stack([scharr, scharr.transpose(-1, -2)])


def fsim_filters(h: int, w: int, scales: int, orientations: int, min_length, mult, sigma_f, delta_theta):
    """`fsim_arch._construct_filters` (with its low-pass): (1, orientations * scales, h, w) float32."""
    theta_sigma = math.pi / (orientations * delta_theta)
    grid_x, grid_y = meshgrid((h, w))
    radius = torch.sqrt(grid_x**2 + grid_y**2)
    theta = torch.atan2(-grid_y, grid_x)
    radius = ifftshift(radius)
    theta = ifftshift(theta)
    radius[0, 0] = 1
    sintheta = torch.sin(theta)
    costheta = torch.cos(theta)
    lp = ifftshift(1.0 / (1.0 + (torch.sqrt(grid_x**2 + grid_y**2) / 0.45) ** (2 * 15)))  # `_lowpassfilter`
    log_gabor = []
    for s in range(scales):
        omega_0 = 1.0 / (min_length * mult**s)
        gabor_filter = torch.exp((-(torch.log(radius / omega_0) ** 2)) / (2 * math.log(sigma_f) ** 2))
        gabor_filter = gabor_filter * lp
        gabor_filter[0, 0] = 0
        log_gabor.append(gabor_filter)
    spread = []
    for o in range(orientations):
        angl = o * math.pi / orientations
        ds = sintheta * math.cos(angl) - costheta * math.sin(angl)
        dc = costheta * math.cos(angl) + sintheta * math.sin(angl)
        dtheta = torch.abs(torch.atan2(ds, dc))
        spread.append(torch.exp((-(dtheta**2)) / (2 * theta_sigma**2)))
    spread = torch.stack(spread)
    log_gabor = torch.stack(log_gabor)
    return (spread.repeat_interleave(scales, dim=0) * log_gabor.repeat(orientations, 1, 1)).unsqueeze(0)


def log_gabor(size: tuple[int, int], omega_0: float, sigma_f: float) -> torch.Tensor:
    """`vsi_arch._log_gabor`, float32."""
    xx, yy = meshgrid(size)
    radius = (xx**2 + yy**2).sqrt()
    mask = radius <= 0.5
    r = radius * mask
    r = ifftshift(r)
    r[0, 0] = 1
    lg = torch.exp((-(r / omega_0).log().pow(2)) / (2 * sigma_f**2))
    lg[0, 0] = 0
    return lg


# NLPD (`nlpd_arch`): the pyramid filter, and the divisive normalisation's filters and constants per level
NLPD_LEVELS = 6
LAPLACIAN_FILTER = np.array([[0.0025, 0.0125, 0.0200, 0.0125, 0.0025],
                             [0.0125, 0.0625, 0.1000, 0.0625, 0.0125],
                             [0.0200, 0.1000, 0.1600, 0.1000, 0.0200],
                             [0.0125, 0.0625, 0.1000, 0.0625, 0.0125],
                             [0.0025, 0.0125, 0.0200, 0.0125, 0.0025]], dtype=np.float32)
NLPD_SIGMAS = [0.0248, 0.0185, 0.0179, 0.0191, 0.0220, 0.2782]
NLPD_DN_FILTERS = [[[0, 0.1011, 0], [0.1493, 0, 0.1460], [0, 0.1015, 0.0]],
                   [[0, 0.0757, 0], [0.1986, 0, 0.1846], [0, 0.0837, 0]],
                   [[0, 0.0477, 0], [0.2138, 0, 0.2243], [0, 0.0467, 0]],
                   [[0, 0, 0], [0.2503, 0, 0.2616], [0, 0, 0]],
                   [[0, 0, 0], [0.2598, 0, 0.2552], [0, 0, 0]],
                   [[0, 0, 0], [0.2215, 0, 0.0717], [0, 0, 0]]]


def symmetric_pad(im: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    """`matlab_utils.padding.symm_pad`: MATLAB's 'symmetric' padding (the edge pixel repeated). A pad no wider than
    the image is its mirrored edge strips copied into place (NLPD's 2 px of a 512x384 pair: 0.18 ms, where pyiqa's
    gather through a grid of indices, kept for wider pads, took 1.5 ms); the same values."""
    h, w = im.shape[-2:]
    if max(left, right) <= w and max(top, bottom) <= h:
        out = im.new_empty(*im.shape[:-2], top + h + bottom, left + w + right)
        out[..., top:top + h, left:left + w] = im
        out[..., top:top + h, :left] = im[..., :left].flip(-1)
        out[..., top:top + h, left + w:] = im[..., w - right:].flip(-1)
        out[..., :top, :] = out[..., top:2 * top, :].flip(-2)
        out[..., top + h:, :] = out[..., top + h - bottom:top + h, :].flip(-2)
        return out

    def reflect(x, minx, maxx):
        rng = maxx - minx
        double_rng = 2 * rng
        mod = np.fmod(x - minx, double_rng)
        normed_mod = np.where(mod < 0, mod + double_rng, mod)
        return np.array(np.where(normed_mod >= rng, double_rng - normed_mod, normed_mod) + minx, dtype=x.dtype)

    x_pad = reflect(np.arange(-left, w + right), -0.5, w - 0.5)
    y_pad = reflect(np.arange(-top, h + bottom), -0.5, h - 0.5)
    xx, yy = np.meshgrid(x_pad, y_pad)
    return im[..., yy, xx]


# CW-SSIM (`matlab_utils.math_util`, `matlab_utils.functions.fspecial`): the steerable pyramid's tables
def prepare_grid(m: int, n: int):
    """`math_util.prepare_grid`: log2 radius and angle of an m x n frequency grid (float64)."""
    x = np.linspace(-(m // 2) / (m / 2), (m // 2) / (m / 2) - (1 - m % 2) * 2 / m, num=m)
    y = np.linspace(-(n // 2) / (n / 2), (n // 2) / (n / 2) - (1 - n % 2) * 2 / n, num=n)
    xv, yv = np.meshgrid(y, x)
    angle = np.arctan2(yv, xv)
    rad = np.sqrt(xv**2 + yv**2)
    rad[m // 2][n // 2] = rad[m // 2][n // 2 - 1]
    return np.log2(rad), angle


def rcos_fn(width, position):
    """`math_util.rcosFn`: a raised-cosine lookup table (X, Y)."""
    n = 256
    x = np.pi * np.array(range(-n - 1, 2)) / 2 / n
    y = np.cos(x) ** 2
    y[0] = y[1]
    y[n + 2] = y[n + 1]
    return position + 2 * width / np.pi * (x + np.pi / 4), y


def point_op(im: np.ndarray, y, x) -> np.ndarray:
    """`math_util.pointOp`: the table (x, y) looked up at every value of im (linear interpolation)."""
    return np.reshape(np.interp(im.flatten(), x, y), im.shape)


def fspecial_gaussian(shape: tuple[int, int], sigma: float) -> torch.Tensor:
    """`functions.fspecial(shape, sigma, 1)`: MATLAB's normalised Gaussian window, (1, 1, h, w) float32."""
    m, n = [(ss - 1.0) / 2.0 for ss in shape]
    y, x = np.ogrid[-m:m + 1, -n:n + 1]
    h = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    h[h < np.finfo(h.dtype).eps * h.max()] = 0
    sumh = h.sum()
    if sumh != 0:
        h /= sumh
    return torch.from_numpy(h).float().repeat(1, 1, 1, 1)
