"""The nested out-of-fold run: run folder, honest (leak-free) CV, determinism, prediction and submission."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from blend.runfolder import sign
from blend.run import FIXED_COLUMNS, HEADLINE, load_run, predict, run_oof
from blend.submission import read_submission, submit_run, write_submission
from featurestore.errors import SiqaError
from tabular import metrics
from tabular.data import TabularData
from tabular.meta import DenseMetaFeatures

# the fast preset cut to quick members; three folds, one repeat (two where repeats are tested)
SMALL = {"tabular": {"preset": "fast", "pool": {"pairwise_mlp": {"enabled": False},
                                                "lightgbm": {"n_estimators": 20}}}}


def _synthetic(n_groups=12, per_group=8, seed=0, dense=True, unlabelled=6) -> TabularData:
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=["a", "b", "c", "d"])
    X["constant"] = 1.0
    y = (X["a"] + 0.5 * X["b"] ** 2 + 0.3 * rng.normal(size=n)).to_numpy().copy()
    blocks = {"emb_absdiff": (np.outer(y, np.ones(16)) + rng.normal(0, 2, (n, 16))).astype(np.float32)} if dense else {}
    y[n - unlabelled:] = np.nan
    split = np.where(np.isnan(y), "test", "train").astype(object)
    return TabularData(ids=np.array([f"p{i}" for i in range(n)], dtype=object), X=X, y=y,
                       groups=np.repeat([f"ref{g}" for g in range(n_groups)], per_group).astype(object),
                       split=split, names=np.array([f"{i:06d}.png" for i in range(n)], dtype=object),
                       dense=blocks, source="synthetic")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "run"
    data = _synthetic()
    return data, path, run_oof(data, SMALL, path, progress=False)


def test_run_folder_contents(run):
    data, path, summary = run
    assert {p.name for p in path.iterdir()} == {"config.json", "oof.parquet", "leaderboard.csv", "run.json", "models",
                                                 "siqa-run.json"}
    oof = pd.read_parquet(path / "oof.parquet")
    members = summary["members"]
    assert list(oof.columns) == ["id", "group", "label", "target", "repeat", "fold", *members, "blend", HEADLINE,
                                 "prediction"]
    assert set(FIXED_COLUMNS) <= set(oof.columns)
    assert len(oof) == data.labelled.sum() and oof["id"].is_unique
    assert oof[HEADLINE].between(0, 5).all()
    board = pd.read_csv(path / "leaderboard.csv")
    assert list(board.columns) == ["model", "srocc", "plcc", "krcc", "rmse", "final", "final_std", "final_fold_mean",
                                   "final_low", "final_high", "fit_seconds"]
    assert set(board["model"]) == {*members, "blend", HEADLINE}
    assert board["final"].is_monotonic_decreasing
    row = board.set_index("model").loc["ridge"]
    assert row["final"] == pytest.approx(metrics.final(oof["ridge"], oof["target"]), abs=1e-6)
    assert summary["final"] == pytest.approx(metrics.final(oof[HEADLINE], oof["target"]))
    # one repeat: no spread to report, shown as –, not ± 0.0000
    assert board["final_std"].isna().all() and summary["final_std"] is None
    assert "± –" in summary["leaderboard_text"] and "± 0.0000" not in summary["leaderboard_text"]
    folds = [metrics.final(part[HEADLINE], part["target"]) for _, part in oof.groupby("fold")]
    assert summary["final_fold_mean"] == pytest.approx(np.mean(folds))
    assert (board["final_low"] <= board["final_high"]).all()
    assert summary["final_low"] < summary["final_high"]
    assert summary["dropped_columns"] == ["constant"] and "meta_emb_absdiff" not in summary["columns"]
    assert summary["n_rows"] == data.labelled.sum() and summary["n_groups"] == 12
    saved = json.loads((path / "run.json").read_text())
    weights = saved["blend"]["weights"]
    assert sum(weights.values()) == pytest.approx(1.0) and min(weights.values()) >= 0
    assert json.loads((path / "config.json").read_text())["tabular"]["preset"] == "fast"
    assert summary["final"] > 0.7  # the signal is easy; an honest CV still finds it
    # the headline against the hindsight-best member and the raw feature: the board's own numbers, paired
    versus = saved["versus"]
    best = board[board["model"].isin(members)].iloc[0]
    assert versus["best_member"]["versus"] == best["model"]
    assert versus["best_member"]["gap"] == pytest.approx(summary["final"] - best["final"], abs=1e-6)
    assert versus["best_member"]["selected_draws"] > 0 and versus["best_member"]["optimism"] >= 0
    raw = board.set_index("model").loc["raw_feature"]
    assert versus["raw_feature"]["gap"] == pytest.approx(summary["final"] - raw["final"], abs=1e-6)
    assert f"best member ({best['model']}, picked with hindsight)" in summary["leaderboard_text"]
    assert "best raw feature as it is (raw_feature)" in summary["leaderboard_text"]


def test_outer_folds_group_rows_and_models_never_saw_their_fold(run):
    data, path, _ = run
    oof = pd.read_parquet(path / "oof.parquet")
    assert (oof.groupby("group")["fold"].nunique() == 1).all()
    # the per-fold blend weights in run.json were fit without that fold: one entry per outer fold
    assert len(load_run(path).summary["nested_blends"]) == 3


def test_predict_and_submission(run, tmp_path):
    data, path, _ = run
    scores = predict(path, data.subset(~data.labelled))
    assert scores.shape == (6,) and np.isfinite(scores).all() and ((scores >= 0) & (scores <= 5)).all()
    zip_path = write_submission(path, data, tmp_path / "sub.zip", runtime_per_image=0.1, cpu=True)
    table, fields = read_submission(zip_path)
    assert sorted(table["picture_name"]) == sorted(data.names[~data.labelled])
    np.testing.assert_allclose(table.set_index("picture_name").loc[data.names[~data.labelled], "Score"], scores)
    assert fields["CPU[1] / GPU[0]"] == "1"
    again = write_submission(path, data, tmp_path / "again.zip", runtime_per_image=0.1, cpu=True)
    assert again.read_bytes() == zip_path.read_bytes()
    with pytest.raises(SiqaError, match="no rows in split 'val'"):
        write_submission(path, data, tmp_path / "val.zip", 0.1, True, split="val")
    missing = data.subset(~data.labelled)
    missing.X = missing.X.drop(columns=["a"])
    with pytest.raises(SiqaError, match="missing 1 feature.*: a"):
        predict(path, missing)


def test_table_run_submits_from_its_own_source(tmp_path):
    rng = np.random.default_rng(2)
    n = 60
    quality = rng.normal(size=n)
    label = np.where(np.arange(n) < 48, quality + 0.1 * rng.normal(size=n), np.nan)
    frame = pd.DataFrame({"ref": np.repeat(np.arange(12), 5), "dist_name": [f"{i:03d}.png" for i in range(n)],
                          "mos": label, "metric": np.exp(-quality)})
    frame.to_csv(tmp_path / "t.csv", index=False)
    data = TabularData.from_table(tmp_path / "t.csv", label="mos", group="ref")
    summary = run_oof(data, SMALL, tmp_path / "run", progress=False)
    assert {"final", "srocc", "plcc", "n_rows", "n_groups"} <= set(summary["headline"])
    assert summary["headline"]["n_rows"] == 48 and "CV Final" in summary["leaderboard_text"]
    path, n_predicted = submit_run(tmp_path / "run", cpu=True, progress=False)
    assert path == tmp_path / "run" / "submission.zip" and n_predicted == 12
    table, fields = read_submission(path)
    assert sorted(table["picture_name"]) == [f"{i:03d}.png" for i in range(48, 60)]
    assert float(fields["runtime per image [s]"]) >= 0
    # better metric value (lower) -> higher score
    assert metrics.srocc(table["Score"], -frame["metric"].to_numpy()[48:]) > 0.9


def test_same_seed_gives_identical_oof_bytes(tmp_path):
    data = _synthetic(dense=False)
    config = {"tabular": {**SMALL["tabular"], "repeats": 2}}
    run_oof(data, config, tmp_path / "one", progress=False)
    # in worker processes: the same bytes, the number of jobs changes nothing
    run_oof(data, {"tabular": {**config["tabular"], "jobs": 2}}, tmp_path / "two", progress=False)
    assert (tmp_path / "one" / "oof.parquet").read_bytes() == (tmp_path / "two" / "oof.parquet").read_bytes()
    oof = pd.read_parquet(tmp_path / "one" / "oof.parquet")
    assert sorted(oof["repeat"].unique()) == [0, 1]
    board = pd.read_csv(tmp_path / "one" / "leaderboard.csv")
    assert (board["final_std"] >= 0).all() and board["final_std"].max() > 0


def test_a_feature_predictive_only_inside_training_folds_scores_nothing(tmp_path):
    """Each reference has its own label level and its own random feature value: a model can memorise
    reference -> label, which only helps if a reference sits on both sides of a split."""
    rng = np.random.default_rng(3)
    n_groups, per_group = 15, 6
    level = rng.normal(size=n_groups)
    code = rng.normal(size=(n_groups, 3))
    groups = np.repeat(np.arange(n_groups), per_group)
    X = pd.DataFrame(code[groups] + rng.normal(0, 0.01, (groups.size, 3)), columns=["c0", "c1", "c2"])
    y = level[groups] + rng.normal(0, 0.05, groups.size)
    data = TabularData(ids=np.arange(groups.size).astype(str).astype(object), X=X, y=y,
                       groups=groups.astype(str).astype(object), split=np.full(groups.size, "train", dtype=object),
                       names=np.arange(groups.size).astype(str).astype(object), source="memorise")
    config = {"tabular": {"preset": "fast", "pool": {"pairwise_mlp": {"enabled": False},
                                                     "extratrees": {"n_estimators": 50}}}}
    summary = run_oof(data, config, tmp_path / "run", progress=False)
    assert summary["final"] < 0.45
    # the same trees, scored on rows they were fit on, look excellent: that is the leak grouping prevents
    trees = load_run(tmp_path / "run").pipeline.predict_frame(data)["extratrees"]
    assert metrics.final(trees.to_numpy(), y) > 0.9


def test_dense_meta_features_are_out_of_fold():
    rng = np.random.default_rng(0)
    n = 120
    noise = rng.normal(size=(n, 400)).astype(np.float32)  # wider than tall: a Ridge can fit anything
    y = rng.normal(size=n)
    groups = np.repeat(np.arange(20), 6)
    meta = DenseMetaFeatures(alphas=(1e-4,), n_splits=4).fit_transform({"noise": noise}, y, groups)
    assert abs(metrics.plcc(meta["meta_noise"], y)) < 0.35
    in_sample = DenseMetaFeatures(alphas=(1e-4,), n_splits=4)
    in_sample.fit_transform({"noise": noise}, y, groups)
    assert metrics.plcc(in_sample.transform({"noise": noise})["meta_noise"], y) > 0.95


def test_lower_better_table_reports_positive_correlations(tmp_path):
    rng = np.random.default_rng(1)
    n = 72
    quality = rng.normal(size=n)
    frame = pd.DataFrame({"image": np.repeat(np.arange(12), 6), "dmos": -quality + 0.2 * rng.normal(size=n),
                          "DSSIM": np.exp(-quality), "noise": rng.normal(size=n)})
    frame.to_csv(tmp_path / "t.csv", index=False)
    data = TabularData.from_table(tmp_path / "t.csv", label="dmos", group="image", lower_better=True)
    summary = run_oof(data, SMALL, tmp_path / "run", progress=False)
    assert summary["final"] > 0.8 and summary["srocc"] > 0.8
    assert summary["best_model_final"] > 0.8


def test_unusable_data_is_a_clear_error(tmp_path):
    data = _synthetic(n_groups=2, per_group=10, dense=False)
    with pytest.raises(SiqaError, match="synthetic: 2 reference group\\(s\\) cannot fill 3 grouped folds"):
        run_oof(data, SMALL, tmp_path / "run", progress=False)
    flat = _synthetic(dense=False)
    flat.X = flat.X.assign(a=1.0, b=np.nan, c=2.0, d=3.0)
    with pytest.raises(SiqaError, match="every feature column is constant or empty"):
        run_oof(flat, SMALL, tmp_path / "run", progress=False)
    unlabelled = _synthetic(dense=False)
    unlabelled.y[:] = np.nan
    with pytest.raises(SiqaError, match="no labelled rows"):
        run_oof(unlabelled, SMALL, tmp_path / "run", progress=False)
    with pytest.raises(SiqaError, match=r"\[tabular\] folds = 2: Input should be greater than or equal to 3"):
        run_oof(_synthetic(dense=False), {"tabular": {**SMALL["tabular"], "folds": 2}}, tmp_path / "run", progress=False)
    with pytest.raises(SiqaError, match=r"\[tabular\] preset = 'huge': unknown preset"):
        run_oof(_synthetic(dense=False), {"tabular": {"preset": "huge"}}, tmp_path / "run", progress=False)


def test_programs_of_another_format_are_a_clear_error(run, tmp_path):
    import json
    import shutil

    _, path, _ = run
    old = tmp_path / "old"
    shutil.copytree(path, old)
    text = json.loads((old / "models" / "inference.json").read_text())
    (old / "models" / "inference.json").write_text(json.dumps({**text, "format": 0}))
    sign(old, "0" * 32)
    with pytest.raises(SiqaError, match=r"inference.json: written by another siqa \(.*\); fit the run again"):
        load_run(old)


def test_time_limit_drops_repeats_and_members_and_says_so(tmp_path):
    data = _synthetic(dense=False)
    config = {"tabular": {**SMALL["tabular"], "repeats": 2, "time_limit": 0.001}}  # nothing fits in 1 ms
    summary = run_oof(data, config, tmp_path / "run", progress=False)
    plan = summary["plan"]
    assert plan["dropped_repeats"] == 1 and summary["repeats"] == 1
    assert len(summary["members"]) == 1 and len(plan["dropped_members"]) >= 3
    assert "dropped member(s)" in summary["leaderboard_text"]
    board = pd.read_csv(tmp_path / "run" / "leaderboard.csv")
    assert set(board["model"]) == {*summary["members"], "blend", HEADLINE}
    assert len(pd.read_parquet(tmp_path / "run" / "oof.parquet")) == data.labelled.sum()
    assert np.isfinite(predict(tmp_path / "run", data)).all()


def test_min_rows_keeps_a_member_off_smaller_tables_and_says_so(tmp_path):
    data = _synthetic(dense=False)
    n = int(data.labelled.sum())
    pool = {"ridge": {}, "extratrees": {"n_estimators": 20, "min_rows": n + 1},
            "lightgbm": {"n_estimators": 20, "seeds": [0], "min_rows": n}}
    config = {"tabular": {**SMALL["tabular"], "pool": pool}}
    summary = run_oof(data, config, tmp_path / "run", progress=False)
    # min_rows n: the table has n rows, enough; the fast preset's CatBoost waits for 5000
    assert "lightgbm_s0" in summary["members"] and not {"extratrees", "catboost_s0"} & set(summary["members"])
    assert summary["member_notes"]["catboost_s0"] == f"left out: min_rows 5000 > {n} labelled rows"
    assert summary["member_notes"]["extratrees"] == f"left out: min_rows {n + 1} > {n} labelled rows"
    assert "extratrees: left out" in summary["leaderboard_text"]
    oof = pd.read_parquet(tmp_path / "run" / "oof.parquet")
    assert "extratrees" not in oof.columns and "lightgbm_s0" in oof.columns
    assert np.isfinite(predict(tmp_path / "run", data)).all()
    with pytest.raises(SiqaError, match=r"\[tabular.pool.ridge\] min_rows = 'many': Input should be a valid integer"):
        run_oof(data, {"tabular": {**SMALL["tabular"], "pool": {"ridge": {"min_rows": "many"}}}},
                tmp_path / "bad", progress=False)
