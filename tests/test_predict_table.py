"""A run fit on a feature table predicts too (issue 26): `siqa predict --table` and `siqa.load(run).predict(df)`,
in the label's own units and orientation, with the rows' own columns and range flags. Real data: CSIQ (DMOS,
lower = better), a few reference images of it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

import siqa
from cli import main
from featurestore.errors import SiqaError
from tabular import metrics

CSIQ = Path(__file__).resolve().parents[2] / "shared" / "data" / "tabular" / "csiq.csv"
pytestmark = pytest.mark.skipif(not CSIQ.is_file(), reason="the CSIQ table is not there")


@pytest.fixture(scope="module")
def csiq_run(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("csiq")
    frame = pd.read_csv(CSIQ)
    frame = frame[frame["image"].isin(sorted(frame["image"].unique())[:10])]
    frame.to_csv(root / "csiq.csv", index=False)
    main(["oof", "--table", str(root / "csiq.csv"), "--label", "dmos", "--group", "image", "--lower-better",
          "--preset", "fast", "--run", str(root / "run"), "--json", "-q"])
    return {"table": root / "csiq.csv", "run": root / "run", "root": root}


def test_cli_and_python_predict_a_table_in_dmos_units(csiq_run, capsys):
    capsys.readouterr()
    out = csiq_run["root"] / "predicted.csv"
    main(["predict", "--run", str(csiq_run["run"]), "--table", str(csiq_run["table"]), "--out", str(out)])
    err = capsys.readouterr().err
    assert err.count("basis:") == 1 and "label dmos, lower = better" in err and "CV Final" in err
    written = pd.read_csv(out)
    given = pd.read_csv(csiq_run["table"])
    # every input column kept, in order, then the prediction and its flags
    assert list(written.columns[:len(given.columns)]) == list(given.columns)
    assert {"predicted_dmos", "outside_range", "outside_features", "flagged"} <= set(written.columns)
    python = siqa.load(csiq_run["run"]).predict(given)
    np.testing.assert_allclose(written["predicted_dmos"], python["predicted_dmos"], rtol=0, atol=1e-12)
    # DMOS units and orientation: within the labels' range (not 0..5), rising with the DMOS
    predicted = python["predicted_dmos"].to_numpy()
    assert given["dmos"].min() - 1e-9 <= predicted.min() and predicted.max() <= given["dmos"].max() + 1e-9
    assert spearmanr(predicted, given["dmos"])[0] > 0.9
    assert not python["flagged"].any()  # its own rows lie inside what it was fit on


def test_oof_and_rmse_in_label_units_headline_unchanged(csiq_run):
    oof = pd.read_parquet(csiq_run["run"] / "oof.parquet")
    board = pd.read_csv(csiq_run["run"] / "leaderboard.csv").set_index("model")
    # the calibrated blend mapped back: DMOS again, the label's orientation
    assert spearmanr(oof["prediction"], oof["label"])[0] > 0.9
    assert board.loc["blend_calibrated", "rmse"] == pytest.approx(
        np.sqrt(np.mean((oof["prediction"] - oof["label"]) ** 2)), rel=1e-5)
    # the headline is the Final of the 0..5 scores against the target (-DMOS), as before: positive
    assert board.loc["blend_calibrated", "final"] == pytest.approx(
        metrics.final(oof["blend_calibrated"].to_numpy(), oof["target"].to_numpy()), rel=1e-5)
    assert board.loc["blend_calibrated", "final"] > 0.8


def test_missing_feature_refused_by_name(csiq_run):
    frame = pd.read_csv(csiq_run["table"]).drop(columns=["Butteraugli", "dmos"])
    with pytest.raises(SiqaError, match="missing 1 feature column.*: Butteraugli$"):
        siqa.load(csiq_run["run"]).predict(frame)
    # without the label the rest predicts: a new table has no DMOS
    frame = pd.read_csv(csiq_run["table"]).drop(columns=["dmos"])
    assert np.isfinite(siqa.load(csiq_run["run"]).predict(frame)["predicted_dmos"]).all()


def test_rows_outside_the_fitted_range_are_flagged_with_how_far(csiq_run):
    frame = pd.read_csv(csiq_run["table"]).head(3)
    ranges = siqa.load(csiq_run["run"]).summary["feature_ranges"]
    low, high = ranges["DSSIM"]
    frame.loc[1, "DSSIM"] = high + 2 * (high - low)
    got = siqa.load(csiq_run["run"]).predict(frame, with_features=True)
    assert list(got["flagged"]) == [False, True, False]
    assert got.loc[1, "outside_range"] == pytest.approx(2.0)
    assert got.loc[1, "outside_features"] == "DSSIM"


def test_a_table_run_points_images_to_table(csiq_run, tmp_path):
    with pytest.raises(SiqaError, match="predict --table"):
        siqa.load(csiq_run["run"]).score(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 3), np.uint8))


def test_columns_left_out_are_named_with_why(csiq_run):
    import json

    skipped = json.loads((csiq_run["run"] / "run.json").read_text())["skipped_columns"]
    assert set(skipped) == {"dst_type", "dst_idx", "dst_lev", "dmos_std"}
    assert "how the pair was made" in skipped["dst_lev"] and "raters agreed" in skipped["dmos_std"]


def test_features_of_a_missing_folder_says_so_before_any_weights(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["features", "--data", str(tmp_path / "nothere"), "--store", str(tmp_path / "store")])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err == f"siqa: error: {tmp_path / 'nothere'}: no such file or folder\n"


def test_pairs_for_a_table_run_point_to_table(csiq_run, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--run", str(csiq_run["run"]), "--pairs", str(csiq_run["table"]), "-q"])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "fit on the feature table" in err and "predict --table" in err
    assert "ref_name" not in err
