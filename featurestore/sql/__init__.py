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

`siqa sql` cannot change the store: the connection is an in-memory database whose views read the store's
Parquet files; statements that write files or reach other databases (COPY, EXPORT, ATTACH, INSTALL/LOAD)
are refused before they run (`read_only_statements`), the configuration is locked once the views exist
(no `SET temp_directory` into the store), and `--out` may not point into the store (`check_output`).
Results are written with `siqa sql --out FILE`.

A layer above the store adds its own views and macros through `extensions`: callables given the
connection once the store's views exist (`blend.sql.run_macros` adds the run-level `worst_pairs`); the
store knows nothing about runs.
"""
from __future__ import annotations

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
    con = duckdb.connect(database)
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


#: statement types that write files, or reach beyond the in-memory views: never run by `siqa sql`
WRITING = {duckdb.StatementType.COPY, duckdb.StatementType.EXPORT, duckdb.StatementType.ATTACH,
           duckdb.StatementType.DETACH, duckdb.StatementType.COPY_DATABASE, duckdb.StatementType.LOAD,
           duckdb.StatementType.EXTENSION}


def read_only_statements(sql: str) -> list:
    """The statements of `sql`, or `SiqaError` for an empty text or one that would write (see `WRITING`)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise SiqaError(f"sql: {str(exc).splitlines()[0]}") from None
    if not statements:
        raise SiqaError("sql: empty query; give a statement such as \"SELECT * FROM feature_srocc\", "
                        "or no query for the interactive shell")
    for statement in statements:
        if statement.type in WRITING:
            word = statement.query.strip().split(None, 1)[0].upper()
            raise SiqaError(f"sql: {word} is not allowed: `siqa sql` only reads the store (write a result "
                            f"with `siqa sql --out FILE \"SELECT ...\"`)")
    return statements


def user_connection(root: str | Path, extensions: Iterable[Extension] = ()) -> duckdb.DuckDBPyConnection:
    """`connect`, then the configuration locked: what `siqa sql` and its shell use."""
    con = connect(root, extensions=extensions)
    con.execute("SET lock_configuration = true")
    return con


def check_output(root: str | Path, out: str | Path) -> None:
    """`siqa sql --out` may write anywhere but into the store."""
    store, target = Path(root).resolve(), Path(out).resolve()
    if target == store or store in target.parents:
        raise SiqaError(f"{out}: inside the feature store {root}; `siqa sql` never writes into a store - "
                        f"choose a path outside it")


def query(root: str | Path, sql: str, extensions: Iterable[Extension] = ()):
    """Run the statement(s) of `sql` against the store's views (and those `extensions` add); returns the
    last one's result as a pandas DataFrame. Statements that would write are refused."""
    statements = read_only_statements(sql)
    con = user_connection(root, extensions=extensions)
    try:
        for statement in statements:
            con.execute(statement)
        if con.description is None:
            raise SiqaError("sql: the last statement returns no rows")
        return con.fetchdf()
    except duckdb.Error as exc:
        raise SiqaError(f"sql: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
