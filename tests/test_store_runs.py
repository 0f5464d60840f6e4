"""A run and the store it was fit on (issue 12): direction, absolute paths, pinned feature folders, gc, and
missing features."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toy_run import CONFIG, make_dataset, toy_extractors  # noqa: F401 (module-scoped autouse fixture)
import cli
from blend.run import load_run, run_oof
from blend.submission import read_submission
from blend.settings import load_settings, settings_from
from featurestore.config import build_extractors, read_toml
from featurestore.datasets import load_pairs
from featurestore.errors import SiqaError
from featurestore.store import FeatureStore
from tabular.data import TabularData


def _cli(*args):
    try:
        cli.main([str(a) for a in args])
    except SystemExit as exit_:
        assert exit_.code in (0, None), f"siqa {' '.join(map(str, args))} exited {exit_.code}"


@pytest.fixture(scope="module")
def made(tmp_path_factory, ):
    """A dataset, a store and a run made with relative paths from the folder `work`."""
    import os

    tmp = tmp_path_factory.mktemp("storeruns")
    work = tmp / "work"
    work.mkdir()
    make_dataset(work / "data")
    (work / "toy.toml").write_text(CONFIG)
    here = os.getcwd()
    os.chdir(work)
    try:
        _cli("features", "--data", "data", "--store", "store", "--config", "toy.toml", "--quiet")
        _cli("oof", "--store", "store", "--run", "run", "--config", "toy.toml", "--quiet", "--json")
    finally:
        os.chdir(here)
    return {"tmp": tmp, "work": work, "store": work / "store", "run": work / "run", "config": work / "toy.toml"}


def _scores(zip_path: Path) -> pd.Series:
    table, _ = read_submission(zip_path)
    return table.set_index("picture_name")["Score"].sort_index()


def test_store_and_run_record_absolute_paths(made):
    pairs = FeatureStore(made["store"]).pairs()
    assert pairs.ref_path.map(lambda p: Path(p).is_absolute()).all()
    origin = load_run(made["run"]).summary["source"]["origin"]
    assert origin["root"] == str(made["store"]) and Path(origin["root"]).is_absolute()
    assert set(origin["folders"]) == {"toymean", "toymse"} and origin["labelled_sha256"]


def test_submit_from_another_folder_scores_the_store_the_run_was_fit_on(made, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # a decoy store where the run would look if it remembered a relative path
    other = elsewhere / "data"
    make_dataset(other, seed=3)
    FeatureStore(elsewhere / "store").extract(load_pairs(other), build_extractors(load_settings(made["config"]).extractors),
                                              progress=False)
    _cli("submit", "--run", made["run"], "--out", tmp_path / "here.zip", "--quiet")
    monkeypatch.chdir(elsewhere)
    _cli("submit", "--run", made["run"], "--out", tmp_path / "there.zip", "--quiet")
    pd.testing.assert_series_equal(_scores(tmp_path / "here.zip"), _scores(tmp_path / "there.zip"))


def test_a_run_scores_with_its_own_feature_folders_and_gc_keeps_them(made, tmp_path):
    store, run = tmp_path / "store", tmp_path / "run"
    shutil.copytree(made["store"], store)
    (store / "runs.json").unlink()  # the copy forgets the module's run: only this test's run names folders
    run_oof(TabularData.from_store(store), load_settings(made["config"]), run, progress=False)
    _cli("submit", "--run", run, "--out", tmp_path / "before.zip", "--quiet")
    pinned = load_run(run).summary["source"]["origin"]["folders"]["toymean"]

    # the same extractor under another config: the view now points at a new folder
    config = read_toml(made["config"])
    config["extractors"]["toymean"] = {"scale": 7.0}
    FeatureStore(store).extract(load_pairs(made["work"] / "data"), build_extractors(settings_from(config).extractors),
                                progress=False)
    assert FeatureStore(store).views()["toymean"]["folder"] != pinned
    _cli("submit", "--run", run, "--out", tmp_path / "after.zip", "--quiet")
    pd.testing.assert_series_equal(_scores(tmp_path / "before.zip"), _scores(tmp_path / "after.zip"))

    assert FeatureStore(store).gc() == []  # the run still reads the old folder
    assert (store / "features" / pinned).is_dir()
    assert [e["path"] for e in json.loads((store / "runs.json").read_text()).values()] == [str(run)]
    shutil.rmtree(run)
    assert [p.name for p in FeatureStore(store).gc()] == [pinned]
    assert json.loads((store / "runs.json").read_text()) == {}


def test_a_run_says_why_it_cannot_score_a_changed_or_moved_store(made, tmp_path):
    store, run = tmp_path / "store", tmp_path / "run"
    shutil.copytree(made["store"], store)
    run_oof(TabularData.from_store(store), load_settings(made["config"]), run, progress=False)
    pinned = load_run(run).summary["source"]["origin"]["folders"]["toymse"]
    shutil.rmtree(store / "features" / pinned)
    with pytest.raises(SystemExit):
        cli.main(["submit", "--run", str(run), "--quiet"])
    with pytest.raises(SiqaError, match=rf"{pinned}: the feature folder of 'toymse' this run was fit on is gone"):
        TabularData.from_origin(load_run(run).summary["source"]["origin"])
    shutil.rmtree(store)
    with pytest.raises(SiqaError, match="the feature store this run was fit on is not there any more"):
        TabularData.from_origin(load_run(run).summary["source"]["origin"])


def test_lower_better_is_honoured_for_a_store(made, tmp_path):
    run = tmp_path / "run"
    _cli("oof", "--store", made["store"], "--run", run, "--config", made["config"], "--lower-better", "--quiet",
         "--json")
    fitted = load_run(run)
    assert fitted.summary["source"]["higher_better"] is False
    assert fitted.summary["source"]["origin"]["lower_better"] is True
    oof = fitted.oof()
    np.testing.assert_array_equal(oof["target"], -oof["label"])
    again = TabularData.from_origin(fitted.summary["source"]["origin"])
    assert again.higher_better is False


def test_labelled_pairs_without_features_are_refused(made, tmp_path, caplog):
    store = tmp_path / "store"
    table = load_pairs(made["work"] / "data")
    victim = table.df[table.df.split == "train"].ref_sha256.iloc[0]
    tables = read_toml(made["config"])
    tables["extractors"]["toymse"] = {"fail_on": victim}
    config = settings_from(tables)
    FeatureStore(store).extract(table, build_extractors(config.extractors), progress=False)
    data = TabularData.from_store(store)
    n_missing = int(((table.df.ref_sha256 == victim) & table.df.label.notna()).sum())
    assert data.missing == {"toymse": n_missing}
    with pytest.raises(SiqaError, match=rf"labelled pairs without features from toymse \({n_missing} of 24\).*"
                                        r"--allow-missing"):
        run_oof(data, config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    with caplog.at_level(logging.WARNING):
        run_oof(data, config, tmp_path / "run", progress=False, allow_missing=True)
    assert f"toymse ({n_missing} of 24)" in caplog.text
