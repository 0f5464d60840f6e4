"""BoundedBlender: weights honour [0, cap] and sum to 1; it can fall back to one model; auto picks by CV."""
from __future__ import annotations

import numpy as np
import pytest

from blend.blender import METHODS, BoundedBlender
from blend.settings import settings_from
from featurestore.errors import SiqaError
from tabular import metrics


def _predictions(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    good = [y + rng.normal(0, s, n) for s in (0.5, 0.6, 0.8)]
    noise = [rng.normal(size=n) for _ in range(3)]
    return np.column_stack(good + noise), y, np.repeat(np.arange(n // 10), 10)


@pytest.mark.parametrize("method", [*METHODS, "auto"])
@pytest.mark.parametrize("cap", [1.0, 0.5, 0.34])
def test_weights_are_bounded_and_sum_to_one(method, cap):
    P, y, groups = _predictions()
    blender = BoundedBlender(cap=cap, method=method, rounds=15, n_splits=3).fit(P, y, groups)
    w = blender.weights_
    assert w.shape == (6,) and w.sum() == pytest.approx(1.0)
    assert (w >= 0).all() and (w <= cap + 1e-9).all()
    np.testing.assert_allclose(blender.predict(P), P @ w)
    assert blender.method_ in METHODS


def test_blend_beats_members_and_ignores_noise():
    P, y, groups = _predictions()
    for method in ("greedy", "slsqp"):
        blender = BoundedBlender(method=method).fit(P, y, groups)
        assert blender.weights_[3:].sum() < 0.1
        assert metrics.final(blender.predict(P), y) > max(metrics.final(P[:, j], y) for j in range(6))


def test_falls_back_to_the_single_best_model():
    rng = np.random.default_rng(1)
    y = rng.normal(size=200)
    P = np.column_stack([y + rng.normal(0, 0.1, 200), y + rng.normal(0, 3.0, 200), rng.normal(size=200)])
    blender = BoundedBlender(method="greedy").fit(P, y)
    assert blender.weights_[0] > 0.9
    assert BoundedBlender(method="best").fit(P, y).weights_.tolist() == [1.0, 0.0, 0.0]


def test_auto_reports_the_inner_cv_of_every_method():
    P, y, groups = _predictions()
    blender = BoundedBlender(method="auto", n_splits=3, rounds=10, choice="max").fit(P, y, groups)
    assert set(blender.cv_scores_) == set(METHODS)
    assert blender.cv_scores_[blender.method_] == max(blender.cv_scores_.values())


def test_one_standard_error_rule_keeps_the_single_best_model_unless_blending_wins_clearly():
    """Members that share almost all their error: a blend beats the best one only by luck-sized margins
    on held-out groups, and the rule keeps a fit-free method (`top`, `best`); members with
    independent errors: averaging wins on every fold, and the rule takes it."""
    rng = np.random.default_rng(4)
    n_groups, n = 5, 150
    y = rng.normal(size=n)
    groups = np.repeat(np.arange(n_groups), n // n_groups)
    shared = y + rng.normal(0, 0.8, n)
    P = np.column_stack([shared + rng.normal(0, 0.05, n) for _ in range(3)])
    one_se = BoundedBlender(method="auto", n_splits=5, rounds=10).fit(P, y, groups)
    assert one_se.method_ in ("top", "best")  # no fitted weights: the simplest methods
    P = np.column_stack([y + rng.normal(0, 0.9, n) for _ in range(3)])
    one_se = BoundedBlender(method="auto", n_splits=5, rounds=10).fit(P, y, groups)
    assert one_se.method_ != "best" and one_se.cv_scores_[one_se.method_] > one_se.cv_scores_["best"]


def test_impossible_settings_are_errors():
    P, y, _ = _predictions()
    with pytest.raises(SiqaError, match="cap 0.1 cannot give 6 model"):
        BoundedBlender(cap=0.1).fit(P, y)
    with pytest.raises(SiqaError, match=r"\[tabular.blend\] method = 'median': unknown blend method 'median'"):
        settings_from({"tabular": {"blend": {"method": "median"}}})  # refused when the config loads


def test_top_averages_the_best_members_with_equal_weights():
    rng = np.random.default_rng(5)
    y = rng.normal(size=300)
    groups = np.repeat(np.arange(10), 30)
    noise = [0.5, 3.0, 0.52, 6.0, 0.51]  # members 0, 4, 2: about as good; 1 and 3 far behind
    P = np.column_stack([y + rng.normal(0, s, 300) for s in noise])
    np.testing.assert_allclose(BoundedBlender(method="top").fit(P, y, groups).weights_, [1 / 3, 0, 1 / 3, 0, 1 / 3])
    single = BoundedBlender(method="top", top_k=1).fit(P, y, groups).weights_
    assert single.tolist().count(1.0) == 1 and single[[1, 3]].sum() == 0
    # no weight above the cap: a cap of 0.25 needs four members, even one that is far behind
    np.testing.assert_allclose(BoundedBlender(method="top", cap=0.25).fit(P, y, groups).weights_,
                               [0.25, 0.25, 0.25, 0, 0.25])


def test_top_keeps_a_member_that_is_clearly_the_best_alone():
    rng = np.random.default_rng(6)
    y = rng.normal(size=300)
    groups = np.repeat(np.arange(10), 30)
    P = np.column_stack([y + rng.normal(0, s, 300) for s in (0.1, 0.8, 0.9, 1.0)])
    assert BoundedBlender(method="top").fit(P, y, groups).weights_.tolist() == [1, 0, 0, 0]
