"""Support-vector regression with an RBF kernel on imputed, z-scored features and a z-scored target.

`log_features` adds log(x + c) of every non-negative column (see `linear.LogAugment`): distortion
metrics are heavily skewed, and an RBF kernel with one length scale suits the log scale better.
"""
from __future__ import annotations

import numpy as np
from sklearn.svm import SVR

from .base import POOL, FiniteScaler, PoolModel
from .linear import LogAugment


@POOL.register("svr")
class SVRModel(PoolModel):
    def __init__(self, C: float = 1.0, epsilon: float = 0.1, gamma: str | float = "scale",
                 log_features: bool = False):
        self.C = C
        self.epsilon = epsilon
        self.gamma = gamma
        self.log_features = log_features

    def _inputs(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return self.log_.transform(X) if self.log_features else X

    def _fit(self, X, y, groups):
        if self.log_features:
            self.log_ = LogAugment().fit(np.asarray(X, dtype=np.float64))
        X = self._inputs(X)
        self.scaler_ = FiniteScaler().fit(X)
        y = np.asarray(y, dtype=np.float64)
        self.y_mean_, self.y_scale_ = float(y.mean()), float(y.std()) or 1.0
        self.svr_ = SVR(C=self.C, epsilon=self.epsilon, gamma=self.gamma)
        self.svr_.fit(self.scaler_.transform(X), (y - self.y_mean_) / self.y_scale_)

    def _predict(self, X):
        return self.svr_.predict(self.scaler_.transform(self._inputs(X))) * self.y_scale_ + self.y_mean_
