"""SQL exploration: the ready-made views of `featurestore.sql` and the interactive `siqa sql` shell."""
from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from toy_run import CONFIG, make_dataset, toy_extractors  # noqa: F401 (module-scoped autouse fixture)
from blend.sql import RUN_EXTENSIONS
from blend.settings import settings_from
from featurestore.config import build_extractors
from featurestore.datasets import load_pairs
from featurestore.sql import connect
from featurestore.sql.shell import interactive
from featurestore.store import FeatureStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("sqlshell")
    root = tmp / "store"
    FeatureStore(root).extract(load_pairs(make_dataset(tmp / "data")), build_extractors(settings_from(tomllib.loads(CONFIG)).extractors),
                               progress=False)
    return root


def test_feature_srocc_matches_scipy(store):
    con = connect(store)
    features = con.execute("SELECT * FROM features WHERE label IS NOT NULL").df()
    got = con.execute("SELECT * FROM feature_srocc").df().set_index("feature")
    assert set(got.index) == {"toymean_delta", "toymse_mse", "toymse_mse_if_busy"}  # scalars only, no dense block
    for feature, row in got.iterrows():
        ok = features[feature].notna() & np.isfinite(features[feature])
        x, y = features.loc[ok, feature], features.loc[ok, "label"]
        assert row["n"] == ok.sum()
        # labels are integers 0..5, so ties are everywhere: average ranks must match scipy's
        assert row["srocc"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
        assert row["plcc"] == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
        assert row["final"] == pytest.approx(0.6 * row["srocc"] + 0.4 * row["plcc"])
    # ordered by |srocc|, strongest first; the noise-driven labels make mse the strongest
    assert list(got.index) == sorted(got.index, key=lambda f: -abs(got.loc[f, "srocc"]))
    assert got.index[0] == "toymse_mse" and got.loc["toymse_mse", "srocc"] < -0.8


def test_feature_nans_counts_nan_and_missing(store):
    con = connect(store)
    nans = con.execute("SELECT * FROM feature_nans").df().set_index("feature")
    expected = con.execute("SELECT count(*) FILTER (isnan(toymse_mse_if_busy)), count(*) FROM features").fetchone()
    assert 0 < expected[0] < expected[1]
    assert list(nans.index) == ["toymse_mse_if_busy"]
    row = nans.loc["toymse_mse_if_busy"]
    assert (row["nan"], row["missing"], row["pairs"]) == (expected[0], 0, expected[1])
    assert row["share"] == pytest.approx(expected[0] / expected[1])


def test_feature_nans_counts_pairs_an_extractor_never_computed(store, tmp_path, seiqa_dir):
    # a second dataset registered with only one extractor: the other's columns are NULL for its pairs
    import shutil

    root = tmp_path / "store"
    shutil.copytree(store, root)
    extractors = {ex.name: ex for ex in build_extractors(settings_from(tomllib.loads(CONFIG)).extractors)}
    FeatureStore(root).extract(load_pairs(seiqa_dir), [extractors["toymse"]], progress=False)
    nans = connect(root).execute("SELECT feature, missing FROM feature_nans").df().set_index("feature")
    assert nans.loc["toymean_delta", "missing"] == len(load_pairs(seiqa_dir))


def test_macros_on_a_store_without_features(tmp_path, seiqa_dir):
    FeatureStore(tmp_path / "s").extract(load_pairs(seiqa_dir), [], progress=False)
    con = connect(tmp_path / "s")
    assert con.execute("SELECT count(*) FROM feature_srocc").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM feature_nans").fetchone() == (0,)


def _shell(store, text: str) -> str:
    out = io.StringIO()
    interactive(store, stdin=io.StringIO(text), out=out, extensions=RUN_EXTENSIONS)  # as `siqa sql` opens it
    return out.getvalue()


def test_shell_runs_multiline_statements_and_dot_commands(store):
    out = _shell(store, ".tables\n"
                        "SELECT feature,\n"
                        "       round(srocc, 2) AS srocc\n"
                        "FROM feature_srocc LIMIT 1;\n"
                        "SELECT no_such_column FROM pairs;\n"
                        "SELECT 1 AS a; SELECT 'x;y' AS b;\n"
                        ".schema labels\n"
                        ".quit\n"
                        "SELECT 'after quit' AS never;\n")
    assert "views: " in out and "feature_srocc" in out and "worst_pairs(run_dir, n)" in out
    assert "toymse_mse" in out and "(1 row)" in out
    assert "error: Binder Error" in out and "no_such_column" in out
    assert "x;y" in out  # a ';' inside a string does not split the statement
    assert "label" in out and "DOUBLE" in out
    assert "after quit" not in out
    assert "siqa> " not in out  # no prompts when fed from a pipe


def test_store_connection_knows_no_runs(store):
    """Run-level macros come from blend (`extensions`), not from the store layer."""
    macros = {r[0] for r in connect(store).execute("SELECT function_name FROM duckdb_functions() "
                                                   "WHERE function_type = 'table_macro'").fetchall()}
    assert "worst_pairs" not in macros
    extended = connect(store, extensions=RUN_EXTENSIONS)
    assert extended.execute("SELECT count(*) FROM duckdb_functions() WHERE function_name = 'worst_pairs'").fetchone()[0]


def test_shell_runs_a_last_statement_without_semicolon(store):
    assert "12345" in _shell(store, "SELECT 12345 AS n\n")


def test_cli_sql_without_query_opens_the_shell(store):
    from cli import app

    result = CliRunner().invoke(app, ["sql", "--store", str(store)], input="SELECT count(*) AS n FROM labels;\n")
    assert result.exit_code == 0, result.output
    n = int(load_pairs(store.parent / "data").df.label.notna().sum())
    assert result.output.split() == ["n", str(n), "(1", "row)"]


def test_shell_on_a_terminal_has_prompts_and_history(store, tmp_path):
    """Drive the shell through a pseudo-terminal, as a person would."""
    import pty

    history = tmp_path / "history"
    primary, secondary = pty.openpty()
    env = {**os.environ, "SIQA_SQL_HISTORY": str(history), "TERM": "dumb"}
    proc = subprocess.Popen([sys.executable, "-c", f"from featurestore.sql.shell import interactive; "
                                                   f"from blend.sql import RUN_EXTENSIONS; "
                                                   f"interactive({str(store)!r}, extensions=RUN_EXTENSIONS)"],
                            stdin=secondary, stdout=secondary, stderr=secondary, cwd=ROOT, env=env)
    os.close(secondary)
    received = b""

    def read_until(marker: bytes, timeout: float = 60):
        nonlocal received
        deadline = time.monotonic() + timeout
        while marker not in received and time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                try:
                    received += os.read(primary, 4096)
                except OSError:
                    break

    try:
        read_until(b"siqa> ")
        os.write(primary, b"SELECT 41 + 1\n")
        read_until(b"..> ")
        os.write(primary, b"  AS answer;\n")
        read_until(b"(1 row)")
        os.write(primary, b".quit\n")
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(primary)
    text = received.decode(errors="replace")
    assert "siqa> " in text and "..> " in text and "answer" in text and "42" in text
    assert proc.returncode == 0
    assert "SELECT 41 + 1" in history.read_text()
