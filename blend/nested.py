"""The nested cross-validation engine: the CV Final a held-out test set would see.

For each repeat r (fold seed = seed + r), the labelled rows get K grouped, label-stratified folds.
For outer fold k, everything that produces its predictions is fit without fold k:
- the pool (with its meta-features) fit on all folds but k predicts fold k: the models' out-of-fold
  predictions, reported per model;
- the blender is fit on *inner* out-of-fold predictions of the other folds: rows of fold j != k come
  from a pool fit on all folds but {k, j}; the calibrator is fit on the same inner predictions;
  weights and calibration are then applied to fold k's pool predictions.
The pool tables (outer and inner out-of-fold predictions) come from `tabular.nested`; this module
learns the blend and calibration from them. Needs K >= 3 (with 2 folds an inner fit would have no rows);
the settings schema says so (`tabular.settings.TabularSettings.folds`).

`NestedCV` is this whole procedure for one run: its settings, feature columns and pool plan, the repeats,
the outer folds, the pool tables and the blend and calibration per outer fold, read in one place.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from tabular import metrics
from tabular.data import TabularData
from tabular.folds import assign_folds
from tabular.nested import excluded_sets, inner_table, outer_table, pool_fit, pool_tables
from tabular.stack import PoolPlan, StackedPool

from . import budget
from .calibration import LabelScale
from .settings import StackSettings


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
    plan: budget.Plan | None = None             # what a time limit dropped
    pool_plan: PoolPlan = PoolPlan()            # the members the run dropped (time plan, min_rows)

    @property
    def repeats(self) -> int:
        return len(self.predictions)


class NestedCV:
    """The nested evaluation of a run: `run(data)` on its labelled rows.

    `settings.time_limit` (seconds, or None) plans members and repeats to fit (`blend.budget`); tables
    with more than `settings.single_repeat_rows` labelled rows run one repeat (their fold luck is small,
    and the group-bootstrap interval reports what is left); members whose `min_rows` exceed the table's rows
    are dropped. What the run actually did (repeats, dropped members) is in the result, not in the settings."""

    def __init__(self, settings: StackSettings, columns: list[str], plan: PoolPlan = PoolPlan()):
        self.settings = settings
        self.columns = columns
        self.plan = plan

    def run(self, data: TabularData, progress: bool = True) -> NestedResult:
        settings = self.settings
        K, repeats, seed = settings.folds, settings.repeats, settings.seed
        run_started = time.perf_counter()
        target = data.target
        if settings.single_repeat_rows is not None and data.n_rows > settings.single_repeat_rows:
            repeats = 1
        plan = self.plan.dropping(settings.members_below(data.n_rows))  # members configured for bigger tables only
        blocks = sorted(data.dense)
        # The 0..5 score's units: the labels' range over every labelled row, fixed before any fold, as one would
        # declare "MOS 1..9". Its end points are the only thing taken from held-out labels, and no fitting sees
        # them: a label range fit per fold (min and max of the training labels, the noisiest statistics there
        # are) moves every fold's scores by a different affine map, and pooled PLCC and SROCC pay for the moves.
        scale = LabelScale().fit(target)
        pool = StackedPool(settings, self.columns, blocks, seed, plan)
        members = pool.member_names()
        result = NestedResult(members=members, predictions=[], folds=[], blend=[], calibrated=[],
                              fit_seconds=dict.fromkeys(members, 0.0))

        bar = tqdm(total=repeats * len(excluded_sets(K)) * len(members), disable=not progress, desc="nested CV",
                   unit="fit", dynamic_ncols=True)
        for r in range(repeats):
            if r > 0 and settings.time_limit is not None:
                per_repeat = (time.perf_counter() - run_started) / r
                if time.perf_counter() - run_started + per_repeat > settings.time_limit * (1 - budget.RESERVE):
                    result.plan.dropped_repeats += repeats - r
                    result.plan.repeats = r
                    break
            fold = assign_folds(target, data.groups, K, seed + r, settings.label_bins, source=data.source or "labels")
            done = {}
            if r == 0 and settings.time_limit is not None:
                # the first pool fit, timed member by member, is what the plan is made from
                first = excluded_sets(K)[0]
                bar.set_description(f"repeat 1/{repeats}: timing the pool without fold 1")
                frame, seconds = pool_fit(pool, data, fold, first)
                held = target[frame.index.to_numpy()]
                result.plan = budget.plan(seconds, {m: metrics.final(frame[m].to_numpy(), held) for m in members},
                                          repeats, len(excluded_sets(K)), settings.jobs, settings.time_limit,
                                          time.perf_counter() - run_started)
                plan = plan.dropping(result.plan.dropped_members)
                pool = StackedPool(settings, self.columns, blocks, seed, plan)
                repeats, members = result.plan.repeats, result.plan.members
                result.members = members
                result.fit_seconds = {m: seconds[m] for m in members}
                done = {first: frame[members]}
                bar.total = repeats * len(excluded_sets(K)) * len(members)
                bar.update(len(members))
            predictions = pool_tables(pool, data, fold, K, bar, f"repeat {r + 1}/{repeats}", result.fit_seconds, done)
            self._blend_folds(pool.blended_names(members), members, predictions, fold, r, data, scale, result)
            result.folds.append(fold)
        bar.close()
        if result.plan is None:
            result.plan = budget.Plan(None, result.repeats, members)
        result.pool_plan = plan
        return result

    def _blend_folds(self, blended: list[str], members: list[str], predictions: dict, fold: np.ndarray, r: int,
                     data: TabularData, scale: LabelScale, result: NestedResult) -> None:
        """Per outer fold k: blender and calibrator fit on the inner table without k, applied to fold k's rows."""
        K, seed, target = self.settings.folds, self.settings.seed, data.target
        outer = outer_table(predictions, K)
        blend = np.empty(len(target))
        calibrated = np.empty(len(target))
        for k in range(K):
            inner = inner_table(predictions, fold, k, K)[blended]
            rows = inner.index.to_numpy()
            started = time.perf_counter()
            blender = self.settings.make_blender(seed).fit(inner.to_numpy(), target[rows], data.groups[rows])
            calibrator = self.settings.make_calibrator(seed).fit(blender.predict(inner.to_numpy()), target[rows],
                                                                 data.groups[rows], scale)
            result.blend_seconds += time.perf_counter() - started
            test = np.flatnonzero(fold == k)
            blend[test] = blender.predict(outer.loc[test, blended].to_numpy())
            calibrated[test] = calibrator.transform(blend[test])
            weights = dict(zip(blended, map(float, blender.weights_)))
            result.blends.append({"repeat": r, "fold": k, "method": blender.method_,
                                  "weights": {m: weights.get(m, 0.0) for m in members},
                                  "inner_cv": blender.cv_scores_, "calibration": calibrator.method_,
                                  "calibration_cv": calibrator.cv_scores_})
        result.predictions.append(outer[members].reset_index(drop=True))
        result.blend.append(blend)
        result.calibrated.append(calibrated)
