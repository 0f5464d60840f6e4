"""Score new (reference, degraded) pairs with a fitted run.

    import siqa
    siqa.score("ref.png", "dist.png", run="runs/latest")            # -> 3.87 (0..5, higher = more meaning kept)
    siqa.score(["a.png", "b.png"], ["a_jpeg.png", "b_crop.png"])     # -> array of scores

`predict_pairs` is the same for a whole `PairTable` (what `siqa predict` calls). The run's config copy says
which extractors (and settings) it was fit on; their features come through the feature store, so any image or
pair seen before is not computed again, and new features land in the store for next time. The new pairs are
not added to the store's own pair table, which is the dataset `siqa oof` learns from: they are registered in a
scratch store that shares the real store's feature shards (and its lock, so a concurrent `siqa features`
waits), and read back through the same DuckDB views the run was fit from.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from featurestore.errors import SiqaError

DEFAULT_RUN = "runs/latest"
DEFAULT_STORE = "store"


def default_store(store) -> Path:
    """`store`, else $SIQA_STORE, else ./store."""
    return Path(store or os.environ.get("SIQA_STORE") or DEFAULT_STORE)


def score(ref, dist, run=DEFAULT_RUN, store=None, progress: bool = False):
    """Quality score (0..5, higher = better) of `dist` against `ref`.

    `ref`, `dist`: one image path each (returns a float) or two equally long sequences of paths (returns a
    numpy array). `store`: the feature store to reuse and fill (default `$SIQA_STORE` or ./store).
    """
    from featurestore.datasets import PairTable

    single = isinstance(ref, (str, os.PathLike))
    if single != isinstance(dist, (str, os.PathLike)):
        raise SiqaError("score: give one path for both ref and dist, or a sequence of paths for both")
    refs, dists = ([ref], [dist]) if single else (list(ref), list(dist))
    if len(refs) != len(dists):
        raise SiqaError(f"score: {len(refs)} reference path(s) but {len(dists)} degraded path(s)")
    if not refs:
        return np.empty(0)
    for path in dict.fromkeys(map(str, refs + dists)):
        if not Path(path).is_file():
            raise SiqaError(f"{path}: no such image file")
    table = PairTable.from_paths(list(zip(refs, dists)), split="test")
    scores = predict_pairs(table, run=Path(run), store=default_store(store), progress=progress)["score"].to_numpy()
    return float(scores[0]) if single else scores


def predict_pairs(table, run: Path, store: Path, progress: bool = True) -> pd.DataFrame:
    """Scores of every row of `table` (a `PairTable`): columns `name` (the table's) and `score` (0..5).

    The frame's `attrs["extract"]` holds the store's `ExtractSummary` (features computed / reused) and
    `attrs["seconds"]` the wall time, for the command line's summary line.
    """
    from blend.run import load_run
    from featurestore.config import build_extractors
    from featurestore.datasets import PairTable
    from featurestore.store import FeatureStore
    from featurestore.weights import check_weights
    from tabular.data import TabularData

    started = time.perf_counter()
    run = Path(run)
    fitted = load_run(run)
    origin = fitted.summary["source"].get("origin") or {}
    if origin.get("kind") != "store":
        raise SiqaError(f"{run}: this run was fit on the feature table {origin.get('path', '?')}, not on image "
                        f"features; only a run fit on a feature store can score images")
    extractors = build_extractors(fitted.config.get("input") or {})
    if not extractors:
        raise SiqaError(f"{run}/config.json: the run's config enables no extractor")
    check_weights(extractors)

    # Unique names in the scratch store: the store keys pairs by (split, name), and two degraded files in
    # different folders may share a name. Labels stay out: nothing here is learnt from.
    scratch_df = table.df.assign(split="test", name=[f"{i:08d}" for i in range(len(table))], label=math.nan)
    main = FeatureStore(store)
    with tempfile.TemporaryDirectory(prefix="siqa-predict-") as tmp, main.lock():
        (main.root / "features").mkdir(parents=True, exist_ok=True)
        scratch = FeatureStore(tmp)
        os.symlink((main.root / "features").resolve(), scratch.root / "features", target_is_directory=True)
        summary = scratch.extract(PairTable(scratch_df, table.source), extractors, progress=progress)
        if summary.failures:
            where, why = sorted(summary.failures.items())[0]
            raise SiqaError(f"{where}: {why}" + (f" (and {len(summary.failures) - 1} more failure(s))"
                                                  if len(summary.failures) > 1 else ""))
        data = TabularData.from_store(scratch.root)
    scores = pd.Series(fitted.pipeline.predict(data), index=data.names)
    out = pd.DataFrame({"name": table.df["name"].to_numpy(), "score": scores.loc[scratch_df["name"]].to_numpy()})
    out.attrs["extract"] = summary
    out.attrs["seconds"] = time.perf_counter() - started
    return out


__all__ = ["score", "predict_pairs", "default_store", "DEFAULT_RUN", "DEFAULT_STORE"]
