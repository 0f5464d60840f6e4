"""Support-vector regression with an RBF kernel on imputed, z-scored features and a z-scored target.

`log_features` adds log(x + c) of every non-negative column (see `linear.LogAugment`): distortion
metrics are heavily skewed, and an RBF kernel with one length scale suits the log scale better.
Fitting costs grow with the square of the rows, so above `max_rows` training rows the SVR is fit on a
seeded random subset of that many (a kernel machine gains little from more rows of a few features).
"""
from __future__ import annotations

import numpy as np
from sklearn.svm import SVR

from ..inference import step
from .base import POOL, FiniteScaler, PoolModel
from .linear import LogAugment


@POOL.register("svr")
class SVRModel(PoolModel):
    def __init__(self, C: float = 1.0, epsilon: float = 0.1, gamma: str | float = "scale",
                 log_features: bool = False, max_rows: int = 10000, random_state: int = 0):
        self.C = C
        self.epsilon = epsilon
        self.gamma = gamma
        self.log_features = log_features
        self.max_rows = max_rows
        self.random_state = random_state

    def _inputs(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return self.log_.transform(X) if self.log_features else X

    def _fit(self, X, y, groups):
        if self.log_features:
            self.log_ = LogAugment().fit(np.asarray(X, dtype=np.float64))
        X = self._inputs(X)
        self.scaler_ = FiniteScaler().fit(X)
        y = np.asarray(y, dtype=np.float64)
        if len(y) > self.max_rows:
            keep = np.sort(np.random.default_rng(self.random_state).choice(len(y), self.max_rows, replace=False))
            X, y = X[keep], y[keep]
        self.y_mean_, self.y_scale_ = float(y.mean()), float(y.std()) or 1.0
        self.svr_ = SVR(C=self.C, epsilon=self.epsilon, gamma=self.gamma)
        self.svr_.fit(self.scaler_.transform(X), (y - self.y_mean_) / self.y_scale_)

    def _predict(self, X):
        return self.svr_.predict(self.scaler_.transform(self._inputs(X))) * self.y_scale_ + self.y_mean_

    def export(self):
        return [*([self.log_.export()] if self.log_features else []), self.scaler_.export(),
                step("rbf_kernel", support=self.svr_.support_vectors_, dual_coef=self.svr_.dual_coef_[0],
                     intercept=float(self.svr_.intercept_[0]), gamma=float(self.svr_._gamma)),
                step("affine", scale=self.y_scale_, offset=self.y_mean_)]
