"""The nested cross-validation engine: the CV Final a held-out test set would see.

For each repeat r (fold seed = seed + r), the labelled rows get K grouped, label-stratified folds.
For outer fold k, everything that produces its predictions is fit without fold k:
- the pool (with its meta-features) fit on all folds but k predicts fold k: the models' out-of-fold
  predictions, reported per model;
- the blender is fit on *inner* out-of-fold predictions of the other folds: rows of fold j != k come
  from a pool fit on all folds but {k, j}; the calibrator is fit on the same inner predictions;
  weights and calibration are then applied to fold k's pool predictions.
The fit without {k, j} serves outer folds k and j alike, so a repeat costs K + K(K-1)/2 pool fits
instead of K + K(K-1). Needs K >= 3 (with 2 folds an inner fit would have no rows).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from blend.blender import BoundedBlender
from blend.calibration import LabelScale, MonotoneCalibrator
from featurestore.errors import SiqaError

from .data import TabularData
from .folds import assign_folds
from .stack import StackedPool


def make_blender(settings: dict, seed: int) -> BoundedBlender:
    blend = settings["blend"]
    return BoundedBlender(cap=blend["cap"], method=blend["method"], rounds=blend["rounds"],
                          n_splits=blend["folds"], random_state=seed)


def make_calibrator(settings: dict, seed: int) -> MonotoneCalibrator:
    blend = settings["blend"]
    return MonotoneCalibrator(blend["calibration"], n_splits=blend["folds"], random_state=seed)


@dataclass
class NestedResult:
    members: list[str]
    predictions: list[pd.DataFrame]          # per repeat: rows x members, outer out-of-fold
    folds: list[np.ndarray]                  # per repeat: outer fold of every row
    blend: list[np.ndarray]                  # per repeat: nested blend (target scale)
    calibrated: list[np.ndarray]             # per repeat: nested calibrated score (0..5)
    blends: list[dict] = field(default_factory=list)   # per (repeat, fold): method, weights, inner CV scores
    fit_seconds: dict[str, float] = field(default_factory=dict)
    blend_seconds: float = 0.0                  # blender + calibrator fitting, all folds


def _fit_predict(train: TabularData, held: TabularData, settings, columns, blocks, seed, on_member=None):
    pool = StackedPool(settings, columns, blocks, seed).fit(train, on_member=on_member)
    return pool.predict(held), pool.fit_seconds_


def _pool_fits(data, fold, excluded_sets, settings, columns, blocks, seed, bar, what):
    """Yield (excluded folds, predictions of those folds' rows, fit seconds) for every excluded set.

    With `jobs` > 1 the fits run in that many worker processes (each fit is seeded and independent,
    so the results do not depend on `jobs`); progress is then reported per finished fit."""
    tasks = [(excluded, data.subset(~np.isin(fold, excluded)), data.subset(np.isin(fold, excluded)))
             for excluded in excluded_sets]
    jobs = int(settings.get("jobs", 1))
    if jobs <= 1:
        for excluded, train, held in tasks:
            label = "+".join(str(k + 1) for k in excluded)

            def announce(name, label=label):
                bar.set_description(f"{what} without fold {label}: {name}")
                bar.update(1)

            yield (excluded, *_fit_predict(train, held, settings, columns, blocks, seed, announce))
        return
    bar.set_description(f"{what}: {len(tasks)} pool fits on {jobs} workers")
    results = Parallel(n_jobs=jobs, return_as="generator")(
        delayed(_fit_predict)(train, held, settings, columns, blocks, seed) for _, train, held in tasks)
    for (excluded, _, _), (frame, seconds) in zip(tasks, results):
        bar.set_description(f"{what}: fit without fold {'+'.join(str(k + 1) for k in excluded)} done")
        bar.update(len(seconds))
        yield excluded, frame, seconds


def nested_cv(data: TabularData, settings: dict, columns: list[str], progress: bool = True) -> NestedResult:
    """Run the nested evaluation on `data` (labelled rows only)."""
    K, repeats, seed = int(settings["folds"]), int(settings["repeats"]), int(settings["seed"])
    if K < 3:
        raise SiqaError(f"config: nested cross-validation needs at least 3 folds, got {K}")
    if repeats < 1:
        raise SiqaError(f"config: tabular repeats must be at least 1, got {repeats}")
    target = data.target
    blocks = sorted(data.dense)
    members = StackedPool(settings, columns, blocks, seed).member_names()
    excluded_sets = [(k,) for k in range(K)] + list(combinations(range(K), 2))
    result = NestedResult(members=members, predictions=[], folds=[], blend=[], calibrated=[],
                          fit_seconds=dict.fromkeys(members, 0.0))

    bar = tqdm(total=repeats * len(excluded_sets) * len(members), disable=not progress, desc="nested CV",
               unit="fit", dynamic_ncols=True)
    for r in range(repeats):
        fold = assign_folds(target, data.groups, K, seed + r, settings["label_bins"], source=data.source or "labels")
        # predictions[excluded] = pool fit without the excluded folds, predicting exactly those folds' rows
        predictions: dict[tuple, pd.DataFrame] = {}
        for excluded, frame, seconds in _pool_fits(data, fold, excluded_sets, settings, columns, blocks, seed,
                                                   bar, f"repeat {r + 1}/{repeats}"):
            for name, value in seconds.items():
                result.fit_seconds[name] += value
            predictions[excluded] = frame.set_index(pd.Index(np.flatnonzero(np.isin(fold, excluded))))

        outer = pd.concat([predictions[(k,)] for k in range(K)]).sort_index()
        blend = np.empty(len(target))
        calibrated = np.empty(len(target))
        for k in range(K):
            inner = pd.concat([predictions[tuple(sorted((k, j)))].loc[np.flatnonzero(fold == j)]
                               for j in range(K) if j != k]).sort_index()
            rows = inner.index.to_numpy()
            started = time.perf_counter()
            blender = make_blender(settings, seed).fit(inner.to_numpy(), target[rows], data.groups[rows])
            # the 0..5 label scale too is learnt without fold k (its min and max are labels)
            calibrator = make_calibrator(settings, seed).fit(
                blender.predict(inner.to_numpy()), LabelScale().fit(target[rows]).transform(target[rows]),
                data.groups[rows])
            result.blend_seconds += time.perf_counter() - started
            test = np.flatnonzero(fold == k)
            blend[test] = blender.predict(outer.loc[test].to_numpy())
            calibrated[test] = calibrator.transform(blend[test])
            result.blends.append({"repeat": r, "fold": k, "method": blender.method_,
                                  "weights": dict(zip(members, map(float, blender.weights_))),
                                  "inner_cv": blender.cv_scores_, "calibration": calibrator.method_,
                                  "calibration_cv": calibrator.cv_scores_})
        result.predictions.append(outer[members].reset_index(drop=True))
        result.folds.append(fold)
        result.blend.append(blend)
        result.calibrated.append(calibrated)
    bar.close()
    return result
