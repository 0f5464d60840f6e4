"""Predictions that check themselves (issue 26): pairs of two sizes refused unless allowed (then resized and
flagged), flags for image sizes far from the training sizes and for unrelated content, the run's basis on stderr,
one reference against a folder, and the features used on request. Real photos from `skimage.data`."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skimage.data
from PIL import Image

from conftest import photo
from toy_run import build_run, noisy, toy_extractors  # noqa: F401 (module-scoped autouse fixture)
import siqa
from blend.checks import unrelated_content
from cli import main
from featurestore.errors import SiqaError


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Path]:
    return build_run(tmp_path_factory.mktemp("checks"))


@pytest.fixture
def store(toy, tmp_path) -> Path:
    shutil.copytree(toy["store"], tmp_path / "store")
    return tmp_path / "store"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """The issue's cat against an astronaut (512x512 vs 451x300, real photos), and a small sweep of one
    reference at the run's own size: a folder of three noisy copies."""
    root = tmp_path_factory.mktemp("images")
    Image.fromarray(skimage.data.astronaut()).save(root / "astronaut.png")
    Image.fromarray(skimage.data.chelsea()).save(root / "chelsea.png")
    ref = photo("hubble_deep_field")
    Image.fromarray(ref).save(root / "ref.png")
    (root / "sweep").mkdir()
    rng = np.random.default_rng(3)
    for level in (1, 2, 4):
        Image.fromarray(noisy(ref, level, rng)).save(root / "sweep" / f"noise{level}.png")
    return {"root": root, "astronaut": root / "astronaut.png", "chelsea": root / "chelsea.png",
            "ref": root / "ref.png", "sweep": root / "sweep"}


def test_pair_of_two_sizes_is_refused_unless_allowed(toy, store, images, capsys):
    with pytest.raises(SiqaError, match=r"chelsea.png: 451x300 pixels, its reference .*astronaut.png is 512x512.*"
                                        r"--allow-size-mismatch"):
        siqa.load(toy["run"], store).score(images["astronaut"], images["chelsea"])
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--run", str(toy["run"]), "--store", str(store), "--ref", str(images["astronaut"]),
              "--dist", str(images["chelsea"])])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.count("siqa: error:") == 1 and "--allow-size-mismatch" in err
    main(["predict", "--run", str(toy["run"]), "--store", str(store), "--ref", str(images["astronaut"]),
          "--dist", str(images["chelsea"]), "--allow-size-mismatch"])
    printed = capsys.readouterr()
    assert 0 <= float(printed.out) <= 5 and "flagged resized, size_unusual" in printed.err
    out = images["root"] / "allowed.csv"
    main(["predict", "--run", str(toy["run"]), "--store", str(store), "--ref", str(images["astronaut"]),
          "--dist", str(images["chelsea"]), "--allow-size-mismatch", "--out", str(out), "-q"])
    row = pd.read_csv(out).iloc[0]
    # resized and flagged; and a 512x512 photo is far from the 64x48 images the run was fit on
    assert row["resized"] and row["size_unusual"] and row["flagged"]


def test_basis_is_printed_once_with_the_training_sizes(toy, store, images, capsys):
    main(["predict", "--run", str(toy["run"]), "--store", str(store), "--ref", str(images["ref"]),
          "--dist", str(images["sweep"] / "noise1.png")])
    err = capsys.readouterr().err
    assert err.count("basis:") == 1
    assert "images 64x48" in err and "CV Final" in err and "95% group-bootstrap interval" in err


def test_one_reference_against_a_folder_keeps_order_and_flags(toy, store, images, capsys):
    out = images["root"] / "sweep.csv"
    main(["predict", "--run", str(toy["run"]), "--store", str(store), "--ref", str(images["ref"]),
          "--dist", str(images["sweep"]), "--with-features", "--out", str(out), "-q"])
    got = pd.read_csv(out)
    assert list(got["name"]) == ["noise1.png", "noise2.png", "noise4.png"]
    assert got["score"].is_monotonic_decreasing  # more noise, less kept
    assert not got["size_unusual"].any() and not got["resized"].any()
    # a new photo: its noisiest copy lies well beyond the noise the run saw, and says which feature
    assert list(got["flagged"]) == list(got["outside_range"] > 0)
    assert got["outside_range"].iloc[-1] > 1 and got["outside_features"].iloc[-1] == "toymean_delta"
    # --with-features: the features the run used, by their store names
    run_columns = siqa.load(toy["run"], store).compiled.columns
    assert set(run_columns) <= set(got.columns)
    python = siqa.load(toy["run"], store).score([images["ref"]] * 3, sorted(images["sweep"].iterdir()))
    np.testing.assert_allclose(got["score"], python, atol=1e-9)


def test_a_ref_folder_against_one_file_points_to_the_right_forms(toy, store, images, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--run", str(toy["run"]), "--store", str(store), "--ref", str(images["sweep"]),
              "--dist", str(images["ref"]), "-q"])
    assert exit_.value.code == 2 and "--ref is a folder and --dist a file" in capsys.readouterr().err


def test_unrelated_content_is_an_embedding_cosine_far_below_what_the_run_saw():
    ranges = {"clip_cos": [0.80, 0.98], "formula_psnr": [20.0, 40.0]}
    # the lowest seen 0.80, the range 0.18 wide: below 0.782 is unrelated
    X = np.array([[0.85, 30.0], [0.79, 30.0], [0.70, 30.0], [0.50, 30.0], [np.nan, 30.0]])
    assert list(unrelated_content(X, ["clip_cos", "formula_psnr"], ranges)) == [False, False, True, True, False]
    assert unrelated_content(X[:, 1:], ["formula_psnr"], ranges) is None  # no embedding: no such flag


def test_an_array_of_a_picture_scored_as_a_file_computes_nothing(toy, store, images):
    """The issue's 29 s: a JPEG scored as a file, then its decoded array - the same pixels, other file bytes."""
    model = siqa.load(toy["run"], store)
    jpeg = images["root"] / "hubble_q40.jpg"
    Image.open(images["ref"]).save(jpeg, quality=40)
    from_files = model.score(images["ref"], jpeg)
    shards = sorted((store / "features").rglob("part-*.parquet"))
    assert (store / "pixels.json").is_file()
    arrays = np.asarray(Image.open(images["ref"])), np.asarray(Image.open(jpeg).convert("RGB"))
    assert model.score(*arrays) == pytest.approx(from_files, abs=1e-12)
    assert sorted((store / "features").rglob("part-*.parquet")) == shards  # no feature computed again
    # other pixels: computed, as before
    model.score(arrays[0], np.ascontiguousarray(arrays[1][::-1]))
    assert len(sorted((store / "features").rglob("part-*.parquet"))) > len(shards)
