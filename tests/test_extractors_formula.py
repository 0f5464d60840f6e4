"""The `formula` extractor: schema, perfect scores for identical images, worse for degraded ones, agreement
with pyiqa's own per-metric path, and NaN (never a crash) for a pair a metric cannot handle."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import photo
from PIL import Image, ImageFilter

from featurestore.extractors import create
from featurestore.extractors.base import check_columns
from featurestore.extractors.formula import DEFAULT_METRICS, FormulaExtractor
from featurestore.io import DecodedImage, DecodedPair

LOWER_BETTER = {"gmsd", "nlpd", "mad"}


def image(rgb: np.ndarray, tag: str) -> DecodedImage:
    return DecodedImage(sha256=tag, rgb=np.ascontiguousarray(rgb, dtype=np.uint8))


def noisy(rgb: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, rgb.shape)
    return np.clip(rgb + noise, 0, 255).astype(np.uint8)


def blurred(rgb: np.ndarray, radius: float) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(radius)))


@pytest.fixture(scope="module")
def extractor() -> FormulaExtractor:
    return create("formula")


@pytest.fixture(scope="module")
def pairs() -> list[DecodedPair]:
    """256x192 (big enough for MS-SSIM's five scales): identical, light noise, heavy noise, blur."""
    ref = image(photo("astronaut", 256), "ref")
    rgb = ref.rgb
    return [
        DecodedPair("same", ref, image(rgb.copy(), "same")),
        DecodedPair("noise8", ref, image(noisy(rgb, 8), "noise8")),
        DecodedPair("noise30", ref, image(noisy(rgb, 30), "noise30")),
        DecodedPair("blur", ref, image(blurred(rgb, 2.5), "blur")),
    ]


@pytest.fixture(scope="module")
def values(extractor, pairs) -> dict[str, np.ndarray]:
    return extractor.compute_pairs(pairs)


def test_schema(extractor, values, pairs):
    assert [c.name for c in extractor.pair_columns()] == DEFAULT_METRICS
    assert "mad" not in DEFAULT_METRICS
    check_columns(extractor, extractor.pair_columns(), values, len(pairs))
    assert all(v.dtype == np.float64 for v in values.values())


def test_identical_images_score_perfectly(values):
    same = {m: v[0] for m, v in values.items()}
    for m in ("ssim", "ms_ssim", "fsim", "vsi", "vif", "cw_ssim"):
        assert same[m] == pytest.approx(1.0, abs=1e-5), m  # vif's float32 GSM fit gives 0.9999987
    for m in ("gmsd", "nlpd"):
        assert same[m] == pytest.approx(0.0, abs=1e-6), m
    assert same["psnr"] > 70  # 10*log10(1/eps): pyiqa's mse guard, no infinity


def test_degradation_scores_worse_the_stronger_it_is(values):
    for m, v in values.items():
        signed = -v if m in LOWER_BETTER else v  # higher = better for every metric
        same, light, heavy, blur = signed
        assert same > light > heavy, (m, v)
        assert blur < same, (m, v)


def test_values_match_pyiqa_one_metric_and_pair_at_a_time(values, pairs):
    """The shortcuts (one batch, shared Y, separable SSIM window, ssim from ms_ssim's first scale) must not
    move the values: pyiqa's own path, metric by metric and pair by pair, gives the same numbers."""
    import pyiqa

    # float32 metrics sum in another order in a batch than alone (~1e-7 relative); vif's float32
    # Gaussian-scale-mixture fit (pinverse, eigh) moves ~2e-5 with the other images in its batch
    rel = {"vif": 1e-4}
    for m in DEFAULT_METRICS:
        metric = pyiqa.create_metric(m, device="cpu")
        for i, p in enumerate(pairs[1:], start=1):
            expect = metric(p.dist.tensor, p.ref.tensor).item()
            assert values[m][i] == pytest.approx(expect, rel=rel.get(m, 1e-5), abs=1e-6), (m, p.pair_id)


def test_small_pair_gets_nan_for_the_metric_that_cannot_run(extractor, caplog):
    """MS-SSIM's five scales need >= 176 pixels a side: on a 48x36 pair it is NaN (an INFO line, not a
    warning per pair: small images are a known case, not an error), the others still run."""
    small = photo("coffee", 48)
    pair = DecodedPair("small", image(small, "s-ref"), image(noisy(small, 10), "s-dist"))
    with caplog.at_level(logging.INFO, logger="featurestore.extractors.formula"):
        out = extractor.compute_pairs([pair])
    assert np.isnan(out["ms_ssim"][0])
    assert "ms_ssim undefined for a 36 px short side (needs 176)" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "ms_ssim" in r.getMessage()]
    assert np.isfinite(out["ssim"][0]) and np.isfinite(out["psnr"][0])


def test_one_bad_pair_in_a_batch_leaves_the_others_alone(extractor, monkeypatch, caplog):
    """A metric raising on a batch is retried pair by pair: only the pair at fault becomes NaN.
    (64x48 pairs: small enough to share a batch on the CPU.)"""
    from featurestore.extractors import formula

    small = photo("astronaut", 64)
    ref = image(small, "b-ref")
    good = [DecodedPair(f"n{s}", ref, image(noisy(small, s), f"n{s}")) for s in (5, 20)]
    black = DecodedPair("black", ref, image(np.zeros_like(small), "black"))
    alone = extractor.compute_pairs(good)
    real = formula._SCORERS["psnr"]
    batches = []

    def fails_on_black(batch, nets):
        batches.append(len(batch.dist))
        if (batch.dist.amax(dim=(1, 2, 3)) == 0).any():
            raise ValueError("black image")
        return real(batch, nets)

    monkeypatch.setitem(formula._SCORERS, "psnr", fails_on_black)
    with caplog.at_level(logging.WARNING, logger="featurestore.extractors.formula"):
        out = extractor.compute_pairs([good[0], black, good[1]])
    assert batches[0] == 3  # tried as one batch first
    assert np.isnan(out["psnr"][1])
    assert out["psnr"][[0, 2]] == pytest.approx(alone["psnr"], rel=1e-6)
    assert np.isfinite(out["ssim"]).all()
    assert "psnr failed on pair black" in caplog.text


def test_mixed_sizes_come_back_in_input_order(extractor, pairs, values):
    small = photo("coffee", 64)
    odd = DecodedPair("odd", image(small, "o-ref"), image(blurred(small, 1.5), "o-dist"))
    out = extractor.compute_pairs([pairs[1], odd, pairs[3]])
    assert out["psnr"][[0, 2]] == pytest.approx(values["psnr"][[1, 3]], rel=1e-6)
    assert np.isfinite(out["psnr"][1]) and out["psnr"][1] != out["psnr"][0]


def test_config():
    with pytest.raises(ValueError, match=r"metrics\[1\] = 'nonsense': Input should be 'psnr', 'ssim'"):
        FormulaExtractor(metrics=["psnr", "nonsense"])
    mad = FormulaExtractor(metrics=["psnr", "mad"])
    assert [c.name for c in mad.pair_columns()] == ["psnr", "mad"]
    assert mad.folder != FormulaExtractor().folder
    # where the metrics run does not change what is stored
    assert FormulaExtractor(device="cuda").folder == FormulaExtractor().folder


def test_mad_runs_when_asked_for():
    small = photo("astronaut", 64)
    pair = DecodedPair("p", image(small, "m-ref"), image(noisy(small, 20), "m-dist"))
    same = DecodedPair("s", image(small, "m-ref"), image(small.copy(), "m-same"))
    out = FormulaExtractor(metrics=["mad"]).compute_pairs([same, pair])["mad"]
    assert out[0] == pytest.approx(0.0, abs=1e-6) and out[1] > out[0]



def test_formula_frequency_and_colour_through_the_store(tmp_path, seiqa_dir):
    """The three extractors as `siqa features` runs them: stored once, cached on the second run, and read
    back through the `features` view with the documented column names (noisier pairs score worse)."""
    from featurestore.datasets import load_pairs
    from featurestore.sql import query
    from featurestore.store import FeatureStore

    table = load_pairs(seiqa_dir)
    extractors = [create("formula", metrics=["psnr", "ssim", "gmsd"]), create("frequency"), create("colour")]
    store = FeatureStore(tmp_path / "store")
    first = store.extract(table, extractors, progress=False)
    assert not first.failures
    assert {first.computed[f"{e.name}/pair"] for e in extractors} == {len(table)}
    again = store.extract(table, extractors, progress=False)
    assert not again.computed

    df = query(store.root, "SELECT name, label, formula_psnr, formula_ssim, formula_gmsd, frequency_spectral_error, "
                           "frequency_band6_log_ratio, colour_delta_e2000 FROM features WHERE label IS NOT NULL")
    assert len(df) == 6 and df.drop(columns="name").notna().all().all()
    # the fixture's label falls as its noise grows: every column must follow it
    for column, sign in (("formula_psnr", 1), ("formula_ssim", 1), ("formula_gmsd", -1),
                         ("frequency_spectral_error", -1), ("frequency_band6_log_ratio", -1),
                         ("colour_delta_e2000", -1)):
        assert (sign * df[column]).corr(df.label, method="spearman") > 0.8, column
