"""`GroupedRidgeCV`: ridge regression whose alpha is chosen by grouped inner cross-validation.

Used for the dense-block meta-features (hundreds to thousands of columns, a few hundred rows) and by
the Ridge pool models. Columns are z-scored on the training rows, and one eigen-decomposition per inner fold
gives the held-out predictions for every alpha at once, so the search costs about one fit per fold.
Alphas are relative: each is multiplied by the mean squared singular value of the standardised
training matrix, so the same grid suits a 9-column table and a 4096-wide embedding block.
The eigen-decomposition is taken of the smaller Gram matrix (rows x rows when the block is wider than
it is tall), which is several times faster than an SVD of the data matrix.
Inner folds are grouped like the outer ones, so pairs of one reference never sit on both sides.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from .folds import inner_folds
from .inference import step

DEFAULT_ALPHAS = (1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)


def _ridge_path(X: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Coefficients (d, n_alphas) for centred X, y and absolute alphas."""
    n, d = X.shape
    if n < d:  # dual form: w = X^T (X X^T + a I)^-1 y
        eigval, U = np.linalg.eigh(X @ X.T)
        uty = U.T @ y
        return X.T @ (U @ (uty[:, None] / (np.clip(eigval, 0, None)[:, None] + alphas[None, :])))
    eigval, V = np.linalg.eigh(X.T @ X)
    vtxy = V.T @ (X.T @ y)
    return V @ (vtxy[:, None] / (np.clip(eigval, 0, None)[:, None] + alphas[None, :]))


def _mean_eigenvalue(X: np.ndarray) -> float:
    """Mean non-zero eigenvalue of the centred Gram matrix: the natural unit of alpha."""
    energy = float(np.sum(X ** 2)) / max(min(X.shape) - 1, 1)
    return energy if energy > 0 else 1.0


class GroupedRidgeCV(RegressorMixin, BaseEstimator):
    def __init__(self, alphas=DEFAULT_ALPHAS, n_splits: int = 5, random_state: int = 0):
        self.alphas = alphas
        self.n_splits = n_splits
        self.random_state = random_state

    def _standardise(self, X: np.ndarray, fit: bool) -> np.ndarray:
        if fit:
            self.mean_ = X.mean(axis=0)
            scale = X.std(axis=0)
            self.scale_ = np.where(scale > 0, scale, 1.0)
        return (X - self.mean_) / self.scale_

    def fit(self, X, y, groups=None):
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        groups = np.arange(len(y)) if groups is None else np.asarray(groups)
        relative = np.asarray(self.alphas, dtype=np.float64)
        Z = self._standardise(X, fit=True)
        self.y_mean_ = float(y.mean())
        absolute = relative * _mean_eigenvalue(Z - Z.mean(axis=0))

        errors = np.zeros(len(relative))
        if len(relative) > 1 and np.unique(groups).size >= 2:
            fold = inner_folds(groups, self.n_splits, self.random_state)
            for k in np.unique(fold):
                train, test = fold != k, fold == k
                x_mean, y_mean = Z[train].mean(axis=0), y[train].mean()
                coef = _ridge_path(Z[train] - x_mean, y[train] - y_mean, absolute)
                pred = (Z[test] - x_mean) @ coef + y_mean
                errors += ((pred - y[test, None]) ** 2).sum(axis=0)
        # ties go to the strongest shrinkage: the simpler model
        best = len(relative) - 1 - int(np.argmin(errors[::-1]))
        self.alpha_ = float(relative[best])
        x_mean = Z.mean(axis=0)
        coef = _ridge_path(Z - x_mean, y - self.y_mean_, absolute[best:best + 1])
        self.coef_ = coef[:, 0]
        self.intercept_ = self.y_mean_ - float(x_mean @ self.coef_)
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self._standardise(X, fit=False) @ self.coef_ + self.intercept_

    def export(self) -> list[dict]:
        """`predict` as a `tabular.inference` program."""
        return [step("standardise", mean=self.mean_, scale=self.scale_),
                step("linear", coef=self.coef_, intercept=self.intercept_)]
