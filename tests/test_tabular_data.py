"""TabularData from feature tables (CSV/Parquet) and from the store's `features` view."""
from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from featurestore.errors import SiqaError
from tabular.data import TabularData


def _table(n=12) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "ref_img": ["I01.bmp", "i01.bmp", "I02.BMP"] * (n // 3), "dist_img": [f"d{i}.bmp" for i in range(n)],
        "dst_type": rng.integers(1, 5, n), "dst_lev": rng.integers(1, 5, n), "var": rng.random(n),
        "mos": rng.random(n) * 7, "mos_std": rng.random(n), "DSSIM": rng.random(n), "Butteraugli": rng.random(n)})


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_default_features_skip_non_features(tmp_path, suffix):
    path = tmp_path / f"t{suffix}"
    frame = _table()
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    data = TabularData.from_table(path, label="mos", group="ref_img")
    assert list(data.X.columns) == ["DSSIM", "Butteraugli"]
    assert data.X.dtypes.eq(np.float64).all()
    assert sorted(set(data.groups)) == ["i01.bmp", "i02.bmp"]  # case-insensitive references
    assert list(data.names[:2]) == ["d0.bmp", "d1.bmp"]
    assert set(data.split) == {"train"}
    np.testing.assert_allclose(data.target, frame["mos"])


def test_lower_better_flips_the_target(tmp_path):
    path = tmp_path / "t.csv"
    _table().to_csv(path, index=False)
    data = TabularData.from_table(path, label="mos", group="ref_img", lower_better=True, features=["DSSIM"])
    np.testing.assert_allclose(data.target, -data.y)
    assert not data.higher_better and list(data.X.columns) == ["DSSIM"]


def test_non_numeric_feature_names_the_column(tmp_path):
    path = tmp_path / "t.csv"
    frame = _table()
    frame["DSSIM"] = frame["DSSIM"].astype(object)
    frame.loc[4, "DSSIM"] = "n/a?"
    frame.to_csv(path, index=False)
    with pytest.raises(SiqaError, match=r"t.csv: feature column 'DSSIM' is not numeric \(e.g. 'n/a\?' in row 5\)"):
        TabularData.from_table(path, label="mos", group="ref_img", features=["DSSIM", "Butteraugli"])
    # the default rule says so too: a mostly numeric column with a bad cell is not silently dropped
    with pytest.raises(SiqaError, match="feature column 'DSSIM' is not numeric"):
        TabularData.from_table(path, label="mos", group="ref_img")


@pytest.mark.parametrize("kwargs, message", [
    (dict(label="score", group="ref_img"), "no label column 'score'"),
    (dict(label="mos", group="image"), "no group column 'image'"),
    (dict(label="mos", group="ref_img", features=["DSSIM", "nope"]), "no feature column.*'nope'"),
    (dict(label="mos", group="ref_img", features=["mos"]), "'mos' is the label or group column"),
])
def test_wrong_columns_are_clear_errors(tmp_path, kwargs, message):
    path = tmp_path / "t.csv"
    _table().to_csv(path, index=False)
    with pytest.raises(SiqaError, match=message):
        TabularData.from_table(path, **kwargs)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SiqaError, match="empty.csv: empty file"):
        TabularData.from_table(tmp_path / "empty.csv", label="mos", group="ref_img")
    (tmp_path / "header.csv").write_text("ref_img,mos,DSSIM\n")
    with pytest.raises(SiqaError, match="header.csv: the table has no rows"):
        TabularData.from_table(tmp_path / "header.csv", label="mos", group="ref_img")
    with pytest.raises(SiqaError, match="no such file"):
        TabularData.from_table(tmp_path / "absent.csv", label="mos", group="ref_img")


def test_nan_inf_features_and_missing_labels(tmp_path):
    frame = _table()
    frame.loc[0, "DSSIM"] = np.inf
    frame.loc[1, "Butteraugli"] = np.nan
    frame.loc[2, "mos"] = np.nan
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    data = TabularData.from_table(path, label="mos", group="ref_img")
    assert np.isnan(data.X.loc[0, "DSSIM"]) and np.isnan(data.X.loc[1, "Butteraugli"])
    assert list(data.labelled[:3]) == [True, True, False] and data.split[2] == "test"
    frame.loc[3, "mos"] = np.inf
    frame.to_csv(path, index=False)
    with pytest.raises(SiqaError, match="infinite"):
        TabularData.from_table(path, label="mos", group="ref_img")


def test_from_store_reads_scalars_and_dense_blocks(tmp_path, monkeypatch):
    from featurestore import sql

    def fake_connect(root, folders=None):
        con = duckdb.connect()
        con.execute("""CREATE TABLE pairs AS SELECT * FROM (VALUES
            ('p2', 'train', '000002.png', 'r1', 'd2', 'a', 'b', 4.0),
            ('p1', 'train', '000001.png', 'r1', 'd1', 'a', 'c', 3.0),
            ('p3', 'test',  '000003.png', 'r2', 'd3', 'e', 'f', NULL))
            t(pair_id, split, name, ref_sha256, dist_sha256, ref_path, dist_path, label)""")
        con.execute("""CREATE VIEW features AS SELECT p.*, x.clip_cos, x.clip_absdiff FROM pairs p JOIN (VALUES
            ('p1', 0.9::DOUBLE, [1, 2, 3]::FLOAT[3]), ('p2', NULL, [4, 5, 6]::FLOAT[3]),
            ('p3', 0.5, [7, 8, 9]::FLOAT[3])) x(pair_id, clip_cos, clip_absdiff) USING (pair_id)""")
        return con

    monkeypatch.setattr(sql, "connect", fake_connect)
    data = TabularData.from_store(tmp_path)
    assert list(data.ids) == ["p1", "p2", "p3"]
    assert list(data.X.columns) == ["clip_cos"] and np.isnan(data.X.loc[1, "clip_cos"])
    assert data.dense["clip_absdiff"].dtype == np.float32
    np.testing.assert_array_equal(data.dense["clip_absdiff"][2], [7, 8, 9])
    assert list(data.groups) == ["r1", "r1", "r2"] and list(data.names) == ["000001.png", "000002.png", "000003.png"]
    np.testing.assert_array_equal(data.labelled, [True, True, False])
    assert data.higher_better and list(data.split) == ["train", "train", "test"]
