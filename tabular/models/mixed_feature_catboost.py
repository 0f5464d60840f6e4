"""`mixed_feature_catboost`: add/sub/mul mixing of a small set of scalar features, then a CatBoost seed ensemble.

Origin: the rank-3 solution of the challenge this pool was modelled on (its pool name was `rank3`, still
accepted in configs as a deprecated alias).

The set is `columns` when configured, otherwise the `n_auto` columns with the largest |SROCC| against
the target on the training rows (chosen inside the fit, so held-out rows never pick them). Columns are
z-scored on the training rows, then every pair (a, b) adds a+b, a-b and a*b: interactions a tree
would need many splits to approximate. The score is the mean of `n_seeds` CatBoost models.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np

from featurestore.errors import SiqaError

from .. import metrics
from ..inference import step
from .base import POOL, FiniteScaler, PoolModel, select_columns
from .gbdt import CatBoostModel

OPERATIONS = {"add": np.add, "sub": np.subtract, "mul": np.multiply}


@POOL.register("mixed_feature_catboost")
class FeatureMixingCatBoost(PoolModel):
    def __init__(self, columns: list[str] | None = None, n_auto: int = 6,
                 operations: tuple[str, ...] = ("add", "sub", "mul"), n_seeds: int = 3,
                 iterations: int = 500, depth: int = 6, learning_rate: float = 0.05,
                 random_state: int = 0, threads: int = 2):
        self.columns = columns
        self.n_auto = n_auto
        self.operations = operations
        self.n_seeds = n_seeds
        self.iterations = iterations
        self.depth = depth
        self.learning_rate = learning_rate
        self.random_state = random_state
        self.threads = threads

    def _mixed(self, X) -> np.ndarray:
        Z = self.scaler_.transform(X[self.columns_])
        mixes = [OPERATIONS[op](Z[:, a], Z[:, b]) for a, b in combinations(range(Z.shape[1]), 2)
                 for op in self.operations]
        return np.column_stack([Z, *mixes]) if mixes else Z

    def _fit(self, X, y, groups):
        unknown = set(self.operations) - set(OPERATIONS)
        if unknown:
            raise SiqaError(f"config: tabular model mixed_feature_catboost: unknown operation(s) {sorted(unknown)}; use add, sub, mul")
        if self.columns is not None:
            self.columns_ = list(select_columns(X, self.columns, self.name).columns)
        else:
            strength = [abs(metrics.srocc(np.nan_to_num(X[c].to_numpy(), nan=np.nanmedian(X[c])), y))
                        if X[c].notna().any() else 0.0 for c in X.columns]
            order = np.argsort(-np.asarray(strength), kind="stable")
            self.columns_ = [str(X.columns[i]) for i in order[:self.n_auto]]
        self.scaler_ = FiniteScaler().fit(X[self.columns_])
        mixed = self._mixed(X)
        self.members_ = [CatBoostModel(iterations=self.iterations, depth=self.depth,
                                       learning_rate=self.learning_rate, random_state=self.random_state + k,
                                       threads=self.threads).fit(mixed, y)
                         for k in range(self.n_seeds)]

    def describe(self) -> str:
        return f"mixed {', '.join(self.columns_)}"

    def _predict(self, X):
        mixed = self._mixed(X)
        return np.mean([m.predict(mixed) for m in self.members_], axis=0)

    def export(self):
        return [step("take", index=self._positions(self.columns_)), self.scaler_.export(),
                step("pairwise_mix", operations=list(self.operations)),
                step("mean", programs=[m.export() for m in self.members_])]
