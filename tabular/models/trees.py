"""Extremely randomised trees on imputed features: a bagged, low-variance counterpart to the GBDTs."""
from __future__ import annotations

from sklearn.ensemble import ExtraTreesRegressor

from .base import POOL, FiniteScaler, PoolModel


@POOL.register("extratrees")
class ExtraTreesModel(PoolModel):
    def __init__(self, n_estimators: int = 300, min_samples_leaf: int = 2, max_features: float = 1.0,
                 random_state: int = 0, threads: int = 2):
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.random_state = random_state
        self.threads = threads

    def _fit(self, X, y, groups):
        self.scaler_ = FiniteScaler().fit(X)
        self.trees_ = ExtraTreesRegressor(
            n_estimators=self.n_estimators, min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features, random_state=self.random_state, n_jobs=self.threads)
        self.trees_.fit(self.scaler_.transform(X), y)

    def _predict(self, X):
        return self.trees_.predict(self.scaler_.transform(X))
