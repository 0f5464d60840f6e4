"""Monotone calibration to 0..5 and the affine label scale."""
from __future__ import annotations

import numpy as np
import pytest

from blend.calibration import LabelScale, MonotoneCalibrator
from tabular import metrics


def _xy(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, np.clip(2.5 + 2 * np.tanh(x) + rng.normal(0, 0.3, n), 0, 5)


@pytest.mark.parametrize("method", ["pchip", "isotonic", "linear"])
def test_calibration_is_monotone_and_within_range(method):
    x, y = _xy()
    calibrator = MonotoneCalibrator(method).fit(x, y)
    grid = np.linspace(-10, 10, 2001)
    out = calibrator.transform(grid)
    assert (out >= 0).all() and (out <= 5).all()
    assert (np.diff(out) >= 0).all()


def test_pchip_keeps_order_and_straightens_a_curved_relation():
    x, y = _xy()
    x_test, y_test = _xy(seed=1)
    out = MonotoneCalibrator("pchip").fit(x, y).transform(x_test)
    assert np.unique(out).size == out.size  # strictly increasing: no ties, SROCC is untouched
    assert metrics.srocc(out, y_test) == pytest.approx(metrics.srocc(x_test, y_test))
    assert metrics.plcc(out, y_test) > metrics.plcc(x_test, y_test) + 0.01


def test_auto_picks_the_curve_only_where_it_helps_held_out_rows():
    x, y = _xy(n=600)
    curved = MonotoneCalibrator("auto").fit(x, y, np.repeat(np.arange(60), 10))
    assert curved.method_ == "pchip" and curved.cv_scores_["pchip"] > curved.cv_scores_["linear"]
    rng = np.random.default_rng(2)
    x = rng.normal(size=60)
    straight = MonotoneCalibrator("auto").fit(x, np.clip(2.5 + x + rng.normal(0, 0.5, 60), 0, 5))
    assert straight.method_ == "linear"


def test_label_scale():
    assert LabelScale().fit(np.array([0.0, 3.0, 5.0])).transform(np.array([2.0]))[0] == 2.0
    scale = LabelScale().fit(np.array([-1.0, -0.5, 0.0]))  # e.g. -DMOS
    np.testing.assert_allclose(scale.transform(np.array([-1.0, -0.5, 0.0])), [0.0, 2.5, 5.0])
    np.testing.assert_allclose(LabelScale().fit(np.array([0.24, 7.21])).transform(np.array([0.24, 7.21])), [0, 5])


def test_identity_is_the_blend_on_the_training_labels_scale():
    target = np.linspace(1.0, 8.0, 50)  # e.g. MOS on 1..8: mapped min-max onto 0..5
    calibrator = MonotoneCalibrator("identity").fit(target + 0.1, target)
    np.testing.assert_allclose(calibrator.transform(np.array([1.0, 4.5, 8.0, 20.0])), [0.0, 2.5, 5.0, 5.0])


def test_auto_keeps_the_blend_as_it_is_on_a_few_groups():
    # a blend already on the label's scale, six reference groups: a fitted map's gain would be luck
    rng = np.random.default_rng(3)
    y = rng.uniform(0, 5, 60)
    x = y + rng.normal(0, 0.8, 60)
    chosen = MonotoneCalibrator("auto").fit(x, y, np.repeat(np.arange(6), 10))
    assert chosen.method_ == "identity"
    np.testing.assert_allclose(chosen.transform(x), np.clip(x, 0, 5))
