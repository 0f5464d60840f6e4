"""`BoundedBlender`: weights in [0, cap] summing to 1 that maximise Final = 0.6 SROCC + 0.4 PLCC.

Methods, all fit on out-of-fold predictions (rows x models, every column on the target's scale):
- `best`:   the top ceil(1/cap) models by Final, equal weights (with cap = 1: the single best model, the
            fall-back when the pool cannot beat its best member);
- `greedy`: Caruana et al. ensemble selection with replacement on the exact Final, started from `best`;
            a model is added only while its weight stays <= cap, and the best prefix is kept;
- `slsqp`:  SLSQP on a smooth surrogate, 0.6 * Spearman of soft ranks + 0.4 * Pearson (soft rank of a row =
            mean sigmoid of its difference to a fixed sample of anchor rows), with analytic gradients;
- `auto`:   each of the above is fit on grouped inner folds of the rows and scored on the held-out part
            (exact Final of the pooled held-out blend); the winner is refit on all rows. Ties go to the
            simpler method, in the order above.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.stats import rankdata

from featurestore.errors import SiqaError
from tabular import metrics
from tabular.folds import inner_folds

METHODS = ("best", "greedy", "slsqp")


class BoundedBlender:
    def __init__(self, cap: float = 1.0, method: str = "auto", rounds: int = 50, n_splits: int = 5,
                 anchors: int = 400, temperature: float = 0.05, random_state: int = 0):
        self.cap = cap
        self.method = method
        self.rounds = rounds
        self.n_splits = n_splits
        self.anchors = anchors
        self.temperature = temperature
        self.random_state = random_state

    # --- public -----------------------------------------------------------------------------------
    def fit(self, P: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> "BoundedBlender":
        P = np.asarray(P, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        m = P.shape[1]
        if self.method not in (*METHODS, "auto"):
            raise SiqaError(f"config: blend method {self.method!r} is not one of {', '.join((*METHODS, 'auto'))}")
        if not 0 < self.cap <= 1 or self.cap * m < 1 - 1e-12:
            raise SiqaError(f"config: blend cap {self.cap} cannot give {m} model(s) weights summing to 1")
        self.cv_scores_ = {}
        method = self.method
        if method == "auto":
            groups = np.arange(len(y)) if groups is None else np.asarray(groups)
            fold = inner_folds(groups, self.n_splits, self.random_state)
            for candidate in METHODS:
                held_out = np.empty(len(y))
                for k in np.unique(fold):
                    train, test = fold != k, fold == k
                    held_out[test] = P[test] @ self._weights(candidate, P[train], y[train])
                self.cv_scores_[candidate] = metrics.final(held_out, y)
            method = max(METHODS, key=lambda c: (self.cv_scores_[c], -METHODS.index(c)))
        self.method_ = method
        self.weights_ = self._weights(method, P, y)
        return self

    def predict(self, P: np.ndarray) -> np.ndarray:
        return np.asarray(P, dtype=np.float64) @ self.weights_

    # --- methods ----------------------------------------------------------------------------------
    def _weights(self, method: str, P: np.ndarray, y: np.ndarray) -> np.ndarray:
        if method == "best":
            return self._best(P, y)
        if method == "greedy":
            return self._greedy(P, y)
        return self._slsqp(P, y)

    def _top_k(self) -> int:
        return math.ceil(1 / self.cap - 1e-9)

    def _best(self, P, y) -> np.ndarray:
        scores = np.array([metrics.final(P[:, j], y) for j in range(P.shape[1])])
        top = np.argsort(-scores, kind="stable")[:self._top_k()]
        weights = np.zeros(P.shape[1])
        weights[top] = 1.0 / len(top)
        return weights

    def _greedy(self, P, y) -> np.ndarray:
        counts = np.round(self._best(P, y) * self._top_k()).astype(np.int64)
        total = int(counts.sum())
        running = P @ counts
        best_counts, best_score = counts.copy(), metrics.final(running / total, y)
        for _ in range(self.rounds):
            allowed = np.flatnonzero((counts + 1) <= self.cap * (total + 1) + 1e-9)
            if allowed.size == 0:
                break
            scores = [metrics.final((running + P[:, j]) / (total + 1), y) for j in allowed]
            pick = int(allowed[int(np.argmax(scores))])
            counts[pick] += 1
            total += 1
            running = running + P[:, pick]
            if max(scores) > best_score + 1e-12:
                best_counts, best_score = counts.copy(), max(scores)
        return best_counts / best_counts.sum()

    def _slsqp(self, P, y) -> np.ndarray:
        m = P.shape[1]
        rng = np.random.default_rng(self.random_state)
        anchors = rng.choice(len(y), size=min(self.anchors, len(y)), replace=False)
        scale = P.std(axis=0).mean() or 1.0
        P_t = torch.as_tensor(P / scale, dtype=torch.float64)
        y_rank = torch.as_tensor(rankdata(y), dtype=torch.float64)
        y_t = torch.tensor(y, dtype=torch.float64)  # a copy: y may be a read-only view

        def pearson(a, b):
            a, b = a - a.mean(), b - b.mean()
            return (a * b).sum() / (a.norm() * b.norm() + 1e-12)

        def objective(w: np.ndarray):
            w_t = torch.as_tensor(w, dtype=torch.float64).requires_grad_(True)
            blend = P_t @ w_t
            tau = self.temperature * (blend.std() + 1e-12)
            soft_rank = torch.sigmoid((blend[:, None] - blend[anchors][None, :]) / tau).mean(dim=1)
            value = -(metrics.SROCC_WEIGHT * pearson(soft_rank, y_rank) + metrics.PLCC_WEIGHT * pearson(blend, y_t))
            value.backward()
            return value.item(), w_t.grad.numpy().copy()

        start = np.full(m, 1.0 / m)
        result = minimize(objective, start, jac=True, method="SLSQP", bounds=[(0.0, self.cap)] * m,
                          constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(m)}],
                          options={"maxiter": 200, "ftol": 1e-9})
        weights = np.clip(result.x, 0.0, self.cap)
        return weights / weights.sum()
