"""DuckDB views over the store's Parquet: the one way the tabular stage and users read features.

Views:
    pairs                 every registered pair (pair_id, split, name, paths, sha256s, label)
    labels                labelled pairs only (pair_id, split, name, label)
    <extractor>           pair-level columns of one extractor, keyed by pair_id
    <extractor>_image     per-image columns of an image-level extractor, keyed by sha256
    features              pairs + every extractor column as <extractor>_<column> (scalars DOUBLE,
                          dense blocks FLOAT[d]), one row per registered pair

Ready-made questions (see `_add_macros`):
    feature_values        long form of every scalar feature: pair_id, split, name, label, feature, value
    feature_srocc         per scalar feature vs the label: n, srocc (average ranks), plcc, final
    feature_nans          scalar features missing (NULL: not computed) or NaN for some pairs

`siqa sql` only reads, by two mechanisms of DuckDB's own: its parser classifies each statement and only
reads run (`read_statements`: SELECT, and EXPLAIN of a SELECT; an allow-list, not a list of what writes),
and the connection is sandboxed by DuckDB's settings (`user_connection`: files only below the store, the
runs fit on it and the folders the user names with --allow-read; no extension install or autoload; the
configuration locked). Results are written by siqa itself, with `siqa sql --out FILE` (`blend.outputs`).

A layer above the store adds its own views and macros through `extensions`: callables given the
connection once the store's views exist (`blend.sql.run_macros` adds the run-level `worst_pairs`); the
store knows nothing about runs.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ..cached import parquet_glob
from ..errors import SiqaError
from ..store import FeatureStore


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _select_list(folder: Path) -> str:
    """Parquet has no fixed-size list type, so DuckDB reads dense blocks back as LIST; cast them to
    ARRAY (FLOAT[d]) from the Arrow schema kept in the shard, so SQL can use array_cosine_similarity."""
    schema = pq.read_schema(FeatureStore.shards(folder)[0])
    parts = []
    for f in schema:
        if pa.types.is_fixed_size_list(f.type):
            parts.append(f"CAST({quote_identifier(f.name)} AS FLOAT[{f.type.list_size}]) AS {quote_identifier(f.name)}")
        else:
            parts.append(quote_identifier(f.name))
    return ", ".join(parts)


Extension = Callable[[duckdb.DuckDBPyConnection], None]


def connect(root: str | Path, database: str = ":memory:", extensions: Iterable[Extension] = (),
            folders: dict[str, str] | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the store's views and ready-made questions, then each of `extensions`.
    `folders` (extractor -> feature folder, what a run pinned) replaces views.json: the views then read
    exactly those folders, and a folder that is gone is an error naming it."""
    store = FeatureStore(root)
    if not store.pairs_path.exists():
        raise SiqaError(f"{store.root}: no feature store here (run `siqa features --data ...` first)")
    if folders is None:
        views = store.views()
    else:
        views = {}
        for name, folder in folders.items():
            if not (store.root / "features" / folder).is_dir():
                raise SiqaError(f"{store.root / 'features' / folder}: the feature folder of {name!r} this run was "
                                f"fit on is gone (removed by hand?); run `siqa features` with the run's config "
                                f"again, or refit with `siqa oof`")
            views[name] = {"folder": folder}
    # No extension is ever fetched or loaded behind the user's back: what siqa reads (Parquet) is built in.
    con = duckdb.connect(database, config={"autoinstall_known_extensions": False,
                                           "autoload_known_extensions": False})
    pairs = str(store.pairs_path).replace("'", "''")
    con.execute(f"CREATE OR REPLACE VIEW pairs AS SELECT * FROM read_parquet('{pairs}')")
    con.execute("CREATE OR REPLACE VIEW labels AS SELECT pair_id, split, name, label FROM pairs WHERE label IS NOT NULL")
    select = ["p.*"]
    joins = []
    for name, info in sorted(views.items()):
        base = store.root / "features" / info["folder"]
        created = set()
        for level, view in (("pair", name), ("image", f"{name}_image")):
            # Look once: a writer may add the first shard at any moment while we build the views.
            if FeatureStore.shards(base / level):
                con.execute(f"CREATE OR REPLACE VIEW {quote_identifier(view)} AS "
                            f"SELECT {_select_list(base / level)} FROM read_parquet('{parquet_glob(base / level)}')")
                created.add(level)
        if "pair" not in created:
            continue
        alias = f"e_{len(joins)}"
        columns = [r[0] for r in con.execute(f"DESCRIBE {quote_identifier(name)}").fetchall() if r[0] != "pair_id"]
        select += [f"{alias}.{quote_identifier(c)} AS {quote_identifier(f'{name}_{c}')}" for c in columns]
        joins.append(f"LEFT JOIN {quote_identifier(name)} {alias} USING (pair_id)")
    con.execute(f"CREATE OR REPLACE VIEW features AS SELECT {', '.join(select)} FROM pairs p {' '.join(joins)}")
    _add_macros(con)
    for extend in extensions:
        extend(con)
    return con


def _add_macros(con: duckdb.DuckDBPyConnection) -> None:
    """Views for the questions people ask first of a store."""
    pair_columns = {r[0] for r in con.execute("DESCRIBE pairs").fetchall()}
    scalars = [r[0] for r in con.execute("DESCRIBE features").fetchall()
               if r[0] not in pair_columns and r[1] == "DOUBLE"]
    if scalars:
        # INCLUDE NULLS keeps pairs an extractor never computed, so feature_nans can count them.
        con.execute("CREATE OR REPLACE VIEW feature_values AS SELECT pair_id, split, name, label, feature, value "
                    f"FROM features UNPIVOT INCLUDE NULLS (value FOR feature IN ({', '.join(map(quote_identifier, scalars))}))")
    else:
        con.execute("CREATE OR REPLACE VIEW feature_values AS SELECT pair_id, split, name, label, "
                    "NULL::VARCHAR AS feature, NULL::DOUBLE AS value FROM pairs WHERE false")
    # Spearman = Pearson on ranks; tied values share their average rank, as scipy.stats.spearmanr does.
    con.execute("""
        CREATE OR REPLACE VIEW feature_srocc AS
        WITH v AS (SELECT feature, value, label FROM feature_values
                   WHERE label IS NOT NULL AND value IS NOT NULL AND NOT isnan(value)),
        r AS (SELECT feature, value, label,
                     rank() OVER (PARTITION BY feature ORDER BY value)
                       + (count(*) OVER (PARTITION BY feature, value) - 1) / 2.0 AS value_rank,
                     rank() OVER (PARTITION BY feature ORDER BY label)
                       + (count(*) OVER (PARTITION BY feature, label) - 1) / 2.0 AS label_rank
              FROM v)
        SELECT feature, count(*) AS n, corr(value_rank, label_rank) AS srocc, corr(value, label) AS plcc,
               0.6 * srocc + 0.4 * plcc AS final
        FROM r GROUP BY feature ORDER BY abs(srocc) DESC NULLS LAST, feature""")
    con.execute("""
        CREATE OR REPLACE VIEW feature_nans AS
        SELECT feature, count(*) AS pairs, count(*) FILTER (value IS NULL) AS missing,
               count(*) FILTER (isnan(value)) AS nan, (missing + nan) / count(*) AS share
        FROM feature_values GROUP BY feature HAVING missing + nan > 0 ORDER BY share DESC, feature""")


def _words(text: str) -> list[tuple[int, str]]:
    """(offset, upper-cased first word) of each token of `text` but comments, as DuckDB's tokenizer cuts it."""
    return [(offset, text[offset:].split(None, 1)[0].upper()) for offset, kind in duckdb.tokenize(text)
            if kind != duckdb.token_type.comment]


def _is_read(statement) -> bool:
    """SELECT (which covers FROM, VALUES, WITH, SHOW, DESCRIBE and SUMMARIZE), or EXPLAIN of exactly one such
    statement. EXPLAIN ANALYZE runs what it explains (`EXPLAIN ANALYZE COPY ...` writes), and its statement type
    is EXPLAIN either way, so the explained text is classified again on its own."""
    if statement.type == duckdb.StatementType.SELECT:
        return True
    if statement.type != duckdb.StatementType.EXPLAIN:
        return False
    offset, word = _words(statement.query)[0]
    try:
        explained = duckdb.extract_statements(statement.query[offset + len(word):])
    except duckdb.Error:  # EXPLAIN ANALYZE ..., EXPLAIN (FORMAT ...) ...
        return False
    return len(explained) == 1 and explained[0].type == duckdb.StatementType.SELECT


def read_statements(sql: str) -> list:
    """The statements of `sql`, or `SiqaError` for an empty text or a statement that is not a read
    (`_is_read`): an allow-list, so SET, PRAGMA, CALL, PREPARE/EXECUTE (PREPARE wraps COPY), CREATE (secrets),
    COPY, ATTACH, INSTALL/LOAD and whatever DuckDB adds next are refused without a list of them."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise SiqaError(f"sql: {str(exc).splitlines()[0]}") from None
    if not statements:
        raise SiqaError("sql: empty query; give a statement such as \"SELECT * FROM feature_srocc\", "
                        "or no query for the interactive shell")
    for statement in statements:
        if not _is_read(statement):
            words = [word for _, word in _words(statement.query)[:2]]
            shown = " ".join(words) if words[:1] == ["EXPLAIN"] else words[0]
            raise SiqaError(f"sql: {shown} is not allowed: `siqa sql` only reads the store (SELECT, and EXPLAIN of "
                            f"a SELECT; write a result with `siqa sql --out FILE \"SELECT ...\"`)")
    return statements


def _both_forms(paths: list[Path]) -> list[str]:
    return sorted({str(form) for path in paths for form in (path.absolute(), path.resolve())})


def _readable(root: Path, readable: Iterable[str | Path]) -> tuple[list[str], list[str]]:
    """(folders, files) `siqa sql` may read: the store, the runs registered as fit on it, and what the user
    named. Each as given (absolute) and with links resolved, since DuckDB checks the path it opens."""
    folders, files = [root, *FeatureStore(root).run_folders()], []
    for path in map(Path, readable):
        if not path.exists():
            raise SiqaError(f"{path}: no such file or folder (given to --allow-read)")
        (folders if path.is_dir() else files).append(path)
    return _both_forms(folders), _both_forms(files)


def _sql_list(values: list[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def user_connection(root: str | Path, extensions: Iterable[Extension] = (),
                    readable: Iterable[str | Path] = ()) -> duckdb.DuckDBPyConnection:
    """`connect`, then sandboxed by DuckDB's own settings and locked: what `siqa sql` and its shell use.
    Files are read only below the store, its registered runs and the `readable` files and folders; no
    extension is installed or loaded, no secret persisted; `lock_configuration` refuses any later SET."""
    con = connect(root, extensions=extensions)
    folders, files = _readable(Path(root), readable)
    con.execute(f"SET allowed_directories = {_sql_list(folders)}")
    con.execute(f"SET allowed_paths = {_sql_list(files)}")
    for setting in ("enable_external_access", "allow_persistent_secrets", "allow_community_extensions"):
        con.execute(f"SET {setting} = false")
    con.execute("SET lock_configuration = true")
    return con


#: how DuckDB names the file a statement could not read (sandbox refusal, nothing at that path)
_NAMED_FILE = re.compile(r'(?:Cannot access file|No files found that match the pattern|No such file or directory)[^"]*"([^"]+)"')


def error_line(exc: duckdb.Error) -> str:
    """One line for a DuckDB error of a user's statement: a file that is not there is named (the first folder
    of its path that is missing: a mistyped run folder, not the sandbox, is the problem); a sandbox refusal says
    what may be read."""
    named = _NAMED_FILE.search(str(exc))
    if named and not any(c in named[1] for c in "*?[") and not Path(named[1]).exists():
        missing = Path(named[1])
        while not missing.parent.exists() and missing.parent != missing:
            missing = missing.parent
        return f"sql: {missing}: no such file or folder"
    line = f"sql: {str(exc).splitlines()[0]}"
    if isinstance(exc, duckdb.PermissionException):
        line += " (`siqa sql` reads only the store, the runs fit on it and what --allow-read names)"
    return line


def query(root: str | Path, sql: str, extensions: Iterable[Extension] = (), readable: Iterable[str | Path] = ()):
    """Run the statement(s) of `sql` against the store's views (and those `extensions` add) on the sandboxed
    `user_connection`; returns the last one's result as a pandas DataFrame. Only reads are run."""
    statements = read_statements(sql)
    con = user_connection(root, extensions=extensions, readable=readable)
    try:
        for statement in statements:
            con.execute(statement)
        if con.description is None:
            raise SiqaError("sql: the last statement returns no rows")
        return con.fetchdf()
    except duckdb.Error as exc:
        raise SiqaError(error_line(exc)) from None
    finally:
        con.close()
