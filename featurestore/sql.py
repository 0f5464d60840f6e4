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
    worst_pairs(run_dir[, n := 10])   a run's out-of-fold pairs by largest residual from the fitted line
"""
from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import SiqaError
from .store import FeatureStore


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _parquet_glob(folder: Path) -> str:
    return str(folder / "part-*.parquet").replace("'", "''")


def _select_list(folder: Path) -> str:
    """Parquet has no fixed-size list type, so DuckDB reads dense blocks back as LIST; cast them to
    ARRAY (FLOAT[d]) from the Arrow schema kept in the shard, so SQL can use array_cosine_similarity."""
    schema = pq.read_schema(FeatureStore.shards(folder)[0])
    parts = []
    for f in schema:
        if pa.types.is_fixed_size_list(f.type):
            parts.append(f"CAST({_quote(f.name)} AS FLOAT[{f.type.list_size}]) AS {_quote(f.name)}")
        else:
            parts.append(_quote(f.name))
    return ", ".join(parts)


def connect(root: str | Path, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    store = FeatureStore(root)
    if not store.pairs_path.exists():
        raise SiqaError(f"{store.root}: no feature store here (run `siqa features --data ...` first)")
    con = duckdb.connect(database)
    pairs = str(store.pairs_path).replace("'", "''")
    con.execute(f"CREATE OR REPLACE VIEW pairs AS SELECT * FROM read_parquet('{pairs}')")
    con.execute("CREATE OR REPLACE VIEW labels AS SELECT pair_id, split, name, label FROM pairs WHERE label IS NOT NULL")
    select = ["p.*"]
    joins = []
    for name, info in sorted(store.views().items()):
        base = store.root / "features" / info["folder"]
        created = set()
        for level, view in (("pair", name), ("image", f"{name}_image")):
            # Look once: a writer may add the first shard at any moment while we build the views.
            if FeatureStore.shards(base / level):
                con.execute(f"CREATE OR REPLACE VIEW {_quote(view)} AS "
                            f"SELECT {_select_list(base / level)} FROM read_parquet('{_parquet_glob(base / level)}')")
                created.add(level)
        if "pair" not in created:
            continue
        alias = f"e_{len(joins)}"
        columns = [r[0] for r in con.execute(f"DESCRIBE {_quote(name)}").fetchall() if r[0] != "pair_id"]
        select += [f"{alias}.{_quote(c)} AS {_quote(f'{name}_{c}')}" for c in columns]
        joins.append(f"LEFT JOIN {_quote(name)} {alias} USING (pair_id)")
    con.execute(f"CREATE OR REPLACE VIEW features AS SELECT {', '.join(select)} FROM pairs p {' '.join(joins)}")
    _add_macros(con)
    return con


def _add_macros(con: duckdb.DuckDBPyConnection) -> None:
    """Views and a table macro for the questions people ask first of a store and a run."""
    pair_columns = {r[0] for r in con.execute("DESCRIBE pairs").fetchall()}
    scalars = [r[0] for r in con.execute("DESCRIBE features").fetchall()
               if r[0] not in pair_columns and r[1] == "DOUBLE"]
    if scalars:
        # INCLUDE NULLS keeps pairs an extractor never computed, so feature_nans can count them.
        con.execute("CREATE OR REPLACE VIEW feature_values AS SELECT pair_id, split, name, label, feature, value "
                    f"FROM features UNPIVOT INCLUDE NULLS (value FOR feature IN ({', '.join(map(_quote, scalars))}))")
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
    # prediction = the calibrated blend (what a submission holds), averaged over repeats. The residual is
    # taken from the least-squares line label ~ prediction, so a label on another scale (TID2013 MOS,
    # DMOS) still ranks pairs by how far they sit from the trend. blend/report.py uses the same rule.
    con.execute("""
        CREATE OR REPLACE MACRO worst_pairs(run_dir, n := 10) AS TABLE
        WITH o AS (SELECT CAST(id AS VARCHAR) AS id, avg(label) AS label, avg(blend_calibrated) AS prediction
                   FROM read_parquet(run_dir || '/oof.parquet') WHERE label IS NOT NULL GROUP BY ALL),
        line AS (SELECT regr_intercept(label, prediction) AS a, regr_slope(label, prediction) AS b FROM o)
        SELECT o.id, p.split, p.name, o.label, o.prediction, line.a + line.b * o.prediction AS fitted,
               o.label - fitted AS residual, p.ref_path, p.dist_path
        FROM o CROSS JOIN line
        LEFT JOIN (SELECT DISTINCT ON (pair_id) * FROM pairs ORDER BY pair_id, label IS NULL, split, name) p
               ON p.pair_id = o.id  -- one row per pair, even if it was registered under two names
        ORDER BY abs(residual) DESC, o.id LIMIT n""")


def query(root: str | Path, sql: str):
    """Run one query against the store's views; returns a pandas DataFrame."""
    con = connect(root)
    try:
        return con.execute(sql).df()
    except duckdb.Error as exc:
        raise SiqaError(f"sql: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
