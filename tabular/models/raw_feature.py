"""The best single feature used as it is: no fitted map, so no fold-to-fold shift.

`best_single_feature` maps its column linearly onto the target, and that map is refit in every fold; on a
table of a few reference images the maps differ from fold to fold and pooled out-of-fold PLCC and
SROCC pay for every shift. This member only chooses, on the training rows, the column with the best
Final and its sign (a distortion metric falls as quality rises); its prediction is that column's raw
value times the sign. Missing values take the training median. The output is on the feature's
scale, not the target's (`on_target_scale = False`), so it is a baseline row of the leaderboard and
not an input of the blend: averaged with members on the target's scale, its values would swamp them or
vanish. Its mapped twin `best_single_feature` is what the blend may take.
"""
from __future__ import annotations

import numpy as np

from .. import metrics
from ..inference import step
from .base import POOL, PoolModel, select_columns


@POOL.register("raw_feature")
class RawFeatureModel(PoolModel):
    on_target_scale = False

    def __init__(self, columns: list[str] | None = None):
        self.columns = columns

    def _fit(self, X, y, groups):
        X = select_columns(X, self.columns, self.name)
        best = (-np.inf, None, 1.0, 0.0)
        for column in X.columns:
            values = X[column].to_numpy(dtype=np.float64)
            finite = values[np.isfinite(values)]
            if finite.size == 0:
                continue
            fill = float(np.median(finite))
            x = np.where(np.isfinite(values), values, fill)
            sign = 1.0 if metrics.srocc(x, y) >= 0 else -1.0
            score = metrics.final(sign * x, y)
            if score > best[0]:
                best = (score, str(column), sign, fill)
        _, self.column_, self.sign_, self.fill_ = best
        if self.column_ is None:
            self.column_, self.sign_, self.fill_ = str(X.columns[0]), 1.0, 0.0
        return self

    def describe(self) -> str:
        return f"picked {self.column_}" + (" (reversed: lower is better)" if self.sign_ < 0 else "")

    def _predict(self, X):
        values = X[self.column_].to_numpy(dtype=np.float64)
        return self.sign_ * np.where(np.isfinite(values), values, self.fill_)

    def export(self):
        return [step("take", index=self._positions([self.column_])), step("fill_nonfinite", value=self.fill_),
                step("linear", coef=np.array([self.sign_]), intercept=0.0)]
