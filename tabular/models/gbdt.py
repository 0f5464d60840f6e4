"""Gradient-boosted trees: CatBoost, XGBoost, LightGBM (the pool runs several seeds of each).

They take NaN natively, so they see the raw feature matrix. Each is pinned to a fixed thread count
and deterministic mode, so a seed reproduces its predictions exactly.

CatBoost's cost grows with the number of columns it scores at every split: `rsm="auto"` lets it
consider at most `AUTO_RSM_COLUMNS` random columns per split (all of them on narrow tables such as the
nine-metric TID2013/CSIQ ones), which on a few hundred columns is about six times faster at no loss
that trees averaged over seeds would notice.
"""
from __future__ import annotations

import numpy as np

from .base import POOL, PoolModel

AUTO_RSM_COLUMNS = 50


@POOL.register("catboost")
class CatBoostModel(PoolModel):
    def __init__(self, iterations: int = 500, depth: int = 6, learning_rate: float = 0.05,
                 l2_leaf_reg: float = 3.0, rsm: float | str = "auto", random_state: int = 0, threads: int = 2):
        self.iterations = iterations
        self.depth = depth
        self.learning_rate = learning_rate
        self.l2_leaf_reg = l2_leaf_reg
        self.rsm = rsm
        self.random_state = random_state
        self.threads = threads

    def _fit(self, X, y, groups):
        from catboost import CatBoostRegressor

        X = np.asarray(X, dtype=np.float64)
        rsm = min(1.0, AUTO_RSM_COLUMNS / max(X.shape[1], 1)) if self.rsm == "auto" else float(self.rsm)
        self.model_ = CatBoostRegressor(
            iterations=self.iterations, depth=self.depth, learning_rate=self.learning_rate,
            l2_leaf_reg=self.l2_leaf_reg, rsm=rsm, random_seed=self.random_state,
            thread_count=self.threads, verbose=False, allow_writing_files=False)
        self.model_.fit(X, np.asarray(y, dtype=np.float64))

    def _predict(self, X):
        return self.model_.predict(np.asarray(X, dtype=np.float64))


@POOL.register("xgboost")
class XGBoostModel(PoolModel):
    def __init__(self, n_estimators: int = 400, max_depth: int = 4, learning_rate: float = 0.05,
                 subsample: float = 0.8, colsample_bytree: float = 0.8, min_child_weight: float = 1.0,
                 reg_lambda: float = 1.0, random_state: int = 0, threads: int = 2):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.random_state = random_state
        self.threads = threads

    def _fit(self, X, y, groups):
        from xgboost import XGBRegressor

        self.model_ = XGBRegressor(
            n_estimators=self.n_estimators, max_depth=self.max_depth, learning_rate=self.learning_rate,
            subsample=self.subsample, colsample_bytree=self.colsample_bytree,
            min_child_weight=self.min_child_weight, reg_lambda=self.reg_lambda, tree_method="hist",
            random_state=self.random_state, n_jobs=self.threads, verbosity=0)
        self.model_.fit(np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64))

    def _predict(self, X):
        return self.model_.predict(np.asarray(X, dtype=np.float64)).astype(np.float64)


@POOL.register("lightgbm")
class LightGBMModel(PoolModel):
    def __init__(self, n_estimators: int = 400, num_leaves: int = 15, learning_rate: float = 0.05,
                 min_child_samples: int = 10, subsample: float = 0.8, colsample_bytree: float = 0.8,
                 reg_lambda: float = 1.0, random_state: int = 0, threads: int = 2):
        self.n_estimators = n_estimators
        self.num_leaves = num_leaves
        self.learning_rate = learning_rate
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.random_state = random_state
        self.threads = threads

    def _fit(self, X, y, groups):
        from lightgbm import LGBMRegressor

        self.model_ = LGBMRegressor(
            n_estimators=self.n_estimators, num_leaves=self.num_leaves, learning_rate=self.learning_rate,
            min_child_samples=self.min_child_samples, subsample=self.subsample, subsample_freq=1,
            colsample_bytree=self.colsample_bytree, reg_lambda=self.reg_lambda,
            random_state=self.random_state, n_jobs=self.threads, deterministic=True,
            force_row_wise=True, verbose=-1)
        # numpy, not a DataFrame: store column names may hold characters LightGBM rejects
        self.model_.fit(np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64))

    def _predict(self, X):
        return self.model_.predict(np.asarray(X, dtype=np.float64))
