"""The model pool: every registered model fits and predicts; the special heads do what they claim."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from featurestore.errors import SiqaError
from tabular import metrics
from tabular.models import POOL
from blend.settings import settings_from
from tabular.models.pairwise_mlp import fidelity_loss, plcc_loss
from tabular.models.ordinal_class_head import OrdinalClassHead

# small settings so the whole registry fits in seconds; a model missing here runs with its defaults
TINY = {
    "catboost": dict(iterations=30, depth=3), "xgboost": dict(n_estimators=30), "lightgbm": dict(n_estimators=30),
    "extratrees": dict(n_estimators=30), "pairwise_mlp": dict(hidden=(16,), epochs=30, batch_size=32),
    "ordinal_class_head": dict(hidden=(16,), epochs=30, batch_size=32), "mixed_feature_catboost": dict(n_seeds=2, iterations=30, depth=3),
}


def _data(n=160, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 5)), columns=[f"f{i}" for i in range(5)])
    X.loc[::17, "f3"] = np.nan  # models must cope with missing values
    y = (2 * X["f0"] + X["f1"] + 0.3 * rng.normal(size=n)).to_numpy()
    groups = np.repeat(np.arange(n // 8), 8)
    return X, y, groups


# members that learn from the pair images (fine-tuned vision-language models) have their own tests with a tiny
# Qwen-VL in tests/test_vlm_members.py; every other member learns from the feature table here
IMAGE_MEMBERS = {"vlm_lora", "vlm_grpo"}


def test_the_image_members_are_exactly_those_tested_with_images():
    assert {name for name, cls in POOL.items() if cls.needs_pairs} == IMAGE_MEMBERS


@pytest.mark.parametrize("name", [n for n in POOL.names() if n not in IMAGE_MEMBERS])
def test_every_registered_model_learns_a_simple_signal(name):
    X, y, groups = _data()
    model = POOL.get(name)(**TINY.get(name, {}))
    model.fit(X[:120], y[:120], groups[:120])
    pred = model.predict(X[120:])
    assert pred.shape == (40,) and np.isfinite(pred).all()
    assert metrics.final(pred, y[120:]) > 0.6, name


@pytest.mark.parametrize("name", ["pairwise_mlp", "ordinal_class_head", "catboost", "lightgbm"])
def test_a_seed_reproduces_predictions(name):
    X, y, groups = _data()
    first = POOL.get(name)(**TINY[name], random_state=3).fit(X, y, groups).predict(X)
    second = POOL.get(name)(**TINY[name], random_state=3).fit(X, y, groups).predict(X)
    np.testing.assert_array_equal(first, second)


def test_fidelity_loss_matches_a_hand_computed_value():
    pred = torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64)
    y = torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64)
    # pairs (0,1): p = Phi(0.5), g = 1; (0,2): p = Phi(-0.5), g = 1; (1,2): p = Phi(-1), g = 1/2 (tie)
    # 1 - sqrt(.691462) = .168458; 1 - sqrt(.308538) = .444538; 1 - sqrt(.158655/2) - sqrt(.841345/2) = .069756
    assert fidelity_loss(pred, y).item() == pytest.approx((0.168458 + 0.444538 + 0.069756) / 3, abs=1e-6)
    assert fidelity_loss(torch.tensor([3.0, -3.0]), torch.tensor([1.0, 0.0])).item() < 0.002  # right order
    assert fidelity_loss(torch.tensor([-3.0, 3.0]), torch.tensor([1.0, 0.0])).item() > 0.99  # wrong order
    assert plcc_loss(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 6.0])).item() == pytest.approx(0, abs=1e-6)


def test_ordinal_class_head_uses_label_values_as_classes_and_gates_toward_class_zero():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"cos": rng.uniform(0.5, 1.0, 120), "f": rng.normal(size=120)})
    y = np.clip(np.round((X["cos"] - 0.5) * 10), 0, 5).to_numpy()
    plain = OrdinalClassHead(hidden=(16,), epochs=20).fit(X, y)
    assert plain.class_values_.size == 6  # distinct integer labels 0..5, standardised
    gated = OrdinalClassHead(hidden=(16,), epochs=20, gate_feature="cos", gate_threshold=0.7,
                             gate_softness=0.001).fit(X, y)
    low = X["cos"] < 0.69
    np.testing.assert_allclose(gated.predict(X)[low], y.min(), atol=1e-6)  # below the gate: class 0's value
    np.testing.assert_allclose(gated.predict(X)[~low & (X["cos"] > 0.72)], plain.predict(X)[~low & (X["cos"] > 0.72)],
                               atol=1e-6)
    with pytest.raises(SiqaError, match="no gate feature column 'nope'"):
        OrdinalClassHead(gate_feature="nope", epochs=1).fit(X, y)


def test_raw_feature_predicts_the_signed_raw_column_with_no_fitted_map():
    X, y, _ = _data()
    X = X.assign(f0=-X["f0"] * 100 + 7)  # the best column, on its own scale and reversed
    model = POOL.get("raw_feature")().fit(X[:120], y[:120])
    assert (model.column_, model.sign_) == ("f0", -1.0)
    np.testing.assert_array_equal(model.predict(X[120:]), -X["f0"].to_numpy()[120:])
    holes = X[120:].assign(f0=np.nan)
    assert np.all(model.predict(holes) == -np.median(X["f0"].to_numpy()[:120]))


def test_best_single_feature_and_log_ridge_pick_configured_columns():
    X, y, groups = _data()
    best = POOL.get("best_single_feature")().fit(X, y)
    assert best.column_ == "f0" and best.describe() == "picked f0"
    rank6 = _pool({"log_ridge": {"model": "ridge", "columns": ["f1", "f0"], "log_features": True}})[0][1]
    assert metrics.final(rank6.fit(X, y, groups).predict(X), y) > 0.9
    with pytest.raises(SiqaError, match="ridge: no feature column.*'zz'"):
        POOL.get("ridge")(columns=["f0", "zz"]).fit(X, y, groups)


def _settings(pool: dict):
    """[tabular] settings whose pool is exactly `pool` (the preset's members switched off)."""
    base = settings_from({}).tabular.pool
    return settings_from({"tabular": {"threads": 1, "pool": {**{m: {"enabled": False} for m in base}, **pool}}}).tabular


def _pool(pool: dict) -> list:
    settings = _settings(pool)
    return [pair for member, entry in settings.members().items() for pair in entry.estimators(member, 1, 0, None)]


def test_former_pool_names_are_accepted_aliases(caplog):
    assert POOL.get("rank3") is POOL.get("mixed_feature_catboost") and "best_feature" in POOL
    assert not {"rank3", "rank5", "best_feature"} & set(POOL.names())  # listed once, under the new name
    settings = settings_from({"tabular": {"pool": {"rank6": {"enabled": False}, "rank5": {"epochs": 3}}}}).tabular
    assert settings.pool["log_ridge"].enabled is False and settings.pool["ordinal_class_head"].params.epochs == 3
    assert "rank6" not in settings.pool and "deprecated name" in caplog.text
    with pytest.raises(SiqaError, match="same member"):
        settings_from({"tabular": {"pool": {"rank6": {}, "log_ridge": {}}}})


def test_pool_members_are_named_seeded_and_bad_settings_refused():
    members = _pool({"lightgbm": {"seeds": [0, 4]}, "log_ridge": {"model": "ridge", "log_features": True},
                     "svr": {"enabled": False}})
    assert [name for name, _ in members] == ["lightgbm_s0", "lightgbm_s4", "log_ridge"]
    assert members[1][1].random_state == 4 and members[0][1].threads == 1
    with pytest.raises(SiqaError, match=r"^config: \[tabular.pool.nope\] model = 'nope': unknown pool model 'nope' "
                                        r"\(known: "):
        _settings({"nope": {}})
    with pytest.raises(SiqaError, match=r"^config: \[tabular.pool.lightgbm\] trees: unknown key \(allowed: "
                                        r"n_estimators, num_leaves, "):
        _settings({"lightgbm": {"trees": 3}})
    with pytest.raises(SiqaError, match=r"^config: \[tabular.pool.ridge\] model = 'lightgbn': unknown pool model "
                                        r"'lightgbn' .*; did you mean 'lightgbm'\?$"):
        _settings({"ridge": {"model": "lightgbn"}})
    with pytest.raises(SiqaError, match=r"^config: \[tabular.pool.best_single_feature\] seeds: model "
                                        r"best_single_feature takes no seeds$"):
        _settings({"best_single_feature": {"seeds": [1]}})
    with pytest.raises(SiqaError, match=r"^config: \[tabular\] pool: .*no enabled model"):
        _settings({"svr": {"enabled": False}})
