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
