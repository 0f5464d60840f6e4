"""Run-level SQL: the table macro `worst_pairs(run_dir[, n := 10])` on a store connection.

`featurestore.sql.connect(root, extensions=RUN_EXTENSIONS)` (what `siqa sql` opens) adds it to the store's
views; the store itself knows nothing about runs. Under `siqa sql` the macro reads `RUN/oof.parquet` on the
sandboxed connection: a run registered as fit on the store is readable, any other one only when named with
`--allow-read RUN`.

    worst_pairs(run_dir[, n := 10])   a run's out-of-fold pairs by largest residual from the fitted line:
                                      id, split, name, label, prediction, fitted, residual, ref_path, dist_path
"""
from __future__ import annotations

import duckdb


def run_macros(con: duckdb.DuckDBPyConnection) -> None:
    """Add the run-level macros to a connection that has the store's `pairs` view."""
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


RUN_EXTENSIONS = (run_macros,)
