"""Linear pool models: Ridge (optionally on log-features, optionally on a configured column set) and
the best single feature.

These are the fall-backs for small tables, where boosted trees lose to a Ridge on log-features or to
the best single metric. The presets' `log_ridge` member (origin: the challenge's rank-6 recipe, "Ridge on
a configured set of metric features with CV-chosen alpha"; its old member name `rank6` is still accepted)
is this `ridge` model configured with `log_features` (and optionally `columns`).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .. import metrics
from ..inference import step
from ..ridge import DEFAULT_ALPHAS, GroupedRidgeCV
from .base import META_PREFIX, POOL, FiniteScaler, PoolModel, select_columns


class LogAugment:
    """Adds log(x + c) for every column that is non-negative in training (metric values are skewed:
    most pairs sit near zero distortion); c is half the smallest positive training value."""

    def fit(self, X: np.ndarray) -> "LogAugment":
        finite = np.where(np.isfinite(X), X, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: handled by nan_to_num below
            low = np.nanmin(finite, axis=0)
            positive_min = np.nanmin(np.where(finite > 0, finite, np.nan), axis=0)
        self.columns_ = np.flatnonzero(np.nan_to_num(low, nan=-1.0) >= 0)
        self.offset_ = np.nan_to_num(positive_min[self.columns_] / 2, nan=1.0)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            logged = np.log(np.clip(X[:, self.columns_], 0, None) + self.offset_)
        return np.hstack([X, logged])

    def export(self) -> dict:
        return step("log_augment", columns=self.columns_, offset=self.offset_)


@POOL.register("ridge")
class RidgeModel(PoolModel):
    def __init__(self, columns: list[str] | None = None, use_meta: bool = True, log_features: bool = False,
                 alphas: tuple[float, ...] = DEFAULT_ALPHAS, inner_folds: int = 5, random_state: int = 0):
        self.columns = columns
        self.use_meta = use_meta
        self.log_features = log_features
        self.alphas = alphas
        self.inner_folds = inner_folds
        self.random_state = random_state

    def _selected(self, X: pd.DataFrame) -> list[str]:
        names = list(select_columns(X, self.columns, self.name).columns)
        return names if self.use_meta else [c for c in names if not c.startswith(META_PREFIX)]

    def _inputs(self, X: pd.DataFrame) -> np.ndarray:
        return X[self._selected(X)].to_numpy(dtype=np.float64)

    def _fit(self, X, y, groups):
        Z = self._inputs(X)
        if self.log_features:
            self.log_ = LogAugment().fit(Z)
            Z = self.log_.transform(Z)
        self.scaler_ = FiniteScaler().fit(Z)
        self.ridge_ = GroupedRidgeCV(alphas=tuple(self.alphas), n_splits=self.inner_folds,
                                     random_state=self.random_state)
        self.ridge_.fit(self.scaler_.transform(Z), y, groups)

    def _predict(self, X):
        Z = self._inputs(X)
        if self.log_features:
            Z = self.log_.transform(Z)
        return self.ridge_.predict(self.scaler_.transform(Z))

    def export(self):
        names = self._selected(self._frame(np.zeros((0, self.n_features_in_))))
        return [step("take", index=self._positions(names)), *([self.log_.export()] if self.log_features else []),
                self.scaler_.export(), *self.ridge_.export()]


@POOL.register("best_single_feature")
class BestFeatureModel(PoolModel):
    """The single column with the best training Final (sign-aligned), mapped linearly onto the target: the
    simplest baseline, a raw metric used as it is. `describe()` names the column it picked (the run records
    it). Former pool name `best_feature`, still accepted."""

    def __init__(self, columns: list[str] | None = None):
        self.columns = columns

    def _fit(self, X, y, groups):
        X = select_columns(X, self.columns, self.name)
        Z = FiniteScaler().fit(X).transform(X)
        scores = []
        for j in range(Z.shape[1]):
            sign = 1.0 if metrics.srocc(Z[:, j], y) >= 0 else -1.0
            scores.append(metrics.final(sign * Z[:, j], y))
        best = int(np.argmax(scores))
        self.column_ = str(X.columns[best])
        self.scaler_ = FiniteScaler().fit(X[[self.column_]])
        x = self.scaler_.transform(X[[self.column_]])[:, 0]
        self.slope_, self.intercept_ = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (0.0, float(np.mean(y)))

    def _predict(self, X):
        return self.slope_ * self.scaler_.transform(X[[self.column_]])[:, 0] + self.intercept_

    def export(self):
        return [step("take", index=self._positions([self.column_])), self.scaler_.export(),
                step("linear", coef=np.array([self.slope_], dtype=np.float64), intercept=float(self.intercept_))]

    def describe(self) -> str:
        return f"picked {self.column_}"
