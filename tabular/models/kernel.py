"""Support-vector regression with an RBF kernel on imputed, z-scored features and a z-scored target."""
from __future__ import annotations

import numpy as np
from sklearn.svm import SVR

from .base import FiniteScaler, PoolModel, register


@register("svr")
class SVRModel(PoolModel):
    def __init__(self, C: float = 1.0, epsilon: float = 0.1, gamma: str | float = "scale"):
        self.C = C
        self.epsilon = epsilon
        self.gamma = gamma

    def fit(self, X, y, groups=None):
        self.scaler_ = FiniteScaler().fit(X)
        y = np.asarray(y, dtype=np.float64)
        self.y_mean_, self.y_scale_ = float(y.mean()), float(y.std()) or 1.0
        self.svr_ = SVR(C=self.C, epsilon=self.epsilon, gamma=self.gamma)
        self.svr_.fit(self.scaler_.transform(X), (y - self.y_mean_) / self.y_scale_)
        return self

    def predict(self, X):
        return self.svr_.predict(self.scaler_.transform(X)) * self.y_scale_ + self.y_mean_
