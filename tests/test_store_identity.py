"""A store is a store, a run is a run (issue 23, findings 3, 4 and 6): each is recognised by the manifest siqa
writes into it, `store gc` keeps what any registered run uses (followed by id when moved, kept while an oof
is fitting), and `runs/latest` is a link siqa keeps in its own runs folder only."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from toy_run import CONFIG, make_dataset, toy_extractors  # noqa: F401 (module-scoped autouse fixture)
from conftest import file_bytes, siqa_exit_code
from blend import run as run_module
from blend.run import load_run, run_oof
from blend.settings import load_settings, settings_from
from featurestore.config import build_extractors, read_toml
from featurestore.datasets import load_pairs
from featurestore.errors import SiqaError
from featurestore.store import FeatureStore
from tabular.data import TabularData


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("identity")
    data = make_dataset(tmp / "data")
    (tmp / "toy.toml").write_text(CONFIG)
    assert siqa_exit_code("features", "--data", data, "--store", tmp / "store", "--config", tmp / "toy.toml", "--quiet") == 0
    return {"tmp": tmp, "data": data, "store": tmp / "store", "config": tmp / "toy.toml"}


@pytest.fixture
def store(made, tmp_path):
    shutil.copytree(made["store"], tmp_path / "store")
    (tmp_path / "store" / "runs.json").unlink(missing_ok=True)
    return tmp_path / "store"


def _new_view(made, store):
    """The same extractor under another config: the view moves, the old folder is left to runs and gc."""
    tables = read_toml(made["config"])
    tables["extractors"]["toymean"] = {"scale": 7.0}
    FeatureStore(store).extract(load_pairs(made["data"]), build_extractors(settings_from(tables).extractors),
                                progress=False)


def _pinned(run: Path) -> str:
    return load_run(run).summary["source"]["origin"]["folders"]["toymean"]


# --- a store is a store -----------------------------------------------------------------------------------

def test_features_never_overwrites_the_users_pairs_table_taken_for_a_store(made, tmp_path, capsys):
    """Finding 6: `siqa features --data D/pairs.parquet --store D --replace`."""
    folder = tmp_path / "D"
    folder.mkdir()
    load_pairs(made["data"]).df[["ref_path", "dist_path", "label"]].rename(
        columns={"ref_path": "ref_name", "dist_path": "dist_name", "label": "mos"}).to_parquet(folder / "pairs.parquet")
    before = file_bytes(folder)
    assert siqa_exit_code("features", "--data", folder / "pairs.parquet", "--store", folder, "--replace", "--allow-outside-root",
                 "--config", made["config"], "--quiet") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a siqa feature store (no siqa-store.json; it holds pairs.parquet)" in err
    assert file_bytes(folder) == before


def test_a_folder_with_someone_elses_pairs_parquet_is_one_line(made, tmp_path, capsys):
    """Finding 10: another program's pairs.parquet (other columns) is refused, not read into a traceback."""
    folder = tmp_path / "theirs"
    folder.mkdir()
    pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).to_parquet(folder / "pairs.parquet")
    (folder / "views.json").write_text("[1, 2]")
    before = file_bytes(folder)
    assert siqa_exit_code("features", "--data", made["data"], "--store", folder, "--config", made["config"], "--quiet") == 1
    err = capsys.readouterr().err
    assert err.startswith("siqa: error: ") and err.count("\n") == 1 and "not a siqa feature store" in err
    assert file_bytes(folder) == before


def test_a_store_of_an_older_siqa_is_recognised_by_its_own_files_and_marked(made, tmp_path):
    older = tmp_path / "older"
    shutil.copytree(made["store"], older)
    (older / "siqa-store.json").unlink()
    FeatureStore(older).extract(load_pairs(made["data"]), build_extractors(load_settings(made["config"]).extractors), progress=False)
    assert json.loads((older / "siqa-store.json").read_text()) == {"siqa_store": 1}
    # a marked store may hold the user's own files too: it is still the store it was
    (older / "notes.txt").write_text("mine")
    FeatureStore(older).extract(load_pairs(made["data"]), build_extractors(load_settings(made["config"]).extractors), progress=False)
    assert (older / "notes.txt").read_text() == "mine"


def test_oof_on_a_folder_that_is_not_a_store_is_refused_before_fitting(made, tmp_path, monkeypatch):
    folder = tmp_path / "notastore"
    shutil.copytree(made["store"], folder)
    data = TabularData.from_store(folder)
    (folder / "siqa-store.json").unlink()
    (folder / "mine.csv").write_text("a,b\n")
    monkeypatch.setattr(run_module, "NestedCV", lambda *a, **k: pytest.fail("fitted before the store was checked"))
    with pytest.raises(SiqaError, match="not a siqa feature store"):
        run_oof(data, load_settings(made["config"]), tmp_path / "run", progress=False)
    assert not (folder / "runs.json").exists()


def test_a_store_that_cannot_take_the_run_is_found_before_fitting(made, store, tmp_path, monkeypatch):
    """Finding 9: `oof` on a store it cannot register in fitted everything, wrote a signed run, then failed."""
    data = TabularData.from_store(store)
    (store / "runs.json").mkdir()  # cannot be replaced by a file: what a read-only store does to a root user too
    monkeypatch.setattr(run_module, "NestedCV", lambda *a, **k: pytest.fail("fitted before the store was checked"))
    with pytest.raises(SiqaError, match="runs.json"):
        run_oof(data, load_settings(made["config"]), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_read_only_store_is_found_before_fitting(made, store, tmp_path, monkeypatch):
    import os

    data = TabularData.from_store(store)
    os.chmod(store, 0o555)
    try:
        if os.access(store, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        monkeypatch.setattr(run_module, "NestedCV", lambda *a, **k: pytest.fail("fitted on a read-only store"))
        with pytest.raises(SiqaError, match=str(store)):
            run_oof(data, load_settings(made["config"]), tmp_path / "run", progress=False)
    finally:
        os.chmod(store, 0o755)


# --- gc keeps what runs use ------------------------------------------------------------------------------

def test_gc_follows_a_moved_run_by_its_id(made, store, tmp_path):
    """Finding 4: `mv runs/r runs/best`, then gc, deleted the features the run reads."""
    runs = tmp_path / "runs"
    run_oof(TabularData.from_store(store), load_settings(made["config"]), runs / "r", progress=False)
    pinned = _pinned(runs / "r")
    _new_view(made, store)
    (runs / "r").rename(runs / "best")
    assert FeatureStore(store).gc() == []
    assert (store / "features" / pinned).is_dir()
    registered = json.loads((store / "runs.json").read_text())
    assert [e["path"] for e in registered.values()] == [str(runs / "best")]
    assert siqa_exit_code("submit", "--run", runs / "best", "--out", tmp_path / "s.zip", "--quiet") == 0


def test_gc_refuses_when_it_cannot_tell_where_a_run_went(made, store, tmp_path, capsys):
    runs = tmp_path / "runs"
    run_oof(TabularData.from_store(store), load_settings(made["config"]), runs / "r", progress=False)
    pinned = _pinned(runs / "r")
    _new_view(made, store)
    runs.rename(tmp_path / "elsewhere")  # the run's whole folder moved: nothing beside it to search
    assert siqa_exit_code("store", "gc", "--store", store, "--quiet") == 1
    assert "where it went cannot be told" in capsys.readouterr().err
    assert (store / "features" / pinned).is_dir()
    assert siqa_exit_code("store", "gc", "--store", store, "--forget-missing", "--quiet") == 0
    assert not (store / "features" / pinned).exists()


def test_gc_forgets_a_run_replaced_by_a_new_one_at_the_same_place(made, store, tmp_path):
    run = tmp_path / "run"
    for _ in range(2):
        run_oof(TabularData.from_store(store), load_settings(made["config"]), run, progress=False)
    registered = json.loads((store / "runs.json").read_text())
    assert [e["path"] for e in registered.values()] == [str(run)]


def test_gc_during_an_oof_keeps_the_folders_it_is_fitting_on(made, store, tmp_path, monkeypatch):
    """Finding 4: gc while an oof fitted deleted its feature folder; the oof exited 0 and its submit failed."""
    data = TabularData.from_store(store)
    pinned = data.origin["folders"]["toymean"]
    _new_view(made, store)
    removed = []

    class GcMeanwhile(run_module.NestedCV):
        def run(self, *args, **kwargs):
            removed.extend(FeatureStore(store).gc())
            return super().run(*args, **kwargs)

    monkeypatch.setattr(run_module, "NestedCV", GcMeanwhile)
    run_oof(data, load_settings(made["config"]), tmp_path / "run", progress=False)
    assert pinned not in [p.name for p in removed] and (store / "features" / pinned).is_dir()
    assert siqa_exit_code("submit", "--run", tmp_path / "run", "--out", tmp_path / "s.zip", "--quiet") == 0


def test_an_oof_whose_features_were_collected_before_it_registered_is_refused(made, store, tmp_path):
    data = TabularData.from_store(store)
    _new_view(made, store)
    FeatureStore(store).gc()  # between reading the features and registering the run
    with pytest.raises(SiqaError, match="gone since the features were read"):
        run_oof(data, load_settings(made["config"]), tmp_path / "run", progress=False)


# --- runs/latest ------------------------------------------------------------------------------------------

def test_runs_latest_is_a_link_siqa_keeps_and_only_in_its_own_runs_folder(made, tmp_path, monkeypatch, capsys):
    """Finding 3: every oof made or replaced a `latest` link in whatever folder held its run."""
    monkeypatch.chdir(tmp_path)
    oof = ("oof", "--store", made["store"], "--config", made["config"], "--quiet", "--json")
    assert siqa_exit_code(*oof) == 0
    first = Path("runs/latest").resolve()
    assert Path("runs/latest").is_symlink() and first.parent == (tmp_path / "runs").resolve()
    assert siqa_exit_code(*oof) == 0
    assert Path("runs/latest").resolve() != first and first.is_dir()  # a new run; the older one kept
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "latest").write_text("the user's own file")
    assert siqa_exit_code(*oof, "--run", tmp_path / "mine" / "r") == 0
    assert (tmp_path / "mine" / "latest").read_text() == "the user's own file"
    assert siqa_exit_code(*oof, "--run", tmp_path / "other" / "r") == 0
    assert not (tmp_path / "other" / "latest").exists()


def test_a_real_runs_latest_folder_is_never_used_silently(made, tmp_path, monkeypatch, capsys):
    """Finding 9: after an older oof made runs/latest a real folder, a plain submit submitted that older run."""
    monkeypatch.chdir(tmp_path)
    run_oof(TabularData.from_store(made["store"]), load_settings(made["config"]), tmp_path / "runs" / "latest",
            progress=False)
    before = file_bytes(tmp_path / "runs" / "latest")
    capsys.readouterr()
    assert siqa_exit_code("submit", "--quiet") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "runs/latest: a real folder, not the link siqa keeps to the newest run" in err
    assert siqa_exit_code("oof", "--store", made["store"], "--config", made["config"], "--quiet", "--json") == 1
    assert "runs/latest: a real folder" in capsys.readouterr().err
    assert file_bytes(tmp_path / "runs" / "latest") == before
    assert siqa_exit_code("submit", "--run", "runs/latest", "--quiet") == 0  # named: the user means that folder


def test_gc_on_a_folder_that_is_not_a_store_deletes_nothing(tmp_path, capsys):
    folder = tmp_path / "project"
    (folder / "features" / "my-embeddings").mkdir(parents=True)
    (folder / "features" / "my-embeddings" / "x.npy").write_bytes(b"mine")
    (folder / "notes.txt").write_text("mine")
    before = file_bytes(folder)
    assert siqa_exit_code("store", "gc", "--store", folder) == 1
    assert "not a siqa feature store" in capsys.readouterr().err
    assert file_bytes(folder) == before
    assert siqa_exit_code("store", "gc", "--store", tmp_path / "absent") == 1
    assert "no feature store here" in capsys.readouterr().err and not (tmp_path / "absent").exists()
