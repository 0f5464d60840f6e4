"""Scoring new pairs with a fitted run: `siqa.score`, `predict_pairs` and `siqa predict`."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import photo
from toy_run import build_run, noisy, toy_extractors  # noqa: F401 (module-scoped autouse fixture)
import siqa
from blend.run import load_run
from featurestore.errors import SiqaError
from featurestore.store import FeatureStore
from tabular.data import TabularData


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Path]:
    return build_run(tmp_path_factory.mktemp("predict"))


@pytest.fixture
def store(toy, tmp_path) -> Path:
    """A private copy of the run's store, so each test sees what it alone adds."""
    shutil.copytree(toy["store"], tmp_path / "store")
    return tmp_path / "store"


@pytest.fixture(scope="module")
def new_pairs(tmp_path_factory) -> dict[str, Path]:
    """A photo the run never saw, at three noise levels; two degraded files share a name in two folders."""
    root = tmp_path_factory.mktemp("new")
    ref = photo("hubble_deep_field")
    Image.fromarray(ref).save(root / "ref.png")
    rng = np.random.default_rng(7)
    paths = {"ref": root / "ref.png"}
    for level in (1, 4):
        (root / f"l{level}").mkdir()
        Image.fromarray(noisy(ref, level, rng)).save(root / f"l{level}" / "dist.png")
        paths[level] = root / f"l{level}" / "dist.png"
    return paths


def _shards(store: Path) -> set[str]:
    return {str(p.relative_to(store)) for p in (store / "features").rglob("part-*.parquet")}


def test_known_pair_reuses_features_and_matches_the_pipeline(toy, store):
    pairs = FeatureStore(store).pairs()
    row = pairs[pairs.split == "test"].iloc[0]
    before = _shards(store)
    got = siqa.score(row.ref_path, row.dist_path, run=toy["run"], store=store)
    assert _shards(store) == before  # every feature came from the store
    data = TabularData.from_store(store)
    expected = load_run(toy["run"]).pipeline.predict(data.subset(data.ids == row.pair_id))
    assert got == pytest.approx(float(expected[0]), abs=1e-12)


def test_new_pairs_are_computed_once_and_leave_the_pair_table_alone(toy, store, new_pairs):
    pairs_before = (store / "pairs.parquet").read_bytes()
    views_before = (store / "views.json").read_bytes()
    shards_before = _shards(store)
    refs, dists = [new_pairs["ref"]] * 2, [new_pairs[1], new_pairs[4]]
    scores = siqa.score(refs, dists, run=toy["run"], store=store)
    assert scores.shape == (2,) and ((0 <= scores) & (scores <= 5)).all()
    # more noise, less meaning kept: the toy run learnt that from the MSE
    assert scores[0] > scores[1]
    # features landed in the shared shards; the dataset's pair table and views did not change
    assert _shards(store) > shards_before
    assert (store / "pairs.parquet").read_bytes() == pairs_before
    assert (store / "views.json").read_bytes() == views_before
    again = siqa.predict_pairs(_table(refs, dists), run=toy["run"], store=store, progress=False)
    assert sum(again.attrs["extract"].computed.values()) == 0
    np.testing.assert_allclose(again["score"], scores, atol=1e-12)
    assert list(again["name"]) == ["dist.png", "dist.png"]  # same file name, two folders, two rows kept apart
    assert siqa.score(refs[0], dists[1], run=toy["run"], store=store) == pytest.approx(scores[1], abs=1e-12)


def _table(refs, dists):
    from featurestore.datasets import PairTable

    return PairTable.from_paths(list(zip(refs, dists)))


def test_predict_into_an_empty_store(toy, tmp_path, new_pairs):
    score = siqa.score(new_pairs["ref"], new_pairs[1], run=toy["run"], store=tmp_path / "fresh")
    assert 0 <= score <= 5
    assert not (tmp_path / "fresh" / "pairs.parquet").exists()
    assert _shards(tmp_path / "fresh")


def test_cli_predict_one_pair_and_a_pairs_file(toy, store, new_pairs, tmp_path, capsys):
    from cli import main

    run = ["--run", str(toy["run"]), "--store", str(store)]
    main(["predict", *run, "--ref", str(new_pairs["ref"]), "--dist", str(new_pairs[1])])
    out = capsys.readouterr()
    assert float(out.out.strip()) == pytest.approx(siqa.score(new_pairs["ref"], new_pairs[1], run=toy["run"],
                                                              store=store), abs=1e-4)
    assert "1 pair(s) scored in" in out.err  # the summary line, after the progress bar

    table = tmp_path / "pairs.csv"
    pairs = pd.DataFrame({"ref_name": ["ref.png", "ref.png"], "dist_name": ["l1/dist.png", "l4/dist.png"],
                          "codec": ["noise", "noise"], "quality": [90, 30]})
    pairs.to_csv(table, index=False)
    shutil.copytree(new_pairs["ref"].parent, tmp_path / "images")
    shutil.move(table, tmp_path / "images" / "pairs.csv")
    csv = tmp_path / "scores.csv"
    main(["predict", *run, "--pairs", str(tmp_path / "images" / "pairs.csv"), "--out", str(csv), "--quiet"])
    out = capsys.readouterr()
    assert out.out.strip() == f"2 predictions -> {csv}" and out.err == ""  # --quiet: no bar, no summary
    written = pd.read_csv(csv)
    # the user's own columns come back, in order, then the score and the flags
    assert list(written.columns) == ["ref_name", "dist_name", "codec", "quality", "score", "resized", "size_unusual",
                                     "outside_range", "outside_features", "flagged"]
    assert list(written["dist_name"]) == ["l1/dist.png", "l4/dist.png"] and list(written["quality"]) == [90, 30]
    assert written["score"].iloc[0] > written["score"].iloc[1]
    assert not written["resized"].any()


def test_user_errors(toy, store, new_pairs, tmp_path):
    with pytest.raises(SiqaError, match="no such image file"):
        siqa.score(tmp_path / "missing.png", new_pairs[1], run=toy["run"], store=store)
    with pytest.raises(SiqaError, match="1 reference image"):
        siqa.score([new_pairs["ref"]], [new_pairs[1], new_pairs[4]], run=toy["run"], store=store)
    with pytest.raises(SiqaError, match="not a complete run folder"):
        siqa.score(new_pairs["ref"], new_pairs[1], run=tmp_path, store=store)


def test_a_table_run_cannot_score_images(tmp_path, new_pairs):
    from blend.run import run_oof

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"ref": np.repeat([f"r{i}" for i in range(6)], 4), "x": rng.normal(size=24)})
    frame["mos"] = frame["x"] + rng.normal(0, 0.1, 24)
    frame.to_csv(tmp_path / "t.csv", index=False)
    data = TabularData.from_table(tmp_path / "t.csv", label="mos", group="ref")
    run_oof(data, {"tabular": {"preset": "fast", "pool": {"ridge": {}, "lightgbm": {"enabled": False},
                                                         "pairwise_mlp": {"enabled": False}}}},
            tmp_path / "run", progress=False)
    with pytest.raises(SiqaError, match="fit on the feature table"):
        siqa.score(new_pairs["ref"], new_pairs[1], run=tmp_path / "run", store=tmp_path / "store")
