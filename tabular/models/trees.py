"""Extremely randomised trees on imputed features: a bagged, low-variance counterpart to the GBDTs."""
from __future__ import annotations

import numpy as np
from sklearn.ensemble import ExtraTreesRegressor

from ..inference import step
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

    def export(self):
        """scikit-learn's trees compare float32 features with `<=` against float64 thresholds; NaN (none after
        the scaler) would take `missing_go_to_left`; the forest is the mean of its trees."""
        trees = [t.tree_ for t in self.trees_.estimators_]
        offsets = np.concatenate([[0], np.cumsum([t.node_count for t in trees])]).astype(np.int64)

        def child(key):
            return np.concatenate([np.where(getattr(t, key) < 0, -1, getattr(t, key) + start)
                                   for t, start in zip(trees, offsets)]).astype(np.int64)

        missing_left = [getattr(t, "missing_go_to_left", np.zeros(t.node_count)) for t in trees]
        return [self.scaler_.export(),
                step("tree_ensemble", feature=np.concatenate([t.feature for t in trees]).astype(np.int64),
                     threshold=np.concatenate([t.threshold for t in trees]).astype(np.float64),
                     left=child("children_left"), right=child("children_right"),
                     value=np.concatenate([t.value[:, 0, 0] for t in trees]).astype(np.float64),
                     default_left=np.concatenate(missing_left).astype(bool), roots=offsets[:-1],
                     compare="<=", input_dtype="float32", average=True)]
