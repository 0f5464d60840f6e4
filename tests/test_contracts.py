"""Contract tests that iterate the learning registries, so a newly registered component is covered
without a line here: every pool model (and `GroupedRidgeCV`) passes scikit-learn's estimator checks
and takes arrays as well as DataFrames; every blend method finds the right members of a toy problem;
every calibrator maps a blend monotonically onto 0..5; the blend section accepts exactly what the
blender uses."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.utils.estimator_checks import check_estimator

from blend.blender import METHODS, BoundedBlender, method_parameters
from blend.calibration import MonotoneCalibrator
from blend.calibrators import CALIBRATORS, HIGH, LOW
from blend.settings import settings_from
from featurestore.errors import SiqaError
from tabular import inference, metrics
from tabular.models import POOL
from tabular.ridge import GroupedRidgeCV

# Small enough to be quick, large enough for check_regressors_train (training R^2 > 0.5 on 200 rows)
QUICK = {"catboost": dict(iterations=60), "xgboost": dict(n_estimators=30), "lightgbm": dict(n_estimators=30),
         "extratrees": dict(n_estimators=10), "mixed_feature_catboost": dict(n_seeds=1, iterations=60, n_auto=3),
         "pairwise_mlp": dict(epochs=30, hidden=(16,), lr=1e-2), "ordinal_class_head": dict(epochs=30, hidden=(16,), lr=1e-2)}
SLOW_CHECKS = {"catboost", "xgboost", "lightgbm", "mixed_feature_catboost", "pairwise_mlp", "ordinal_class_head"}
# members that learn from the pair images, not from a feature matrix (tests/test_vlm_members.py covers them;
# tests/test_tabular_models.py pins which they are)
FEATURE_MEMBERS = [name for name in POOL.names() if not POOL.get(name).needs_pairs]


def _estimators() -> list:
    return [*(pytest.param(name, marks=[pytest.mark.slow] if name in SLOW_CHECKS else [], id=name)
              for name in FEATURE_MEMBERS), pytest.param("GroupedRidgeCV", id="GroupedRidgeCV")]


def _build(name: str):
    return GroupedRidgeCV() if name == "GroupedRidgeCV" else POOL.get(name)(**QUICK.get(name, {}))


@pytest.mark.parametrize("name", _estimators())
def test_every_pool_model_passes_the_scikit_learn_estimator_checks(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(_build(name), on_fail=None)
    failed = [f"{r['check_name']}: {str(r['exception']).splitlines()[0] if str(r['exception']) else r['exception']!r}"
              for r in results if r["status"] == "failed"]
    assert len(results) > 40 and not failed, "\n".join(failed)


def _table(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 5)), columns=[f"f{j}" for j in range(5)])
    X.iloc[::7, 2] = np.nan  # NaN is allowed everywhere
    y = (2 * X["f0"] + X["f1"] + 0.2 * rng.normal(size=n)).to_numpy()
    return X, y, np.repeat(np.arange(n // 6), 6)


@pytest.mark.parametrize("name", FEATURE_MEMBERS)
def test_every_pool_model_gives_the_same_predictions_from_a_frame_and_an_array(name):
    X, y, groups = _table()
    from_frame = POOL.get(name)(**QUICK.get(name, {})).fit(X, y, groups)
    from_array = POOL.get(name)(**QUICK.get(name, {})).fit(X.to_numpy(), y, groups)
    assert from_frame.n_features_in_ == from_array.n_features_in_ == 5
    assert list(from_frame.feature_names_in_) == list(X.columns) and not hasattr(from_array, "feature_names_in_")
    # equal up to rounding: numpy sums a C- and an F-ordered copy in different orders
    np.testing.assert_allclose(from_frame.predict(X), from_array.predict(X.to_numpy()), rtol=1e-10, atol=1e-12)
    assert metrics.final(from_frame.predict(X), y) > 0.5
    with pytest.raises(ValueError, match="feature names"):
        from_frame.predict(X[["f0", "f1"]])
    with pytest.raises(ValueError, match="expecting 5 features"):
        from_array.predict(X.to_numpy()[:, :2])


@pytest.mark.parametrize("name", ["pairwise_mlp", "ordinal_class_head"])
def test_torch_models_leave_the_thread_setting_as_they_found_it(name):
    X, y, groups = _table()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = POOL.get(name)(**QUICK[name]).fit(X, y, groups)
        assert torch.get_num_threads() == 2
        model.predict(X)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# --- blend methods ------------------------------------------------------------------------------------

def _members(n=300, seed=0):
    """Columns 0 and 1: equally good, independent views of y; 2..4: noise."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    good = [y + rng.normal(0, 0.4, n) for _ in range(2)]
    return np.column_stack(good + [rng.normal(size=n) for _ in range(3)]), y


def test_methods_are_registered_in_priority_order():
    assert METHODS.names()[:4] == ["top", "best", "greedy", "slsqp"]


@pytest.mark.parametrize("method", METHODS.names())
def test_every_blend_method_finds_the_good_members(method):
    P, y = _members()
    # `top` averages a fixed number of members whatever the last one scores: asked for two, it must find the two
    own = {"top_k": 2} if "top_k" in method_parameters(method) else {}
    weights = BoundedBlender(method=method, **own).fit(P, y).weights_
    assert weights.sum() == pytest.approx(1.0) and (weights >= 0).all()
    assert weights[:2].sum() > 0.9  # noise columns get (almost) nothing
    capped = BoundedBlender(method=method, cap=0.5, **own).fit(P, y).weights_
    assert (capped <= 0.5 + 1e-9).all() and capped[:2].sum() > 0.9  # both good members share the weight


def test_auto_breaks_ties_toward_the_lowest_priority():
    rng = np.random.default_rng(3)
    y = rng.normal(size=200)
    P = np.column_stack([y, rng.normal(size=200), rng.normal(size=200)])  # one perfect member
    blender = BoundedBlender(method="auto", n_splits=3).fit(P, y, np.repeat(np.arange(40), 5))
    best_score = max(blender.cv_scores_.values())
    # greedy cannot beat it, and top keeps it alone (the noise members are far more than two errors behind)
    assert blender.cv_scores_["top"] == blender.cv_scores_["best"] == blender.cv_scores_["greedy"] == best_score
    assert blender.method_ == "top"


def test_the_blend_section_accepts_exactly_the_blender_keys_and_method_parameters():
    assert "rounds" in method_parameters("greedy") and "anchors" in method_parameters("slsqp")
    section = {"method": "greedy", "cap": 1.0, "folds": 3, "calibration": "linear", "rounds": 0}
    settings = settings_from({"tabular": {"blend": section}}).tabular
    assert settings.blend.rounds == 0 and settings.blend.method_parameters() == {"top_k": 3, "rounds": 0}
    with pytest.raises(SiqaError, match=r"^config: \[tabular.blend\] roundz: unknown key \(allowed: .*\); did you "
                                        r"mean 'rounds'\?$"):
        settings_from({"tabular": {"blend": {**section, "roundz": 3}}})
    # a method parameter reaches its method: with no rounds, greedy is the single best member
    P, y = _members()
    greedy = settings.make_blender(seed=0).fit(P, y)
    np.testing.assert_array_equal(greedy.weights_, BoundedBlender(method="best").fit(P, y).weights_)


# --- calibrators --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CALIBRATORS.names())
def test_every_calibrator_maps_a_blend_monotonically_onto_the_scale(name):
    rng = np.random.default_rng(0)
    z = rng.normal(size=400)
    y = np.clip(2.5 + 1.5 * np.tanh(z) + rng.normal(0, 0.3, 400), 0, 5)
    x = 2.5 + 1.2 * z  # a blend on the label's 0..5 scale (what `MonotoneCalibrator` hands on), overshooting it
    calibrator = CALIBRATORS.get(name)().fit(x, y)
    grid = np.linspace(-6, 6, 500)
    out = calibrator.transform(grid)
    assert out.shape == grid.shape and (out >= LOW).all() and (out <= HIGH).all()
    assert (np.diff(out) >= 0).all()
    assert metrics.final(calibrator.transform(x), y) >= metrics.final(x, y) - 0.02
    assert np.abs(calibrator.transform(x) - y).mean() < np.abs(x - y).mean()  # it moves the blend toward y
    via_auto_name = MonotoneCalibrator(name).fit(x, y)
    np.testing.assert_array_equal(via_auto_name.transform(grid), out)
    # its export (what a run's fast path evaluates), alone and behind the label scale of labels on 1..8
    np.testing.assert_allclose(inference.run(calibrator.export(), grid), out, rtol=0, atol=1e-12)
    scaled = MonotoneCalibrator(name).fit(1 + 1.4 * x, 1 + 1.4 * y)
    np.testing.assert_allclose(inference.run(scaled.export(), 1 + 1.4 * grid), scaled.transform(1 + 1.4 * grid),
                               rtol=0, atol=1e-9)


def test_auto_calibration_chooses_among_the_auto_candidates():
    candidates = [n for n, cls in CALIBRATORS.items() if cls.auto]
    assert candidates[:3] == ["identity", "linear", "pchip"]
    rng = np.random.default_rng(1)
    x = rng.normal(size=300)
    chosen = MonotoneCalibrator("auto").fit(x, np.clip(2.5 + x, 0, 5), np.repeat(np.arange(60), 5))
    assert set(chosen.cv_scores_) == set(candidates) and chosen.method_ in candidates
