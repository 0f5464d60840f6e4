"""Fine-tuned vision-language pool members (`vlm_lora`, `vlm_grpo`) on the CPU.

The base model is a tiny randomly initialised Qwen2.5-VL of the real class with the real Qwen vocabulary,
tokenizer, chat template and preprocessor config, laid out in a Hugging Face cache as a download would be
(`support.qwen_artefacts`); the members find it by its repo id, the real loading path."""
from __future__ import annotations

import math
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import photo
from support.qwen_artefacts import FAMILIES, write_snapshot
from toy_run import make_dataset, toy_extractors  # noqa: F401 (module-scoped autouse fixture)
from featurestore.io import sha256_file
from tabular.models import POOL
from tabular.models.vlm_base import BASE_MODELS, borrowed
from tabular.models.vlm_finetune import lora_target_modules
from tabular.models.vlm_grpo import VlmGrpoRegressor, exact_match_rewards
from tabular.models.vlm_lora import VlmLoraRegressor, cosine_with_warmup, regression_loss

REPO = FAMILIES["qwen2_5_vl"]["repo"]
TINY = dict(base_model=REPO, device="cpu", lora_rank=4, lora_alpha=8, max_pixels=112 * 112)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf")
    write_snapshot(cache, "qwen2_5_vl")
    return cache


@pytest.fixture(autouse=True)
def only_the_tiny_model(hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("SIQA_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    yield
    BASE_MODELS.clear()  # each test starts without a loaded base model


@pytest.fixture
def loads(monkeypatch) -> list:
    """Every load of a base checkpoint from disk, by the members' cache (`vlm_base`)."""
    from tabular.models import vlm_finetune

    seen, load = [], vlm_finetune.load_base
    monkeypatch.setattr(vlm_finetune, "load_base", lambda *a, **k: seen.append(a[1]) or load(*a, **k))
    BASE_MODELS.clear()
    return seen


@pytest.fixture(scope="module")
def brightness_pairs(tmp_path_factory) -> pd.DataFrame:
    """4 photos x 2 brightness levels; the target is the level (learnable from the degraded image)."""
    root = tmp_path_factory.mktemp("pairs")
    rows = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        ref = photo(name, 112)
        Image.fromarray(ref).save(root / f"{name}.png")
        for level in range(2):
            Image.fromarray(np.clip(ref * (0.3 + 0.7 * level), 0, 255).astype(np.uint8)).save(root / f"{name}_{level}.png")
            rows.append({"pair_id": f"{name}{level}", "ref_path": str(root / f"{name}.png"),
                         "dist_path": str(root / f"{name}_{level}.png"), "target": float(level)})
    frame = pd.DataFrame(rows).set_index("pair_id")
    return frame.assign(ref_sha256=frame.ref_path.map(sha256_file), dist_sha256=frame.dist_path.map(sha256_file))


# --- pure parts --------------------------------------------------------------------------------------------

def test_regression_loss_matches_a_hand_computation():
    pred = [0.3, -1.2, 0.3, 2.0]
    y = [2.0, 1.0, 2.0, 0.0]  # a tie (rows 0 and 2): g = 1/2
    fidelity = []
    for i in range(4):
        for j in range(i + 1, 4):
            p = 0.5 * (1 + math.erf((pred[i] - pred[j]) / math.sqrt(2)))
            g = (np.sign(y[i] - y[j]) + 1) / 2
            fidelity.append(1 - math.sqrt(p * g) - math.sqrt((1 - p) * (1 - g)))
    plcc = np.corrcoef(pred, y)[0, 1]
    expected = 0.7 * np.mean(fidelity) + 0.4 * (1 - plcc)
    got = regression_loss(torch.tensor(pred, dtype=torch.float64), torch.tensor(y, dtype=torch.float64), 0.7, 0.4)
    # the loss keeps sqrt differentiable at 0 with a 1e-12 floor (1e-6 per zero term): a wrong formula moves it by far more
    assert float(got) == pytest.approx(expected, abs=1e-5)


def test_learning_rate_warms_up_then_decays_to_zero():
    factors = [cosine_with_warmup(s, 10, 2) for s in range(11)]
    assert factors[0] < factors[1] < factors[2] == 1.0
    assert all(a >= b for a, b in zip(factors[2:], factors[3:])) and factors[10] == pytest.approx(0.0)


def test_exact_match_reward_reads_the_integer_answer():
    completions = [[{"role": "assistant", "content": "Objects kept, colour changed. Score: 3"}],
                   [{"role": "assistant", "content": "Score: 4/5"}], "the answer is 2", "no idea"]
    assert exact_match_rewards(completions, label=[3, 3, 2, 1]) == [1.0, 0.0, 1.0, 0.0]


def test_members_are_registered_and_need_pairs():
    for name in ("vlm_lora", "vlm_grpo"):
        assert POOL.get(name).needs_pairs


def test_lora_targets_by_part(hub):
    from tabular.models.vlm_finetune import load_base

    base, _, _ = load_base("test", REPO, "", "float32", "cpu")
    vision = lora_target_modules(base, ["vision"])
    aligner = lora_target_modules(base, ["aligner"])
    language = lora_target_modules(base, ["language"])
    assert vision and all(".visual.blocks." in n for n in vision)
    assert aligner == ["model.visual.merger.mlp.0", "model.visual.merger.mlp.2"]
    assert language and all(".language_model.layers." in n for n in language)
    assert sorted(lora_target_modules(base, ["vision", "aligner", "language"])) == sorted(vision + aligner + language)
    assert lora_target_modules(base, ["language"], r"\.(q|v)_proj$") == [
        n for n in language if n.endswith((".q_proj", ".v_proj"))]
    assert "lm_head" not in vision + aligner + language


# --- vlm_lora ----------------------------------------------------------------------------------------------

def test_vlm_lora_learns_a_toy_target_and_reloads_to_the_same_scores(brightness_pairs, tmp_path):
    X = pd.DataFrame(index=brightness_pairs.index)
    target = brightness_pairs.target.to_numpy()
    member = VlmLoraRegressor(**TINY, epochs=12, batch_size=8, lr=1e-3, warmup_ratio=0.0, head_hidden=(16,),
                              work_dir=str(tmp_path / "fits"))
    member.fit(X, target, pairs=brightness_pairs)
    record = pd.read_json(tmp_path / "fits" / next(p.name for p in (tmp_path / "fits").iterdir()) / "fit.json",
                          typ="series")
    # one batch holds every pair, so the first step's loss is the untrained model's loss on the whole set
    before = member.losses_[0]
    trained = np.asarray(record["train_predictions"])
    after = float(regression_loss(torch.tensor(trained), torch.tensor(target), 1.0, 1.0))
    assert len(member.losses_) == 12 and after < 0.8 * before, (before, after)

    # the pickled member holds a path, not a model; loading the adapter again gives the in-memory scores
    blob = pickle.dumps(member)
    assert len(blob) < 20_000
    again = pickle.loads(blob)
    np.testing.assert_allclose(again.predict_raw(X, pairs=brightness_pairs), trained, rtol=0, atol=1e-5)
    calibrated = again.predict(X, pairs=brightness_pairs)
    assert calibrated.min() == pytest.approx(target.min(), abs=1e-6)
    assert calibrated.max() == pytest.approx(target.max(), abs=1e-6)

    # the same fit again is found on disk: nothing trains
    stamp = (tmp_path / "fits").stat().st_mtime_ns, sorted(p.name for p in (tmp_path / "fits").iterdir())
    VlmLoraRegressor(**TINY, epochs=12, batch_size=8, lr=1e-3, warmup_ratio=0.0, head_hidden=(16,),
                     work_dir=str(tmp_path / "fits")).fit(X, target, pairs=brightness_pairs)
    assert ((tmp_path / "fits").stat().st_mtime_ns, sorted(p.name for p in (tmp_path / "fits").iterdir())) == stamp


def test_fits_and_predictions_load_the_base_once_and_match_fresh_loads(brightness_pairs, tmp_path, loads):
    four = brightness_pairs.iloc[[0, 1, 2, 3]]
    X, target = pd.DataFrame(index=four.index), four.target.to_numpy()

    def fit_and_predict(work_dir, fresh: bool) -> list[np.ndarray]:
        out = []
        for seed in (0, 1):  # two fits with other LoRA initialisations: two adapters on the one base model
            member = VlmLoraRegressor(**TINY, epochs=2, batch_size=4, lr=1e-3, head_hidden=(8,), random_state=seed,
                                      work_dir=str(work_dir))
            if fresh:
                BASE_MODELS.clear()
            member.fit(X, target, pairs=four)
            if fresh:
                BASE_MODELS.clear()
            out += [np.asarray(member.losses_), member.predict_raw(X, pairs=four)]
        return out

    shared = fit_and_predict(tmp_path / "shared", fresh=False)
    assert len(loads) == 1
    fresh = fit_and_predict(tmp_path / "fresh", fresh=True)
    assert len(loads) == 1 + 4
    # the same training losses and predictions, to the bit: the borrowed model was lent back as loaded
    for a, b in zip(shared, fresh):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(shared[1], shared[3])  # the two fits differ: the second did not reuse the first adapter


def test_a_base_model_that_comes_back_changed_is_loaded_again(loads, caplog):
    from peft import LoraConfig, get_peft_model

    lease = dict(member="test", model=REPO, path="", dtype="float32", device="cpu")
    with borrowed(**lease) as (base, _, _):
        lent, config = base, base.config.to_dict()
        # what training sets around the weights is put back: flags, hooks, forward overrides, config values
        base.train()
        next(base.parameters()).requires_grad_(False)
        base.model.language_model.embed_tokens.register_forward_hook(lambda *args: None)
        base.forward = lambda *args, **kwargs: None
        base.config.use_cache = False
    with borrowed(**lease) as (base, _, _):
        assert base is lent and len(loads) == 1 and not base.training and "forward" not in base.__dict__
        assert next(base.parameters()).requires_grad and base.config.to_dict() == config
        assert not base.model.language_model.embed_tokens._forward_hooks
        with borrowed(**lease) as (inner, _, _):  # asked for while lent: a private copy
            assert inner is not base and len(loads) == 2
        get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"]))  # an adapter left on
    with borrowed(**lease) as (base, _, _):
        assert base is not lent and len(loads) == 3 and "came back changed" in caplog.text
        with torch.no_grad():
            next(base.parameters()).mul_(1.0)  # a weight written, even to the same values
        again = base
    with borrowed(**lease) as (base, _, _):
        assert base is not again and len(loads) == 4


def test_nested_fits_never_see_held_out_pairs_and_predict_uses_the_run(tmp_path):
    import siqa
    from blend.settings import load_settings
    from featurestore.config import build_extractors
    from featurestore.datasets import load_pairs
    from featurestore.store import FeatureStore
    from tabular.data import TabularData
    from blend.run import run_oof

    data = make_dataset(tmp_path / "data", levels=2)
    config = tmp_path / "vlm.toml"
    config.write_text(f"""
[extractors.toymean]
[extractors.toymse]
[tabular]
preset = "fast"
[tabular.pool.pairwise_mlp]
enabled = false
[tabular.pool.rank6]
enabled = false
[tabular.pool.lightgbm]
enabled = false
[tabular.pool.best_feature]
enabled = false
[tabular.pool.vlm_lora]
base_model = "{REPO}"
device = "cpu"
lora_rank = 4
lora_alpha = 8
max_pixels = 12544
epochs = 1
batch_size = 4
head_hidden = [8]
""")
    store, run = tmp_path / "store", tmp_path / "run"
    FeatureStore(store).extract(load_pairs(data), build_extractors(load_settings(config).extractors), progress=False)
    run_oof(TabularData.from_store(store), load_settings(config), run, progress=False)

    oof = pd.read_parquet(run / "oof.parquet")
    folds = {k: set(oof.id[oof.fold == k]) for k in sorted(oof.fold.unique())}
    everything = set(oof.id)
    expected = [everything - folds[k] for k in folds]
    expected += [everything - folds[k] - folds[j] for k in folds for j in folds if k < j]
    expected += [everything]  # the final refit
    seen = [set(pd.read_json(f, typ="series")["pair_ids"]) for f in sorted((run / "fits").glob("*/fit.json"))]
    assert len(seen) == len(expected) == 3 + 3 + 1
    assert sorted(map(sorted, seen)) == sorted(map(sorted, expected))
    assert np.isfinite(oof["vlm_lora"]).all() and oof["vlm_lora"].std() > 0

    # a killed run: one fit never finished (its folder gone, a staging leftover instead); the rerun trains only it
    fits = sorted((run / "fits").glob("*/fit.json"))
    stamps = {f.parent.name: f.stat().st_mtime_ns for f in fits}
    lost = fits[2].parent
    shutil.rmtree(lost)
    (run / "fits" / f".{lost.name}.leftover").mkdir()
    run_oof(TabularData.from_store(store), load_settings(config), run, progress=False)
    again = {f.parent.name: f.stat().st_mtime_ns for f in (run / "fits").glob("*/fit.json")}
    assert set(again) == set(stamps)
    assert [name for name in stamps if again[name] != stamps[name]] == [lost.name]
    np.testing.assert_allclose(pd.read_parquet(run / "oof.parquet")["vlm_lora"], oof["vlm_lora"], rtol=0, atol=1e-6)

    # `siqa predict` loads the final refit's adapter from the run folder
    pairs = FeatureStore(store).pairs()
    test = pairs[pairs.split == "test"].iloc[:2]
    scores = siqa.score(list(test.ref_path), list(test.dist_path), run=run, store=store)
    assert np.isfinite(scores).all() and ((0 <= scores) & (scores <= 5)).all()


# --- vlm_grpo ----------------------------------------------------------------------------------------------

def test_vlm_grpo_trains_through_trl_and_predicts_the_mean_of_sampled_answers(brightness_pairs, tmp_path):
    two = brightness_pairs.iloc[:2]
    X = pd.DataFrame(index=two.index)
    member = VlmGrpoRegressor(**TINY, num_generations=2, prompts_per_step=1, max_completion_length=4, k_samples=3,
                              work_dir=str(tmp_path / "fits"))
    member.fit(X, two.target.to_numpy(), pairs=two)
    steps = [h for h in member.log_history_ if "reward" in h]
    assert len(steps) == 2 and all(h["reward"] == 0.0 for h in steps)  # a random model never says the label
    assert member.pair_ids_ == list(two.index)
    texts = member.sample_answers(X, pairs=two)
    assert [len(t) for t in texts] == [3, 3]
    # the random model's answers are unreadable: every pair falls back to the training median
    assert member.predict(X, pairs=two).tolist() == [0.5, 0.5] and member.invalid_pairs_ == 2
