"""`BoundedBlender`: weights in [0, cap] summing to 1 that maximise Final = 0.6 SROCC + 0.4 PLCC.

Every method (`blend.methods`: best, greedy, slsqp, ...) is fit on out-of-fold predictions (rows x
models, every column on the target's scale). `auto` fits each registered method on grouped inner folds
of the rows and scores it on the held-out part (exact Final of the pooled held-out blend); the choice
(`choice = "one_se"`, default) is the simplest method (lowest registry priority) within one standard
error of the best (`blend.choice`), or (`choice = "max"`) the best score, ties to the simpler; it is
refit on all rows.
"""
from __future__ import annotations

import inspect

import numpy as np

from featurestore.errors import SiqaError
from tabular import metrics
from tabular.folds import inner_folds

from .choice import choose
from .methods import METHODS

#: arguments every method takes from the blender itself, not from the method's own parameters
COMMON_ARGUMENTS = ("P", "y", "cap", "random_state", "groups")  # a method naming `groups` gets the rows' groups


def method_parameters(name: str) -> list[str]:
    """The keyword parameters method `name` takes from the configuration (e.g. greedy: rounds)."""
    return [p for p in inspect.signature(METHODS.get(name)).parameters if p not in COMMON_ARGUMENTS]


class BoundedBlender:
    def __init__(self, cap: float = 1.0, method: str = "auto", n_splits: int = 5, choice: str = "one_se",
                 random_state: int = 0, **params):
        """`params`: the methods' own parameters (rounds, anchors, ...); each method gets those it names. The
        values are `blend.settings.BlendSettings`'s, validated when the config was loaded."""
        self.cap = cap
        self.method = method
        self.n_splits = n_splits
        self.choice = choice
        self.random_state = random_state
        self.params = params

    # --- public -----------------------------------------------------------------------------------
    def fit(self, P: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> "BoundedBlender":
        P = np.asarray(P, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        m = P.shape[1]
        names = METHODS.names()
        if self.cap * m < 1 - 1e-12:  # a property of the pool, not of the setting alone
            raise SiqaError(f"config: blend cap {self.cap} cannot give {m} model(s) weights summing to 1")
        self.cv_scores_ = {}
        method = self.method
        if method == "auto":
            groups = np.arange(len(y)) if groups is None else np.asarray(groups)
            fold = inner_folds(groups, self.n_splits, self.random_state)
            held_out = {}
            for candidate in names:
                held_out[candidate] = np.empty(len(y))
                for k in np.unique(fold):
                    train, test = fold != k, fold == k
                    held_out[candidate][test] = P[test] @ self._weights(candidate, P[train], y[train], groups[train])
                self.cv_scores_[candidate] = metrics.final(held_out[candidate], y)
            method = choose(self.choice, held_out, y, fold)
        self.method_ = method
        self.weights_ = self._weights(method, P, y, groups)
        return self

    def predict(self, P: np.ndarray) -> np.ndarray:
        return np.asarray(P, dtype=np.float64) @ self.weights_

    def _weights(self, method: str, P: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
        own = {k: self.params[k] for k in method_parameters(method) if k in self.params}
        function = METHODS.get(method)
        if "groups" in inspect.signature(function).parameters:
            own["groups"] = groups
        return function(P, y, cap=self.cap, random_state=self.random_state, **own)
