"""Features the store already holds for given pairs, read with DuckDB alone: what scoring a known pair needs.

`cached_features(root, folders, pair_ids)` reads the pair-level shards of each named extractor folder (the ones
a run was fit on) and returns every column as `<extractor>_<column>`, the names of the store's `features`
view: scalars (n,) float64, dense blocks (n, d) float32, rows in the order of `pair_ids`. It returns None as
soon as one folder lacks one of the pairs, or holds a NULL dense block for it: such pairs go through
`FeatureStore.extract`, which computes what is missing and reports what cannot be. Readers take no lock
(every shard appears whole or not at all). Nothing here imports pandas or pyarrow, which cost more to import
than scoring a pair does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def parquet_glob(folder: Path) -> str:
    """The shards of a level folder as a DuckDB glob inside a single-quoted SQL string."""
    return str(Path(folder) / "part-*.parquet").replace("'", "''")


def cached_features(root, folders: dict[str, str], pair_ids: list[str]) -> dict[str, np.ndarray] | None:
    import duckdb

    out: dict[str, np.ndarray] = {}
    con = duckdb.connect()
    try:
        for name, folder in sorted(folders.items()):
            level = Path(root) / "features" / folder / "pair"
            if not any(level.glob("part-*.parquet")):
                return None
            result = con.execute(f"SELECT * FROM read_parquet('{parquet_glob(level)}') "
                                 f"WHERE list_contains(?, pair_id)", [list(pair_ids)])
            columns = [(d[0], str(d[1])) for d in result.description]
            rows = {}
            for row in result.fetchall():
                rows.setdefault(row[0], row)
            if any(p not in rows for p in pair_ids):
                return None
            ordered = [rows[p] for p in pair_ids]
            for j, (column, kind) in enumerate(columns[1:], start=1):
                values = [r[j] for r in ordered]
                if kind.endswith("]"):  # FLOAT[] / FLOAT[d]: a dense block
                    if any(v is None for v in values):
                        return None
                    out[f"{name}_{column}"] = np.asarray(values, dtype=np.float32).reshape(len(values), -1)
                else:
                    out[f"{name}_{column}"] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    finally:
        con.close()
    return out
