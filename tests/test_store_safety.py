"""A store cannot be damaged through siqa (issue 12, item 5): `siqa sql` only reads, `siqa features` cleans
only its own temp files, and re-registering changed pairs needs --replace."""
from __future__ import annotations

import io
import shutil

import pandas as pd
import pytest

from toy_run import CONFIG, make_dataset, toy_extractors  # noqa: F401 (module-scoped autouse fixture)
from conftest import file_bytes
import cli
from featurestore import sql as fsql
from blend.settings import load_settings
from featurestore.config import build_extractors
from featurestore.datasets import PairTable, load_pairs
from featurestore.errors import SiqaError
from featurestore.sql.shell import interactive
from featurestore.store import FeatureStore


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("storesafety")
    data = make_dataset(tmp / "data")
    (tmp / "toy.toml").write_text(CONFIG)
    extractors = build_extractors(load_settings(tmp / "toy.toml").extractors)
    FeatureStore(tmp / "store").extract(load_pairs(data), extractors, progress=False)
    return {"data": data, "store": tmp / "store", "extractors": extractors}


@pytest.fixture
def store(built, tmp_path):
    shutil.copytree(built["store"], tmp_path / "store")
    return tmp_path / "store"


def _exit_code(*args):
    with pytest.raises(SystemExit) as exit_:
        cli.main([str(a) for a in args])
    return exit_.value.code


def test_sql_out_into_the_store_is_refused(store, capsys):
    before = file_bytes(store)
    assert _exit_code("sql", "--store", store, "--format", "parquet", "--out", store / "pairs.parquet",
                      "SELECT 1 AS x") not in (0, None)
    assert "inside the feature store" in capsys.readouterr().err
    assert _exit_code("sql", "--store", store, "--format", "csv", "--out", store / "features" / "x.csv",
                      "SELECT 1 AS x") not in (0, None)
    assert file_bytes(store) == before


@pytest.mark.parametrize("statement", [
    "COPY (SELECT 1 AS broken) TO '{store}/views.json' (FORMAT csv)",
    'COPY (SELECT 1 AS broken) TO "{store}/views.json" (FORMAT csv)',
    "COPY pairs TO '{store}/pairs.parquet' (FORMAT parquet)",
    "EXPORT DATABASE '{store}/dump'",
    "ATTACH '{store}/x.duckdb' AS x",
    "SET temp_directory = '{store}'",
    ("PREPARE p AS COPY (SELECT * REPLACE (5 - label AS label) FROM pairs) TO '{store}/pairs.parquet' "
     "(FORMAT parquet); EXECUTE p"),
    "EXPLAIN ANALYZE COPY pairs TO '{store}/pairs.parquet' (FORMAT parquet)",
])
def test_sql_statements_cannot_write_into_the_store(store, statement):
    before = file_bytes(store)
    sql = statement.format(store=store)
    with pytest.raises(SiqaError, match=r"sql: .*(not allowed: `siqa sql` only reads the store|configuration)"):
        fsql.query(store, sql)
    out = io.StringIO()
    interactive(store, stdin=io.StringIO(sql + ";\nSELECT count(*) AS n FROM pairs;\n"), out=out)
    assert "error:" in out.getvalue() and "30" in out.getvalue()  # refused, and the shell goes on
    assert file_bytes(store) == before
    assert len(fsql.query(store, "SELECT * FROM pairs")) == 30


def test_sql_empty_query_is_one_line(store, capsys):
    assert _exit_code("sql", "--store", store, "") not in (0, None)
    err = capsys.readouterr().err
    assert "empty query" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_features_cleans_only_its_own_temp_files(built, tmp_path):
    folder = tmp_path / "project"
    FeatureStore(folder).check_store(create=True)  # a store, in which the user then keeps files of their own
    (folder / "notes").mkdir(parents=True)
    theirs = [folder / ".draft.tmp", folder / "notes" / ".editor.swp.tmp",
              folder / "notes" / f".report.{'a' * 32}.tmp"]  # write_atomic's pattern, but not in a store folder
    for path in theirs:
        path.write_text("user data")
    stale = folder / "features" / "x" / "pair" / f".part-1.parquet.{'b' * 32}.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_text("remains of a killed writer")
    FeatureStore(folder).extract(load_pairs(built["data"]), built["extractors"], progress=False)
    assert all(p.read_text() == "user data" for p in theirs)
    assert not stale.exists()


def test_reregistering_changed_pairs_needs_replace(built, store):
    table = load_pairs(built["data"])
    changed = table.df.copy()
    first = changed.index[changed.label.notna()][0]
    changed.loc[first, "label"] = 5.0 - changed.loc[first, "label"]
    name = changed.loc[first, "name"]
    before = file_bytes(store)
    with pytest.raises(SiqaError, match=rf"1 pair\(s\) are already registered .* \(e.g. train/{name}: label .*"
                                        r"pass --replace"):
        FeatureStore(store).extract(PairTable(changed), built["extractors"], progress=False)
    assert file_bytes(store) == before
    FeatureStore(store).extract(table, built["extractors"], progress=False)  # the same pairs again: fine
    FeatureStore(store).extract(PairTable(changed), built["extractors"], progress=False, replace=True)
    pairs = FeatureStore(store).pairs().set_index(["split", "name"]).label.sort_index()
    expected = changed.set_index(["split", "name"]).label.sort_index()
    pd.testing.assert_series_equal(pairs, expected)
    assert (pairs.fillna(-1) != table.df.set_index(["split", "name"]).label.sort_index().fillna(-1)).sum() == 1


def test_a_read_only_features_folder_is_one_line_and_changes_nothing(built, store):
    import os

    os.chmod(store / "features", 0o555)
    try:
        if os.access(store / "features", os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        before = file_bytes(store)
        table = load_pairs(built["data"])
        with pytest.raises(SiqaError, match=r"features: not writable; the store was left unchanged"):
            FeatureStore(store).extract(table, built["extractors"], progress=False)
        assert file_bytes(store) == before
    finally:
        os.chmod(store / "features", 0o755)
