"""The `frequency` and `colour` pair extractors: schema, neutral values for identical images, the direction
each column moves for a degradation whose effect is known, and per-image caching of the shared work."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import photo
from PIL import Image, ImageFilter

from featurestore.extractors import create
from featurestore.extractors.base import check_columns
from featurestore.io import DecodedImage, DecodedPair

NEUTRAL_ONE = {"phase_coherence", "phase_corr_peak", "hist_intersection_l", "hist_intersection_ab"}


def image(rgb: np.ndarray, tag: str) -> DecodedImage:
    return DecodedImage(sha256=tag, rgb=np.ascontiguousarray(rgb, dtype=np.uint8))


def pair(ref: np.ndarray, dist: np.ndarray, tag: str) -> DecodedPair:
    return DecodedPair(tag, image(ref, f"{tag}-ref"), image(dist, f"{tag}-dist"))


def run(name: str, pairs: list[DecodedPair]) -> list[dict[str, float]]:
    ex = create(name)
    values = ex.compute_pairs(pairs)
    check_columns(ex, ex.pair_columns(), values, len(pairs))
    assert all(v.dtype == np.float64 for v in values.values())
    return [{k: float(v[i]) for k, v in values.items()} for i in range(len(pairs))]


@pytest.fixture(scope="module")
def ref() -> np.ndarray:
    return photo("astronaut", 256)  # 256x192


def blurred(rgb, radius):
    return np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(radius)))


def noisy(rgb, sigma):
    return np.clip(rgb + np.random.default_rng(0).normal(0, sigma, rgb.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", ["frequency", "colour"])
def test_identical_images_give_neutral_values(name, ref):
    (same,) = run(name, [pair(ref, ref.copy(), "same")])
    for column, value in same.items():
        assert value == pytest.approx(1.0 if column in NEUTRAL_ONE else 0.0, abs=1e-6), column


def test_frequency_blur_removes_and_noise_adds_high_frequencies(ref):
    blur, noise = run("frequency", [pair(ref, blurred(ref, 2), "blur"), pair(ref, noisy(ref, 12), "noise")])
    assert blur["band6_log_ratio"] < blur["band5_log_ratio"] < -0.3 < blur["band1_log_ratio"]
    assert blur["hf_fraction_diff"] < 0 and blur["slope_diff"] < 0
    assert noise["band6_log_ratio"] > max(noise[f"band{k}_log_ratio"] for k in range(6))
    assert noise["band6_log_ratio"] > 0.05 and noise["hf_fraction_diff"] > 0 and noise["slope_diff"] > 0
    for v in (blur, noise):
        assert v["spectral_error"] > 0.1 and v["phase_corr_peak"] < 0.9 and v["phase_coherence"] < 1


def test_frequency_shift_moves_phase_not_magnitude():
    """A shifted view of the same scene: phase correlation finds the offset, band energies barely move."""
    big = photo("coffee", 300)
    ref, dist = big[10:200, 10:270], big[13:203, 15:275]  # dist is ref moved 3 down, 5 right
    (shift,) = run("frequency", [pair(ref, dist, "shift")])
    assert shift["phase_corr_shift"] == pytest.approx(np.hypot(3, 5), abs=0.5)
    assert shift["phase_corr_peak"] > 0.2
    assert max(abs(shift[f"band{k}_log_ratio"]) for k in range(1, 7)) < 0.15


def test_frequency_large_image_is_block_averaged_and_shift_reported_in_image_pixels():
    big = np.asarray(Image.fromarray(photo("coffee", 600)).resize((2400, 1600), Image.BILINEAR))
    ref, dist = big[0:1500, 0:2200], big[8:1508, 0:2200]  # 8 pixels down
    (v,) = run("frequency", [pair(ref, dist, "big")])
    assert v["phase_corr_shift"] == pytest.approx(8.0, abs=3.0)  # block factor 3: shifts come in steps of 3


def test_frequency_band_too_low_for_a_tiny_image_is_nan():
    small = photo("astronaut", 64)  # 64x48: its lowest frequency, 1/64, lies above band 0 (<= 1/128)
    (v,) = run("frequency", [pair(small, blurred(small, 1), "tiny")])
    assert np.isnan(v["band0_log_ratio"])
    assert all(np.isfinite(x) for k, x in v.items() if k != "band0_log_ratio")


@pytest.mark.parametrize(("name", "transform"), [("frequency", "numpy.fft.rfft2"), ("colour", "skimage.color.rgb2lab")])
def test_a_shared_reference_is_transformed_once(name, transform, ref, monkeypatch):
    import importlib

    module_name, attr = transform.rsplit(".", 1)
    module = importlib.import_module(module_name)
    real = getattr(module, attr)
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, attr, counting)
    shared = image(ref, "shared-ref")
    pairs = [DecodedPair(f"p{i}", shared, image(noisy(ref, 5 + i), f"d{i}")) for i in range(3)]
    create(name).compute_pairs(pairs)
    assert len(calls) == 4  # the reference once, each degraded image once
    create(name).compute_pairs(pairs[:1])
    assert len(calls) == 4  # a second extractor instance reuses what the images carry


def test_colour_desaturation_brightening_and_hue_rotation(ref):
    grey = np.repeat(np.asarray(Image.fromarray(ref).convert("L"))[..., None], 3, axis=-1)
    bright = np.clip(ref.astype(int) + 40, 0, 255).astype(np.uint8)
    rotated = ref[..., [2, 0, 1]]  # R<-B, G<-R, B<-G: every hue turns by about 120 degrees
    g, b, r = run("colour", [pair(ref, grey, "grey"), pair(ref, bright, "bright"), pair(ref, rotated, "rot")])
    assert g["saturation_diff"] < -0.1 and g["colourfulness_log_ratio"] < -2
    assert g["std_log_ratio_a"] < -1 and g["std_log_ratio_b"] < -1 and g["hist_intersection_ab"] < 0.5
    assert b["mean_diff_l"] > 10 and b["hist_emd_l"] > 10 and b["delta_e2000"] > 5
    assert abs(b["hue_shift"]) < 10
    assert r["hue_shift"] > 60 and r["hist_emd_a"] + r["hist_emd_b"] > 5
    assert min(v["delta_e76"] for v in (g, b, r)) > 1


def test_colour_large_image_is_sampled():
    big = np.asarray(Image.fromarray(photo("coffee", 400)).resize((1800, 1200), Image.BILINEAR))
    (v,) = run("colour", [pair(big, noisy(big, 10), "big")])
    assert all(np.isfinite(x) for x in v.values())
    assert 0 < v["delta_e76"] < 20
