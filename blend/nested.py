"""The nested cross-validation engine: the CV Final a held-out test set would see.

For each repeat r (fold seed = seed + r), the labelled rows get K grouped, label-stratified folds.
For outer fold k, everything that produces its predictions is fit without fold k:
- the pool (with its meta-features) fit on all folds but k predicts fold k: the models' out-of-fold
  predictions, reported per model;
- the blender is fit on *inner* out-of-fold predictions of the other folds: rows of fold j != k come
  from a pool fit on all folds but {k, j}; the calibrator is fit on the same inner predictions;
  weights and calibration are then applied to fold k's pool predictions.
The pool tables (outer and inner out-of-fold predictions) come from `tabular.nested`; this module
learns the blend and calibration from them. Needs K >= 3 (with 2 folds an inner fit would have no rows).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from featurestore.errors import SiqaError
from tabular.data import TabularData
from tabular.folds import assign_folds
from tabular.nested import excluded_sets, inner_table, outer_table, pool_tables
from tabular.stack import StackedPool

from .calibration import LabelScale
from .config import make_blender, make_calibrator


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
    result = NestedResult(members=members, predictions=[], folds=[], blend=[], calibrated=[],
                          fit_seconds=dict.fromkeys(members, 0.0))

    bar = tqdm(total=repeats * len(excluded_sets(K)) * len(members), disable=not progress, desc="nested CV",
               unit="fit", dynamic_ncols=True)
    for r in range(repeats):
        fold = assign_folds(target, data.groups, K, seed + r, settings["label_bins"], source=data.source or "labels")
        predictions = pool_tables(data, fold, K, settings, columns, blocks, seed, bar, f"repeat {r + 1}/{repeats}",
                                  result.fit_seconds)
        outer = outer_table(predictions, K)
        blend = np.empty(len(target))
        calibrated = np.empty(len(target))
        for k in range(K):
            inner = inner_table(predictions, fold, k, K)
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
