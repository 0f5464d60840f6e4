"""Challenge metrics against scipy, and the Final formula."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tabular import metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_scipy(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 6, 200).astype(float)  # integer labels: many ties, like SeIQA train
    pred = y + rng.normal(0, 1.5, 200)
    pred[:20] = 2.0  # ties in the prediction too
    got = metrics.all_metrics(pred, y)
    assert got["srocc"] == pytest.approx(stats.spearmanr(pred, y).statistic, abs=1e-12)
    assert got["plcc"] == pytest.approx(stats.pearsonr(pred, y).statistic, abs=1e-12)
    assert got["krcc"] == pytest.approx(stats.kendalltau(pred, y).statistic, abs=1e-12)
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean((pred - y) ** 2)))
    assert got["final"] == pytest.approx(0.6 * got["srocc"] + 0.4 * got["plcc"])
    assert metrics.final(pred, y) == pytest.approx(got["final"])


def test_plcc_is_on_the_raw_prediction():
    y = np.arange(10.0)
    assert metrics.srocc(np.exp(y), y) == pytest.approx(1.0)
    assert metrics.plcc(np.exp(y), y) < 0.8  # no logistic fitting before Pearson


def test_constant_prediction_scores_zero_not_nan():
    y = np.arange(5.0)
    assert metrics.final(np.ones(5), y) == 0.0
    assert metrics.all_metrics(np.ones(5), y)["krcc"] == 0.0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        metrics.final([1.0, 2.0], [1.0, 2.0, 3.0])


def test_rankdata_matches_scipy_with_ties():
    rng = np.random.default_rng(5)
    for x in (rng.normal(size=50), rng.integers(0, 4, 300).astype(float), np.array([2.0]), np.full(7, 3.0)):
        np.testing.assert_allclose(metrics.rankdata(x), stats.rankdata(x))


def test_per_fold_mean_ignores_fold_shifts_that_pooled_final_pays_for():
    rng = np.random.default_rng(6)
    y = rng.normal(size=200)
    fold = np.repeat(np.arange(4), 50)
    pred = y + rng.normal(0, 0.3, 200) + 3.0 * fold  # each fold's model adds its own offset
    assert metrics.mean_fold_final(pred, y, fold) == pytest.approx(
        np.mean([metrics.final(pred[fold == k], y[fold == k]) for k in range(4)]))
    assert metrics.mean_fold_final(pred, y, fold) > metrics.final(pred, y) + 0.3


def test_group_bootstrap_resamples_whole_groups_and_is_paired():
    rng = np.random.default_rng(7)
    y = rng.normal(size=120)
    groups = np.repeat(np.arange(12), 10)
    good, bad = y + rng.normal(0, 0.3, 120), y + rng.normal(0, 1.0, 120)

    def in_bag(pred, groups=groups, draws=50):
        return metrics.finals_on([pred], y, [rows for rows, _ in metrics.group_bootstrap_draws(groups, draws)])

    a = in_bag(good)
    assert a.shape == (50,) and a.std() > 0
    np.testing.assert_array_equal(a, in_bag(good))
    assert (a > in_bag(bad)).all()  # same draws: paired
    one_group = in_bag(good, np.zeros(120), 5)
    assert np.allclose(one_group, metrics.final(good, y))  # one group: every draw is the whole table
