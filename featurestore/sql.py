"""DuckDB views over the store's Parquet: the one way the tabular stage and users read features.

Views:
    pairs                 every registered pair (pair_id, split, name, paths, sha256s, label)
    labels                labelled pairs only (pair_id, split, name, label)
    <extractor>           pair-level columns of one extractor, keyed by pair_id
    <extractor>_image     per-image columns of an image-level extractor, keyed by sha256
    features              pairs + every extractor column as <extractor>_<column> (scalars DOUBLE,
                          dense blocks FLOAT[d]), one row per registered pair
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
        for level, view in (("pair", name), ("image", f"{name}_image")):
            if FeatureStore.shards(base / level):
                con.execute(f"CREATE OR REPLACE VIEW {_quote(view)} AS "
                            f"SELECT {_select_list(base / level)} FROM read_parquet('{_parquet_glob(base / level)}')")
        if not FeatureStore.shards(base / "pair"):
            continue
        alias = f"e_{len(joins)}"
        columns = [r[0] for r in con.execute(f"DESCRIBE {_quote(name)}").fetchall() if r[0] != "pair_id"]
        select += [f"{alias}.{_quote(c)} AS {_quote(f'{name}_{c}')}" for c in columns]
        joins.append(f"LEFT JOIN {_quote(name)} {alias} USING (pair_id)")
    con.execute(f"CREATE OR REPLACE VIEW features AS SELECT {', '.join(select)} FROM pairs p {' '.join(joins)}")
    return con


def query(root: str | Path, sql: str):
    """Run one query against the store's views; returns a pandas DataFrame."""
    con = connect(root)
    try:
        return con.execute(sql).df()
    except duckdb.Error as exc:
        raise SiqaError(f"sql: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
