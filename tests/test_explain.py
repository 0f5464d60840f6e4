"""`siqa explain`: exact group Shapley values of a run's score, and semantic difference maps checked against the
demo's known edits with the real packaged weights (EfficientNet-Lite0, PP-OCRv4, the Haar cascade)."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from toy_run import build_run, toy_extractors  # noqa: F401 (module-scoped autouse fixture)
import siqa
from blend.attribution import FeatureRows, ShapleyExplainer, feature_groups
from featurestore.datasets.demo import BOX_COLUMNS, DEGRADATIONS, META_FILE, make_demo_dataset
from featurestore.errors import SiqaError
from featurestore.semantic_map import SemanticMap, SemanticMapper, decoded_pair


# --- attributions ------------------------------------------------------------------------------------------
def _calibrated(X: np.ndarray, dense: dict[str, np.ndarray]) -> np.ndarray:
    """A pipeline-like function: interactions between groups, a dense block, then a nonlinear 0..5 calibrator."""
    blend = X[:, 0] * X[:, 1] - 0.5 * X[:, 2] + np.sin(X[:, 3]) * X[:, 0] + dense["c_block"].sum(axis=1) * X[:, 2]
    return 5.0 / (1.0 + np.exp(-blend))


def _brute_force_shapley(value, players: list[str]) -> dict[str, float]:
    """Shapley values by their definition: the mean marginal over every order of the players."""
    out = dict.fromkeys(players, 0.0)
    orders = list(itertools.permutations(players))
    for order in orders:
        for k, player in enumerate(order):
            out[player] += (value(set(order[:k + 1])) - value(set(order[:k]))) / len(orders)
    return out


def test_group_shapley_values_are_exact_and_add_up():
    rng = np.random.default_rng(0)
    columns, blocks = ["a_x", "a_y", "b_z", "c_w"], ["c_block"]
    groups = feature_groups(columns + blocks, ["a", "b", "c"])
    assert groups == {"a_x": "a", "a_y": "a", "b_z": "b", "c_w": "c", "c_block": "c"}
    background = FeatureRows(rng.normal(size=(5, 4)), {"c_block": rng.normal(size=(5, 3)).astype(np.float32)})
    row = FeatureRows(rng.normal(size=(1, 4)), {"c_block": rng.normal(size=(1, 3)).astype(np.float32)})
    attribution = ShapleyExplainer(_calibrated, columns, blocks, groups, background).explain(row)

    assert attribution.score == pytest.approx(_calibrated(row.X, row.dense)[0], abs=1e-12)
    assert attribution.baseline == pytest.approx(_calibrated(background.X, background.dense).mean(), abs=1e-12)
    assert attribution.baseline + sum(attribution.groups.values()) == pytest.approx(attribution.score, abs=1e-9)
    assert attribution.baseline + sum(attribution.features.values()) == pytest.approx(attribution.score, abs=1e-9)
    for group in "abc":  # the features of a group add up to the group
        assert sum(v for f, v in attribution.features.items() if groups[f] == group) == \
            pytest.approx(attribution.groups[group], abs=1e-9)

    def value(coalition: set[str]) -> float:
        X = np.where([groups[c] in coalition for c in columns], row.X[0], background.X)
        dense = {"c_block": row.dense["c_block"].repeat(5, 0) if "c" in coalition else background.dense["c_block"]}
        return float(_calibrated(X, dense).mean())

    expected = _brute_force_shapley(value, ["a", "b", "c"])
    for group in "abc":
        assert attribution.groups[group] == pytest.approx(expected[group], abs=1e-9)
    assert attribution.top(2)[0][0] == max(expected, key=lambda g: abs(expected[g]))


def test_feature_groups_fall_back_to_the_prefix_and_refuse_too_many():
    assert feature_groups(["psnr", "clip_cos", "clip_l14_cos"], ["clip", "clip_l14"]) == \
        {"psnr": "psnr", "clip_cos": "clip", "clip_l14_cos": "clip_l14"}
    columns = [f"g{i}_x" for i in range(17)]
    with pytest.raises(SiqaError, match="17 feature groups"):
        ShapleyExplainer(_calibrated, columns, [], feature_groups(columns, []),
                         FeatureRows(np.zeros((1, 17)), {}))


# --- the command on a fitted run ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("explain"))


def test_explain_a_split_adds_up_to_the_scores_siqa_predict_gives(toy, tmp_path, capsys):
    from cli import main

    out = tmp_path / "why"
    main(["explain", "--run", str(toy["run"]), "--split", "test", "--out", str(out), "--quiet"])
    assert capsys.readouterr().out.strip() == f"6 pair(s) explained -> {out / 'explanations.json'}"
    records = json.loads((out / "explanations.json").read_text())
    refs = [toy["data"] / "Test" / "Ref" / r["name"] for r in records]
    dists = [toy["data"] / "Test" / "Dist" / r["name"] for r in records]
    predicted = siqa.load(toy["run"]).score(refs, dists)
    for record, score in zip(records, predicted):
        assert set(record) >= {"name", "score", "baseline", "attributions", "peak_x", "peak_y", "map"}
        assert record["score"] == pytest.approx(score, abs=1e-6)
        assert record["baseline"] + sum(record["attributions"].values()) == pytest.approx(score, abs=1e-6)
        assert record["baseline"] + sum(record["feature_attributions"].values()) == pytest.approx(score, abs=1e-6)
        assert set(record["attributions"]) == {"toymean", "toymse"}
        values = np.load(out / record["map_array"], allow_pickle=False)
        height, width = np.asarray(Image.open(record["dist"])).shape[:2]
        assert values.shape == (height, width) and values.dtype == np.float32
        assert (record["peak_x"], record["peak_y"]) == SemanticMap(values).peak
        with Image.open(out / record["map"]) as png:
            assert png.format == "PNG" and png.width > 2 * width


def test_explain_refuses_a_run_folder_and_predict_explain_adds_the_top_groups(toy, tmp_path, capsys):
    from cli import main

    with pytest.raises(SystemExit):
        main(["explain", "--run", str(toy["run"]), "--split", "test", "--out", str(toy["run"] / "why")])
    assert "inside the run folder" in capsys.readouterr().err and not (toy["run"] / "why").exists()
    scores = tmp_path / "scores.csv"
    ref, dist = toy["data"] / "Test" / "Ref" / "coffee_0.png", toy["data"] / "Test" / "Dist" / "coffee_0.png"
    main(["predict", "--run", str(toy["run"]), "--ref", str(ref), "--dist", str(dist), "--explain",
          "--out", str(scores), "--quiet"])
    written = pd.read_csv(scores)
    # the user's columns and the prediction's flags first (issue 26), then the three top groups
    assert list(written.columns[:2]) == ["name", "score"] and "flagged" in written.columns
    assert list(written.columns[-6:]) == ["attribution_1", "attribution_1_value", "attribution_2",
                                          "attribution_2_value", "attribution_3", "attribution_3_value"]
    assert set(written[["attribution_1", "attribution_2"]].iloc[0]) == {"toymean", "toymse"}


# --- the maps against known edits, with the real weights ---------------------------------------------------
@pytest.mark.slow
def test_maps_point_at_localized_edits_and_spread_over_whole_image_ones(tmp_path):
    data = tmp_path / "demo"
    make_demo_dataset(data, n_train=36, n_val=0, n_test=0)
    mapper = SemanticMapper()
    hits, localized, photometric = [], [], []
    for row in pd.read_csv(data / META_FILE, keep_default_na=False).itertuples():
        semantic = mapper.map(decoded_pair(str(data / "Train" / "Ref" / row.name), str(data / "Train" / "Dist" / row.name)))
        assert semantic.values.min() >= 0 and semantic.values.max() <= 1
        if DEGRADATIONS[row.degradation].localized:
            hits.append(semantic.points_into(tuple(int(getattr(row, c)) for c in BOX_COLUMNS)))
            localized.append(semantic.concentration)
        elif DEGRADATIONS[row.degradation].kind == "photometric":
            photometric.append(semantic.concentration)
    assert len(hits) >= 20 and len(photometric) >= 8
    assert np.mean(hits) >= 0.7, hits
    # spread: a whole-image degradation's map holds far less of its mass in its top tenth than a local edit's
    assert np.mean(photometric) < 0.3 < np.mean(localized), (photometric, localized)
    assert max(photometric) < np.median(localized)


def test_concentration_and_pointing_game_on_known_maps():
    even = SemanticMap(np.full((20, 30), 0.5, dtype=np.float32))
    assert even.concentration == pytest.approx(0.1, abs=1e-6)
    spot = np.zeros((20, 30), dtype=np.float32)
    spot[5:7, 20:23] = 1.0
    spot[6, 21] = 2.0
    assert SemanticMap(spot).concentration == 1.0 and SemanticMap(spot).peak == (21, 6)
    assert SemanticMap(spot).points_into((25, 10, 28, 12), margin=8)
    assert not SemanticMap(spot).points_into((25, 10, 28, 12), margin=3)
    assert math.isclose(SemanticMap(np.zeros((4, 4), np.float32)).concentration, 0.1)


def test_a_dino_extractor_adds_its_patch_tokens_as_a_signal():
    from featurestore.extractors.dino import DinoExtractor
    from featurestore.io import DecodedImage, DecodedPair
    from featurestore.semantic_map import patch_extractor

    dino = DinoExtractor(model="facebook/dinov2-small", random_init=True, sizes=[112], grid=4, patch_proj_dim=0)
    assert patch_extractor([SemanticMapper().regions, dino]) is dino
    assert patch_extractor([DinoExtractor(model="facebook/dinov2-small", weights="/nonexistent")]) is None
    rgb = np.full((96, 128, 3), 128, np.uint8)
    changed = rgb.copy()
    changed[10:40, 10:50] = 255
    pair = DecodedPair("p", DecodedImage("r", rgb), DecodedImage("d", changed))
    semantic = SemanticMapper(patches=dino).map(pair)
    assert set(semantic.signals) == {"classes", "features", "text", "faces", "patches"}
    assert semantic.signals["patches"].shape == (96, 128)
    assert np.allclose(semantic.values, np.mean(list(semantic.signals.values()), axis=0), atol=1e-6)
