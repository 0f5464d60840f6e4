"""Dense-block meta-features: each dense block (|d-r|, d*r, hidden states, ...) becomes one scalar
column `meta_<block>` = the prediction of a `GroupedRidgeCV` fit on that block.

A block is far too wide for the tree models next to a few hundred scalars, and a Ridge squeezes it
into the one direction that predicts quality. For the rows the pool trains on, the column must be
out-of-fold (a Ridge predicting its own training rows would look better than it is, and the pool
would trust it too much), so `fit_transform` returns grouped out-of-fold predictions and keeps a Ridge
refit on all training rows; `transform` (rows being predicted) uses that refit.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .folds import inner_folds
from .models import META_PREFIX
from .ridge import DEFAULT_ALPHAS, GroupedRidgeCV


class DenseMetaFeatures:
    def __init__(self, alphas=DEFAULT_ALPHAS, n_splits: int = 5, random_state: int = 0):
        self.alphas = alphas
        self.n_splits = n_splits
        self.random_state = random_state

    def _ridge(self) -> GroupedRidgeCV:
        return GroupedRidgeCV(alphas=tuple(self.alphas), n_splits=self.n_splits, random_state=self.random_state)

    def fit_transform(self, dense: dict[str, np.ndarray], y: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
        """Out-of-fold meta-features of the training rows; keeps full-fit Ridges for `transform`."""
        fold = inner_folds(groups, self.n_splits, self.random_state)
        columns, self.ridges_ = {}, {}
        for block, values in dense.items():
            oof = np.empty(len(y))
            for k in np.unique(fold):
                train, test = fold != k, fold == k
                oof[test] = self._ridge().fit(values[train], y[train], groups[train]).predict(values[test])
            columns[META_PREFIX + block] = oof
            self.ridges_[block] = self._ridge().fit(values, y, groups)
        return pd.DataFrame(columns, index=pd.RangeIndex(len(y)))

    def transform(self, dense: dict[str, np.ndarray]) -> pd.DataFrame:
        n = len(next(iter(dense.values()))) if dense else 0
        return pd.DataFrame({META_PREFIX + block: ridge.predict(dense[block]) for block, ridge in self.ridges_.items()},
                            index=pd.RangeIndex(n))

    def export(self) -> dict[str, list[dict]]:
        """Per block, in `transform`'s column order: its Ridge as a `tabular.inference` program."""
        return {block: ridge.export() for block, ridge in self.ridges_.items()}
