"""The `formula` extractor: schema, perfect scores for identical images, worse for degraded ones, agreement
with pyiqa's own per-metric path, and NaN (never a crash) for a pair a metric cannot handle."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import fresh_python, photo
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


def test_pieces_on_several_threads_give_the_values_of_one(pairs, monkeypatch):
    """A thread budget (the store's LocalExecutor sets it) runs batch x metric pieces side by side, torch on one
    thread in each: the same bits as one after another, and the work really spreads."""
    import threading

    from featurestore.extractors import formula
    from featurestore.threads import threads_at_most

    mixed = pairs + [DecodedPair("small", image(pairs[0].ref.rgb[:40, :60], "r"), image(pairs[1].dist.rgb[:40, :60], "d"))]
    extractor = FormulaExtractor(device="cpu")
    with threads_at_most(1, budget=1):
        one = extractor.compute_pairs(mixed)
    threads, real = set(), formula.kernels.vif

    def vif(x, y):
        threads.add(threading.get_ident())
        time.sleep(0.05)  # long enough that another thread takes the next piece
        return real(x, y)

    monkeypatch.setattr(formula.kernels, "vif", vif)
    with threads_at_most(1, budget=3):
        three = extractor.compute_pairs(mixed)
    assert len(threads) > 1
    for m in DEFAULT_METRICS:
        np.testing.assert_array_equal(three[m], one[m], err_msg=m)


def test_threads_of_a_fresh_process_do_not_import_pyiqa_at_once():
    """The first pieces of a process import pyiqa's modules; two threads doing that at once met pyiqa's circular
    imports half done and stored NaN for vsi and vif (an ImportError per pair): they are imported before the
    threads start."""
    code = (
        "import numpy as np\n"
        "from featurestore.extractors.formula import FormulaExtractor\n"
        "from featurestore.io import DecodedImage, DecodedPair\n"
        "from featurestore.threads import threads_at_most\n"
        "rng = np.random.default_rng(0)\n"
        "im = lambda: DecodedImage(sha256='x', rgb=rng.integers(0, 256, (192, 256, 3), dtype=np.uint8))\n"
        "with threads_at_most(1, budget=2):\n"
        "    out = FormulaExtractor(device='cpu').compute_pairs([DecodedPair('a', im(), im()), DecodedPair('b', im(), im())])\n"
        "print(sorted(m for m, v in out.items() if np.isnan(v).any()))\n")
    assert fresh_python(code).splitlines()[-1] == "[]"


def test_the_pyiqa_modules_imported_first_are_all_the_kernels_take():
    import ast

    from featurestore.extractors import _formula_metrics as kernels

    tree = ast.parse(Path(kernels.__file__).read_text())
    taken = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
             and node.module.startswith("pyiqa")}
    assert taken and taken == set(kernels.PYIQA_MODULES)


def test_luma_is_pyiqas_to_y_channel(pairs):
    """The Y row computed alone: pyiqa's values (the same bits where its product rounds as this CPU's MKL does;
    elsewhere within float rounding, which the rounding to 0..255 levels may turn into one level)."""
    import torch
    from pyiqa.utils.color_util import to_y_channel

    from featurestore.extractors.formula import _PairBatch

    batch = _PairBatch(pairs, "cpu")
    with torch.inference_mode():
        for ours, scale, rgb in ((batch.luma_unit, 1.0, batch.both), (batch.luma, 255, batch.both),
                                 (batch.luma64, 255, batch.both.double())):
            theirs = to_y_channel(rgb, scale, "yiq")
            assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
            if scale == 1.0:
                torch.testing.assert_close(ours, theirs, rtol=2e-7, atol=0)
            else:
                assert ((ours - theirs).abs() <= 1).all() and (ours != theirs).float().mean() < 1e-4


def test_blocks_in_the_caches_give_the_values_of_the_whole_batch(pairs, monkeypatch):
    """SSIM's maps and FSIM's phase congruency go through a CPU in blocks and through a GPU whole: the whole-batch
    path (run here on the CPU) gives the same bits."""
    from featurestore.extractors import _formula_metrics as kernels

    mixed = pairs + [DecodedPair("odd", image(pairs[0].ref.rgb[:181, :203], "r"), image(pairs[2].dist.rgb[:181, :203], "d"))]
    extractor = FormulaExtractor(device="cpu", metrics=["ssim", "ms_ssim", "fsim"])
    blocked = extractor.compute_pairs(mixed)
    asked = []
    monkeypatch.setattr(kernels, "in_blocks", lambda x: asked.append(x.shape) or False)
    whole = extractor.compute_pairs(mixed)
    assert len(asked) >= 2 * 5 + 2  # every SSIM level and every FSIM call of both sizes took the whole path
    for m in blocked:
        np.testing.assert_array_equal(whole[m], blocked[m], err_msg=m)


def test_metrics_sharing_work_are_one_piece_the_dearest_first():
    from featurestore.extractors.formula import _metric_groups

    assert _metric_groups(["psnr", "ms_ssim", "vif", "ssim"]) == [("vif",), ("ssim", "ms_ssim"), ("psnr",)]
    assert _metric_groups(["ms_ssim", "gmsd"]) == [("ms_ssim",), ("gmsd",)]


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
    import torch

    with pytest.raises(ValueError, match=r"metrics\[1\] = 'nonsense': Input should be 'psnr', 'ssim'"):
        FormulaExtractor(metrics=["psnr", "nonsense"])
    mad = FormulaExtractor(metrics=["psnr", "mad"])
    assert [c.name for c in mad.pair_columns()] == ["psnr", "mad"]
    assert mad.folder != FormulaExtractor().folder
    # where the metrics run does not change what is stored; by default, on the GPU when there is one
    assert FormulaExtractor(device="cuda").folder == FormulaExtractor().folder == FormulaExtractor(device="cpu").folder
    assert FormulaExtractor().config["device"] == "auto"
    assert FormulaExtractor().device.type == ("cuda" if torch.cuda.is_available() else "cpu")


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


def odd_pairs() -> list[DecodedPair]:
    """245x183 (odd both ways: the pyramids' crops and the 2x2 averaging's padding), three distortions of one
    reference."""
    rgb = photo("coffee", 245)[:183]
    ref = image(rgb, "odd-ref")
    return [DecodedPair("odd-noise", ref, image(noisy(rgb, 12, seed=1), "odd-noise")),
            DecodedPair("odd-blur", ref, image(blurred(rgb, 1.5), "odd-blur")),
            DecodedPair("odd-both", ref, image(noisy(blurred(rgb, 1.0), 6, seed=2), "odd-both"))]


def test_batched_odd_size_matches_pyiqa_pair_by_pair(monkeypatch):
    """Several pairs in one batch (as on a GPU, or any device with a large `BATCH_PIXELS`) at an odd size:
    every metric as pyiqa computes each pair alone, to the tolerances above."""
    import pyiqa

    from featurestore.extractors import formula

    pairs = odd_pairs()
    monkeypatch.setitem(formula.BATCH_PIXELS, "cpu", 10**9)
    assert formula._size_batches(pairs, formula.BATCH_PIXELS["cpu"]) == [[0, 1, 2]]
    values = FormulaExtractor().compute_pairs(pairs)
    rel = {"vif": 1e-4}
    for m in DEFAULT_METRICS:
        metric = pyiqa.create_metric(m, device="cpu")
        for i, p in enumerate(pairs):
            expect = metric(p.dist.tensor, p.ref.tensor).item()
            assert values[m][i] == pytest.approx(expect, rel=rel.get(m, 1e-5), abs=1e-6), (m, p.pair_id)


def test_filter_banks_per_size_do_not_leak(pairs, monkeypatch):
    """The filter banks cached per image size (FSIM, VSI, CW-SSIM, ...): two sizes in one run give each size's
    values alone, bit for bit, and so does a cache that keeps one size only (rebuilt at every switch)."""
    from featurestore.extractors import _formula_metrics as kernels

    mixed = [pairs[1], *odd_pairs()[:1], pairs[3]]
    kernels.clear_cache()
    together = FormulaExtractor().compute_pairs(mixed)
    alone = []
    for p in mixed:
        kernels.clear_cache()
        alone.append(FormulaExtractor().compute_pairs([p]))
    monkeypatch.setattr(kernels, "PER_SIZE_CACHE", 1)
    kernels.clear_cache()
    evicting = FormulaExtractor().compute_pairs(mixed[:2]), FormulaExtractor().compute_pairs(mixed[1:])
    for m in DEFAULT_METRICS:
        by_itself = np.array([a[m][0] for a in alone])
        np.testing.assert_array_equal(together[m], by_itself, err_msg=m)
        np.testing.assert_array_equal(np.r_[evicting[0][m], evicting[1][m][1:]], by_itself, err_msg=m)
    assert len(kernels._cache) <= 1


@pytest.mark.parametrize("n", [1, 2, 5])
def test_filter_each_is_conv2d(n):
    """The depthwise layout computes what `F.conv2d` does for every image and filter (strides, padding)."""
    import torch
    import torch.nn.functional as F

    from featurestore.extractors._formula_metrics import filter_each

    gen = torch.Generator().manual_seed(n)
    images = torch.rand(n, 1, 37, 52, generator=gen) * 255
    for k, size, stride, padding in ((1, 5, 1, 0), (2, 7, 1, 0), (1, 5, 2, 0), (2, 3, 1, 1), (3, 9, 3, 2)):
        weights = torch.randn(k, 1, size, size, generator=gen)
        got = filter_each(images, weights, stride=stride, padding=padding)
        torch.testing.assert_close(got, F.conv2d(images, weights, stride=stride, padding=padding), rtol=1e-5, atol=1e-4)
        assert got.is_contiguous()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_avg_pool_is_torchs_bit_for_bit(dtype):
    """The strided-view pooling sums each window as torch's CPU kernel does: FSIM and VSI keep pyiqa's bits."""
    import torch
    import torch.nn.functional as F

    from featurestore.extractors._formula_metrics import avg_pool

    gen = torch.Generator().manual_seed(0)
    for shape, k in (((2, 3, 384, 512), 2), ((1, 3, 37, 52), 2), ((2, 1, 41, 50), 3), ((1, 2, 64, 66), 4), ((1, 1, 9, 9), 1)):
        x = torch.randn(*shape, generator=gen, dtype=getattr(torch, dtype)) * 100
        assert torch.equal(avg_pool(x, k), F.avg_pool2d(x, k)), (shape, k)


@pytest.mark.parametrize("dtype", [None, "float64"])
def test_replicate_pad_is_torchs_pad_of_the_converted_images(dtype):
    """`replicate_pad` (VSI's padding before its block averages) is `F.pad(x.to(dtype), pad, "replicate")`, for
    pads on every side, on some sides and on none."""
    import torch
    import torch.nn.functional as F

    from featurestore.extractors._formula_metrics import replicate_pad

    gen = torch.Generator().manual_seed(0)
    to = getattr(torch, dtype) if dtype else None
    for shape, pad in (((2, 3, 384, 512), (1, 0, 1, 0)), ((1, 1, 37, 52), (2, 1, 2, 1)), ((2, 2, 9, 11), (0, 3, 1, 0)),
                       ((1, 3, 8, 8), (0, 0, 0, 0)), ((3, 5, 6), (1, 1, 1, 1))):
        x = torch.rand(*shape, generator=gen)
        got = replicate_pad(x, pad, to)
        assert got.dtype == (to or x.dtype)
        assert torch.equal(got, F.pad(x.to(to or x.dtype), pad, mode="replicate")), (shape, pad)


def test_joined_is_cat_and_a_view_only_of_adjacent_halves():
    """`joined(x, y)` is `torch.cat([x, y])`; a view only where y follows x in one tensor (a batch's halves)."""
    import torch

    from featurestore.extractors._formula_metrics import joined

    both = torch.rand(4, 1, 5, 6, generator=torch.Generator().manual_seed(0))
    view = joined(both[:2], both[2:])
    assert torch.equal(view, both) and view.data_ptr() == both.data_ptr()
    for x, y in ((both[2:], both[:2]), (both[:1], both[2:]), (both[:2], both[2:].clone()),
                 (both[:2, :, :, :3], both[2:, :, :, :3]), (both[:2], both[2:].double())):
        got = joined(x, y)
        assert torch.equal(got, torch.cat([x, y])) and got.data_ptr() not in (x.data_ptr(), y.data_ptr())


def test_median_is_torchs():
    """numpy's selection gives the element torch.median gives (the lower middle one), rows with NaN left to torch."""
    import torch

    from featurestore.extractors._formula_metrics import _median

    gen = torch.Generator().manual_seed(0)
    for shape in ((2, 4, 1, 1, 49152), (3, 5), (1, 1), (2, 6)):
        x = torch.rand(*shape, generator=gen) ** 2
        x[..., ::7] = x[..., :1].clone()  # ties
        assert torch.equal(_median(x), torch.median(x, dim=-1, keepdim=True).values), shape
    x[0, 1] = float("nan")
    torch.testing.assert_close(_median(x), torch.median(x, dim=-1, keepdim=True).values, rtol=0, atol=0, equal_nan=True)


def test_exp_far_below_range_is_torchs():
    import torch

    from featurestore.extractors._formula_metrics import _exp

    gen = torch.Generator().manual_seed(0)
    x = torch.cat([-torch.rand(40_000, generator=gen, dtype=torch.float64) * 1e5,
                   torch.rand(39_993, generator=gen, dtype=torch.float64) * 60 - 50,
                   torch.tensor([-745.1, -745.2, -746.0, -746.1, -float("inf"), float("nan"), 0.0], dtype=torch.float64)])
    x = x[torch.randperm(len(x), generator=gen)].reshape(1, 1, 2, -1)
    torch.testing.assert_close(_exp(x), torch.exp(x), rtol=0, atol=0, equal_nan=True)


def test_filters_match_pyiqa():
    """`_pyiqa_filters` restates pyiqa's size-only pieces (so the extractor need not import pyiqa.matlab_utils
    and with it scipy): each one is pyiqa's, bit for bit, at even and odd sizes."""
    import torch
    from pyiqa.archs import fsim_arch, func_util, nlpd_arch, vsi_arch
    from pyiqa.matlab_utils import fspecial, math_util

    from featurestore.extractors import _pyiqa_filters as P

    fsim_options = {k: v for k, v in P.FSIM_OPTIONS.items() if k != "chromatic"}
    for h, w in ((192, 256), (183, 245)):
        for ours, theirs in zip(P.meshgrid((h, w)), func_util.get_meshgrid((h, w))):
            assert torch.equal(ours, theirs)
        grid = torch.arange(h * w, dtype=torch.float32).reshape(h, w)
        assert torch.equal(P.ifftshift(grid), func_util.ifftshift(grid))
        options = {k: v for k, v in fsim_options.items() if k != "k"}
        assert torch.equal(P.fsim_filters(h, w, **options),
                           fsim_arch._construct_filters(torch.zeros(1, 1, h, w), **fsim_options))
        lg = vsi_arch._log_gabor((h, w), P.VSI_OPTIONS["omega_0"], P.VSI_OPTIONS["sigma_f"])
        assert torch.equal(P.log_gabor((h, w), P.VSI_OPTIONS["omega_0"], P.VSI_OPTIONS["sigma_f"]), lg)
        log_rad, angle = P.prepare_grid(h, w)
        theirs = math_util.prepare_grid(h, w)
        assert np.array_equal(log_rad, theirs[0]) and np.array_equal(angle, theirs[1])
        assert torch.equal(P.fspecial_gaussian([h - 6, w - 6], h / 4), fspecial([h - 6, w - 6], h / 4, 1))
    assert P.FSIM_OPTIONS == pyiqa_fsim_options()
    assert P.VSI_OPTIONS == vsi_arch.VSI().vsi.keywords
    for ours, theirs in zip(P.rcos_fn(1, -0.5), math_util.rcosFn(1, -0.5)):
        assert np.array_equal(ours, theirs)
    table = np.linspace(-3, 3, 50)
    assert np.array_equal(P.point_op(np.outer(table, table), np.cos(table), table),
                          math_util.pointOp(np.outer(table, table), np.cos(table), table))
    maps = torch.rand(2, 1, 9, 11, dtype=torch.float64), torch.rand(2, 1, 9, 11, dtype=torch.float64)
    assert torch.equal(P.similarity_map(*maps, 386.0), func_util.similarity_map(*maps, 386.0))
    assert torch.equal(P.similarity_map(*(m.float() for m in maps), 0.85),
                       func_util.similarity_map(*(m.float() for m in maps), 0.85))
    assert torch.equal(P.scharr_kernels(), torch.stack([func_util.scharr_filter(), func_util.scharr_filter().transpose(-1, -2)]))
    net = nlpd_arch.NLPD()
    assert net.k == P.NLPD_LEVELS and np.array_equal(nlpd_arch.LAPLACIAN_FILTER, P.LAPLACIAN_FILTER)
    assert [s.item() for s in net.sigmas] == [torch.tensor(s, dtype=torch.float32).item() for s in P.NLPD_SIGMAS]
    for ours, theirs in zip(P.NLPD_DN_FILTERS, net.dn_filts):
        assert torch.equal(torch.tensor(ours, dtype=torch.float32).view(1, 1, 3, 3), theirs.data)
    odd = torch.rand(2, 1, 13, 10)
    assert torch.equal(P.symmetric_pad(odd, 2, 2, 2, 2), net.pad_sym(odd))


@pytest.mark.parametrize("size", [(13, 10), (5, 6), (3, 7), (1, 1)])
def test_symmetric_pad_is_pyiqas_for_narrow_and_wide_pads(size):
    """Strips copied into place (a pad no wider than the image) or pyiqa's gather (wider): MATLAB's 'symmetric'."""
    import itertools

    import torch
    from pyiqa.matlab_utils.padding import symm_pad

    from featurestore.extractors import _pyiqa_filters as P

    im = torch.rand(2, 1, *size)
    for pads in itertools.product((0, 1, 2, 5, 8), repeat=4):
        assert torch.equal(P.symmetric_pad(im, *pads), symm_pad(im, pads)), pads


def pyiqa_fsim_options() -> dict:
    from pyiqa.archs.fsim_arch import FSIM

    return FSIM().fsim.keywords
