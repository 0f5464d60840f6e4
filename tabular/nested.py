"""Nested out-of-fold pool tables: for one fold assignment, the pool's predictions of every fold (or
pair of folds) from a pool fit without it.

For K outer folds, `pool_tables` fits the pool once per excluded set: each single fold k (its rows'
predictions are the *outer* out-of-fold table) and each pair {k, j} (predicting fold j's rows without
k and j: the *inner* out-of-fold rows that a blender for outer fold k may learn from). The fit without
{k, j} serves outer folds k and j alike, so a repeat costs K + K(K-1)/2 pool fits instead of K + K(K-1).
What is learnt from these tables (blend, calibration) lives in the blend layer (`blend.nested`).
"""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from .data import TabularData
from .stack import StackedPool


def excluded_sets(n_folds: int) -> list[tuple[int, ...]]:
    """Every single fold, then every pair of folds: the fold sets one repeat fits the pool without."""
    return [(k,) for k in range(n_folds)] + list(combinations(range(n_folds), 2))


def _fit_predict(pool: StackedPool, train: TabularData, held: TabularData, on_member=None):
    fitted = pool.fresh().fit(train, on_member=on_member)
    return fitted.predict(held), fitted.fit_seconds_


def _pool_fits(pool: StackedPool, data, fold, excluded, bar, what):
    """Yield (excluded folds, predictions of those folds' rows, fit seconds) for every excluded set.

    With `jobs` > 1 the fits run in that many worker processes (each fit is seeded and independent,
    so the results do not depend on `jobs`); progress is then reported per finished fit."""
    tasks = [(ex, data.subset(~np.isin(fold, ex)), data.subset(np.isin(fold, ex))) for ex in excluded]
    jobs = pool.settings.jobs
    if jobs <= 1:
        for ex, train, held in tasks:
            label = "+".join(str(k + 1) for k in ex)

            def announce(name, label=label):
                bar.set_description(f"{what} without fold {label}: {name}")
                bar.update(1)

            yield (ex, *_fit_predict(pool, train, held, announce))
        return
    bar.set_description(f"{what}: {len(tasks)} pool fits on {jobs} workers")
    results = Parallel(n_jobs=jobs, return_as="generator")(
        delayed(_fit_predict)(pool, train, held) for _, train, held in tasks)
    for (ex, _, _), (frame, seconds) in zip(tasks, results):
        bar.set_description(f"{what}: fit without fold {'+'.join(str(k + 1) for k in ex)} done")
        bar.update(len(seconds))
        yield ex, frame, seconds


def pool_fit(pool: StackedPool, data: TabularData, fold: np.ndarray,
             excluded: tuple[int, ...]) -> tuple[pd.DataFrame, dict[str, float]]:
    """One fit of `pool` without the `excluded` folds, in this process: (its predictions of those folds' rows,
    indexed by row; each member's fit seconds). A time plan is made from the first one of a run."""
    held = np.isin(fold, excluded)
    frame, seconds = _fit_predict(pool, data.subset(~held), data.subset(held))
    return frame.set_index(pd.Index(np.flatnonzero(held))), seconds


def pool_tables(pool: StackedPool, data: TabularData, fold: np.ndarray, n_folds: int, bar, what: str,
                fit_seconds: dict[str, float], done: dict[tuple, pd.DataFrame] | None = None) -> dict[tuple, pd.DataFrame]:
    """{excluded folds: member predictions of exactly those folds' rows (indexed by row) from a fit of `pool`
    without them}; every member's fit time is added to `fit_seconds`; `bar` counts member fits. Fits
    already in `done` (same keys and layout) are kept, not repeated."""
    predictions: dict[tuple, pd.DataFrame] = dict(done or {})
    todo = [ex for ex in excluded_sets(n_folds) if ex not in predictions]
    for excluded, frame, seconds in _pool_fits(pool, data, fold, todo, bar, what):
        for name, value in seconds.items():
            fit_seconds[name] += value
        predictions[excluded] = frame.set_index(pd.Index(np.flatnonzero(np.isin(fold, excluded))))
    return predictions


def outer_table(predictions: dict[tuple, pd.DataFrame], n_folds: int) -> pd.DataFrame:
    """Every row's prediction from the pool fit without its own fold, in row order."""
    return pd.concat([predictions[(k,)] for k in range(n_folds)]).sort_index()


def inner_table(predictions: dict[tuple, pd.DataFrame], fold: np.ndarray, k: int, n_folds: int) -> pd.DataFrame:
    """The rows of every fold j != k, each predicted by the pool fit without {k, j}: what outer fold k's
    blender may learn from, in row order."""
    return pd.concat([predictions[tuple(sorted((k, j)))].loc[np.flatnonzero(fold == j)]
                      for j in range(n_folds) if j != k]).sort_index()
