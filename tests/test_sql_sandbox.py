"""`siqa sql` runs reads only, on a connection DuckDB itself sandboxes (issue 23, part 1): statements by an
allow-list from DuckDB's own parser, files only below the store, its runs and what --allow-read names."""
from __future__ import annotations

import io
import shutil

import duckdb
import pytest

from toy_run import build_run, toy_extractors  # noqa: F401 (module-scoped autouse fixture)
from conftest import file_bytes
import cli
from blend.sql import RUN_EXTENSIONS
from featurestore import sql as fsql
from featurestore.errors import SiqaError
from featurestore.sql.shell import interactive


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("sqlsandbox"))


@pytest.fixture
def store(built, tmp_path):
    shutil.copytree(built["store"], tmp_path / "store")
    return tmp_path / "store"


def _main(capsys, *args, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    try:
        cli.main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_prepare_wrapping_copy_cannot_invert_the_labels(store, capsys):
    before = file_bytes(store)
    sql = (f"PREPARE p AS COPY (SELECT * REPLACE (5 - label AS label) FROM pairs) TO '{store}/pairs.parquet' "
           f"(FORMAT parquet); EXECUTE p")
    code, _, err = _main(capsys, "sql", "--store", store, sql)
    assert code == 1 and "PREPARE is not allowed" in err and len(err.strip().splitlines()) == 1
    assert file_bytes(store) == before


def test_explain_analyze_copy_writes_nothing(store, tmp_path, capsys):
    target = tmp_path / "written.csv"
    code, _, err = _main(capsys, "sql", "--store", store, f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{target}'")
    assert code == 1 and "EXPLAIN ANALYZE is not allowed" in err
    assert not target.exists()


def test_a_piped_script_cannot_write_a_dotfile(store, tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    script = (f"EXPLAIN ANALYZE COPY (SELECT 'echo pwned' AS line) TO '{home}/.bashrc' (HEADER false);\n"
              f"PREPARE w AS COPY (SELECT 1) TO '{home}/.profile';\nEXECUTE w;\n"
              "SELECT count(*) AS n FROM pairs;\n")
    code, out, err = _main(capsys, "sql", "--store", store, stdin=script, monkeypatch=monkeypatch)
    assert code == 1 and "3 statement(s) of the script failed" in err
    assert "(1 row)" in out  # the read still ran
    assert list(home.iterdir()) == []


@pytest.mark.parametrize("statement", [
    "SET threads = 1", "RESET threads", "SET VARIABLE x = 1", "PRAGMA version", "CALL pragma_version()",
    "CHECKPOINT", "BEGIN TRANSACTION", "CREATE TABLE t AS SELECT 1", "CREATE MACRO m() AS 1",
    "CREATE TEMP VIEW v AS SELECT 1", "INSERT INTO t VALUES (1)", "DROP VIEW pairs", "USE memory",
    "EXPLAIN ANALYZE SELECT 1", "EXPLAIN (FORMAT json) COPY pairs TO 'x.csv'", "PIVOT pairs ON split",
    "INSTALL httpfs", "LOAD httpfs", "DETACH memory", "VACUUM",
])
def test_only_reads_are_run(store, statement):
    with pytest.raises(SiqaError, match="is not allowed: `siqa sql` only reads the store"):
        fsql.query(store, statement)


@pytest.mark.parametrize("statement", [
    "SELECT count(*) FROM pairs", "FROM labels LIMIT 1", "VALUES (1)", "WITH a AS (SELECT 1 AS x) SELECT * FROM a",
    "SHOW TABLES", "DESCRIBE pairs", "SUMMARIZE labels", "EXPLAIN SELECT * FROM features",
    "-- a comment first\nEXPLAIN SELECT 1", "SELECT * FROM duckdb_settings() LIMIT 1",
])
def test_reads_are_run(store, statement):
    assert len(fsql.query(store, statement)) >= 1


def test_a_select_cannot_smuggle_a_write(store, tmp_path):
    """query() runs a statement given as text: DuckDB itself takes only a SELECT there."""
    target = tmp_path / "smuggled.csv"
    with pytest.raises(SiqaError, match="Expected a single SELECT statement"):
        fsql.query(store, f"SELECT * FROM query('COPY (SELECT 1) TO ''{target}''')")
    assert not target.exists()


def test_files_outside_the_store_cannot_be_read(store, tmp_path, capsys):
    private = tmp_path / "private.txt"
    private.write_text("secret")
    for path in ("/etc/shadow", "/etc/passwd", private, f"{store}/../private.txt"):
        code, out, err = _main(capsys, "sql", "--store", store, f"SELECT content FROM read_text('{path}')")
        assert code == 1 and "Permission Error" in err and "--allow-read" in err, err
        assert "secret" not in out and len(err.strip().splitlines()) == 1
    code, out, _ = _main(capsys, "sql", "--store", store, "--allow-read", tmp_path, "--format", "csv",
                         f"SELECT content FROM read_text('{private}')")
    assert code == 0 and "secret" in out


def test_a_link_in_the_store_does_not_lead_out(store, tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.txt").write_text("secret")
    (store / "escape").symlink_to(tmp_path / "outside")
    with pytest.raises(SiqaError, match="Permission Error"):
        fsql.query(store, f"SELECT content FROM read_text('{store}/escape/x.txt')")


def test_the_store_and_its_runs_are_readable(built):
    worst = fsql.query(built["store"], f"SELECT * FROM worst_pairs('{built['run']}', n := 3)",
                       extensions=RUN_EXTENSIONS)
    assert len(worst) == 3
    assert len(fsql.query(built["store"], f"SELECT * FROM read_parquet('{built['store']}/pairs.parquet')")) > 0


def test_a_run_the_store_does_not_know_needs_allow_read(built, tmp_path):
    copy = tmp_path / "copied_run"
    shutil.copytree(built["run"], copy)
    sql = f"SELECT * FROM worst_pairs('{copy}', n := 3)"
    with pytest.raises(SiqaError, match="Permission Error.*--allow-read"):
        fsql.query(built["store"], sql, extensions=RUN_EXTENSIONS)
    assert len(fsql.query(built["store"], sql, extensions=RUN_EXTENSIONS, readable=[copy])) == 3


def test_no_persistent_secret_and_no_extension_install(store, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for statement in ("CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'k', SECRET 's')", "INSTALL httpfs"):
        with pytest.raises(SiqaError, match="not allowed"):
            fsql.query(store, statement)
    assert not (tmp_path / ".duckdb").exists()


def test_the_sandbox_is_duckdbs_own_and_locked(store, tmp_path):
    con = fsql.user_connection(store, readable=[tmp_path])
    settings = dict(con.execute("SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', "
                                "'lock_configuration', 'autoinstall_known_extensions', 'autoload_known_extensions', "
                                "'allow_persistent_secrets', 'allowed_directories')").fetchall())
    assert settings["enable_external_access"] == "false" and settings["lock_configuration"] == "true"
    assert settings["autoinstall_known_extensions"] == "false" and settings["autoload_known_extensions"] == "false"
    assert settings["allow_persistent_secrets"] == "false"
    assert str(store.absolute()) in settings["allowed_directories"] and str(tmp_path) in settings["allowed_directories"]
    # even run directly on the connection (past the statement check), DuckDB refuses to loosen it
    for statement in ("SET enable_external_access = true", "SET allowed_directories = ['/']",
                      "RESET lock_configuration"):
        with pytest.raises(duckdb.Error):
            con.execute(statement)
    with pytest.raises(duckdb.PermissionException):
        con.execute("SELECT * FROM read_text('/etc/passwd')")


def test_dot_commands_run_outside_the_shell(store, capsys):
    code, out, _ = _main(capsys, "sql", "--store", store, ".tables")
    assert code == 0 and "views: " in out and "feature_srocc" in out
    code, out, _ = _main(capsys, "sql", "--store", store, ".schema labels")
    assert code == 0 and "label" in out
    code, _, err = _main(capsys, "sql", "--store", store, "--out", store.parent / "t.csv", ".tables")
    assert code == 2 and "--out takes the rows of a query" in err


def test_shell_refuses_and_goes_on(store):
    out = io.StringIO()
    failed = interactive(store, stdin=io.StringIO("PREPARE p AS SELECT 1;\nSELECT 41 + 1 AS answer;\n"), out=out)
    assert failed == 1 and "PREPARE is not allowed" in out.getvalue() and "42" in out.getvalue()
