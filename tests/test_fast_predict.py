"""The library-free fast path: every pool member's `export()` program equals its `predict`, a run's compiled
pipeline (its only model format) scores as the fitted pipeline did, a cached pair is scored without importing
the model libraries, and a new pair through the extractors gets the same score.

Tolerances: 1e-9 for every member but the torch networks. The tree programs reproduce the libraries'
arithmetic (XGBoost: float32 features, `<`, float32 sums; LightGBM: float64, `<=`, NaN read as 0 where a split
learnt no NaN side; CatBoost: float32 `>` borders; scikit-learn: float32 features against float64 thresholds)
and agree bit for bit here; SVR and the Ridges differ by float64 rounding of sums taken in another order.
The networks run in float32 in torch and in numpy, whose matrix products sum in different orders: float32
rounding (eps 1.2e-7) over layers of up to 128 products gives differences of about 1e-7 of the output's
scale, so they are held to `TORCH_TOLERANCE` = 1e-5 times the target's spread.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from toy_run import make_dataset, toy_extractors  # noqa: F401 (module-scoped autouse fixture)

import siqa
from featurestore.errors import SiqaError
from tabular.inference import restore, run, save
from tabular.models import POOL

ROOT = Path(__file__).resolve().parents[1]
TORCH_TOLERANCE = 1e-5
TORCH_MEMBERS = {"pairwise_mlp", "ordinal_class_head"}
#: the libraries the fast path must not import
HEAVY = ("torch", "sklearn", "scipy", "lightgbm", "xgboost", "catboost", "pandas", "pyarrow")

#: every member of the default preset, small enough to fit in a second or two each (their own settings are
#: what the preset uses; only sizes are cut)
MEMBERS = {
    "catboost": {"iterations": 60, "depth": 4},
    "xgboost": {"n_estimators": 60, "max_depth": 4},
    "lightgbm": {"n_estimators": 60, "num_leaves": 15, "min_child_samples": 5},
    "ridge": {},
    "log_ridge": {"model": "ridge", "log_features": True, "use_meta": False},
    "best_single_feature": {},
    "raw_feature": {},
    "svr": {"C": 3.0, "log_features": True},
    "extratrees": {"n_estimators": 30},
    "pairwise_mlp": {"log_features": True, "epochs": 20, "batch_size": 32},
    "ordinal_class_head": {"log_features": True, "epochs": 20, "batch_size": 32},
    "ordinal_class_head_gated": {"model": "ordinal_class_head", "epochs": 20, "batch_size": 32,
                                 "gate_feature": "sim", "gate_threshold": 0.3, "gate_softness": 0.05},
    "mixed_feature_catboost": {"n_seeds": 2, "n_auto": 3, "iterations": 40, "depth": 4},
}


def _table(n: int, rng) -> pd.DataFrame:
    """Skewed non-negative metrics, a signed one, a cosine and a meta-feature; NaN in two columns, one of
    them only in rows to predict (so tree splits see NaN both with and without a learnt side)."""
    quality = rng.uniform(0, 5, n)
    frame = pd.DataFrame({
        "mse": np.exp(-quality + rng.normal(0, 0.3, n)),
        "ssim": np.clip(quality / 5 + rng.normal(0, 0.1, n), 0, 1),
        "delta": rng.normal(0, 1, n) + quality,
        "sim": np.clip(0.2 + quality / 6 + rng.normal(0, 0.05, n), 0, 1),
        "zeroish": np.where(rng.random(n) < 0.3, 0.0, rng.normal(0, 1, n)),
        "meta_block": quality + rng.normal(0, 0.5, n),
    })
    frame.loc[rng.random(n) < 0.15, "ssim"] = np.nan
    return frame, np.round(quality)


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X, y = _table(160, rng)
    groups = np.arange(len(y)) // 4
    test, _ = _table(200, np.random.default_rng(1))
    test.loc[::3, "delta"] = np.nan  # NaN the training rows never had
    test.loc[::5, "ssim"] = np.nan
    test.iloc[7, :] = np.nan  # a row with nothing known
    models = {}
    for member, params in MEMBERS.items():
        params = dict(params)
        cls = POOL.get(params.pop("model", member))
        models[member] = cls(**params).fit(X, y, groups)
    return models, test, float(np.std(y))


@pytest.mark.parametrize("member", sorted(MEMBERS))
def test_every_member_export_equals_its_predict(fitted, member):
    models, test, spread = fitted
    model = models[member]
    text, npz = save(model.export())
    program = restore(text, npz)  # what a run folder holds, read back
    expected = model.predict(test)
    got = run(program, test.to_numpy(dtype=np.float64))
    assert got.shape == expected.shape and np.isfinite(got).all()
    tolerance = TORCH_TOLERANCE * spread if POOL.canonical(MEMBERS[member].get("model", member)) in TORCH_MEMBERS \
        else 1e-9
    assert np.abs(got - expected).max() <= tolerance


def test_the_test_rows_reach_the_missing_value_rules(fitted):
    """Not vacuous: the trees send NaN somewhere other than where 0 goes, so a wrong NaN rule would show."""
    models, test, _ = fitted
    zeros = test.fillna(0.0)
    for member in ("xgboost", "lightgbm", "catboost"):
        program = models[member].export()
        assert not np.allclose(run(program, test.to_numpy()), run(program, zeros.to_numpy()))


def test_a_program_of_another_format_is_refused():
    text, npz = save([{"op": "clip", "low": 0.0, "high": 5.0}])
    stored = json.loads(text)
    stored["format"] += 1
    with pytest.raises(ValueError, match="format"):
        restore(json.dumps(stored), npz)


def test_saved_programs_are_byte_identical(fitted):
    models, _, _ = fitted
    assert save(models["lightgbm"].export()) == save(models["lightgbm"].export())


# --- a whole run --------------------------------------------------------------------------------

RUN_CONFIG = """
[extractors.toymean]
[extractors.toymse]

[tabular]
preset = "fast"
[tabular.pool.lightgbm]
n_estimators = 40
[tabular.pool.xgboost]
n_estimators = 40
[tabular.pool.catboost]
iterations = 40
[tabular.pool.svr]
log_features = true
[tabular.pool.extratrees]
n_estimators = 20
[tabular.pool.pairwise_mlp]
epochs = 10
[tabular.pool.ordinal_class_head]
epochs = 10
log_features = true
[tabular.pool.mixed_feature_catboost]
n_seeds = 2
n_auto = 2
iterations = 30
[tabular.blend]
method = "greedy"
"""


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A run on the toy extractors (a dense block, so a meta-feature Ridge too) with every default member."""
    from blend.run import run_oof
    from blend.settings import load_settings
    from featurestore.config import build_extractors
    from featurestore.datasets import load_pairs
    from featurestore.store import FeatureStore
    from tabular.data import TabularData

    tmp = tmp_path_factory.mktemp("fast")
    data = make_dataset(tmp / "data")
    (tmp / "run.toml").write_text(RUN_CONFIG)
    config = load_settings(tmp / "run.toml")
    FeatureStore(tmp / "store").extract(load_pairs(data), build_extractors(config.extractors), progress=False)
    run_oof(TabularData.from_store(tmp / "store"), config, tmp / "run", progress=False)
    return {"data": data, "store": tmp / "store", "run": tmp / "run"}


def _test_pairs(store: Path) -> pd.DataFrame:
    from featurestore.store import FeatureStore

    pairs = FeatureStore(store).pairs()
    return pairs[pairs.split == "test"].reset_index(drop=True)


def test_a_cached_pair_scores_as_the_fitted_pipeline(toy_run):
    from blend.run import load_run
    from tabular.data import TabularData

    model = siqa.load(toy_run["run"])
    summary = json.loads((toy_run["run"] / "run.json").read_text())
    assert set(model.compiled.member_names) == set(summary["members"])
    # written against the fitted pipeline on every labelled pair; the blend holds torch members: float32
    # rounding (see the module docstring), on the 0..5 scale
    assert summary["compiled_gap"] <= 5 * TORCH_TOLERANCE
    pairs = _test_pairs(toy_run["store"])
    scored = model.score_files(list(zip(pairs.ref_path, pairs.dist_path)))
    assert scored.path == "compiled" and scored.computed == 0
    data = TabularData.from_store(toy_run["store"])
    full = pd.Series(load_run(toy_run["run"]).pipeline.predict(data), index=data.ids)
    np.testing.assert_allclose(scored.scores, full.loc[pairs.pair_id].to_numpy(), rtol=0, atol=1e-12)
    assert model.score(pairs.ref_path[0], pairs.dist_path[0]) == pytest.approx(scored.scores[0], abs=1e-12)


def test_the_fast_path_imports_no_model_library(toy_run):
    pairs = _test_pairs(toy_run["store"])
    script = (f"import sys, json, siqa\n"
              f"score = siqa.load({str(toy_run['run'])!r}).score({pairs.ref_path[0]!r}, {pairs.dist_path[0]!r})\n"
              f"print(json.dumps({{'score': score, 'loaded': [m for m in {HEAVY!r} if m in sys.modules]}}))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert result["score"] == pytest.approx(siqa.load(toy_run["run"]).score(pairs.ref_path[0], pairs.dist_path[0]),
                                            abs=1e-12)


def test_a_new_pair_goes_through_the_full_pipeline(toy_run, tmp_path):
    from PIL import Image

    shutil.copytree(toy_run["store"], tmp_path / "store")
    pairs = _test_pairs(tmp_path / "store")
    ref = np.asarray(Image.open(pairs.ref_path[0]).convert("RGB"))
    Image.fromarray(np.ascontiguousarray(ref[::-1])).save(tmp_path / "flipped.png")
    model = siqa.load(toy_run["run"], store=tmp_path / "store")
    first = model.score_files([(pairs.ref_path[0], str(tmp_path / "flipped.png"))])
    assert first.path == "pipeline" and first.computed > 0
    again = model.score_files([(pairs.ref_path[0], str(tmp_path / "flipped.png"))])  # now cached
    assert again.path == "compiled"
    assert again.scores[0] == pytest.approx(first.scores[0], abs=5 * TORCH_TOLERANCE)


def test_a_run_without_its_programs_is_one_line(toy_run, tmp_path):
    from blend.compiled import INFERENCE_JSON, INFERENCE_NPZ
    from blend.runfolder import sign

    shutil.copytree(toy_run["run"], tmp_path / "run")
    for name in (INFERENCE_JSON, INFERENCE_NPZ):
        (tmp_path / "run" / name).unlink()
    sign(tmp_path / "run", "0" * 32)
    with pytest.raises(SiqaError, match=r"no models/inference.json \(a run of an older siqa, which pickled its "
                                        r"models\); fit it again"):
        siqa.load(tmp_path / "run")


def test_changed_programs_are_not_loaded(toy_run, tmp_path):
    from blend.compiled import INFERENCE_NPZ

    shutil.copytree(toy_run["run"], tmp_path / "run")
    npz = tmp_path / "run" / INFERENCE_NPZ
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    with pytest.raises(SiqaError, match="changed since the run was written"):
        siqa.load(tmp_path / "run")
