"""Cross-validation folds grouped by reference image and stratified on label bins where possible.

No group (reference image) ever appears on both sides of a split: pairs that share a reference share
most of their content, so splitting them would let a model memorise the reference. Within that rule,
`StratifiedGroupKFold` balances quantile bins of the label across folds so that every fold sees the
whole quality range; when the labels cannot be binned (fewer than two distinct values), or there are
fewer than `MIN_GROUPS_PER_FOLD` groups per fold, the folds are plain shuffled `GroupKFold`: with so few
groups the stratifier's greedy assignment hardly depends on the seed, and repeats with other seeds
would all evaluate the same partition. A seed fixes the assignment, so a rerun reproduces it exactly.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from featurestore.errors import SiqaError


MIN_GROUPS_PER_FOLD = 3


def label_bins(y: np.ndarray, n_bins: int) -> np.ndarray:
    """Quantile bin index of every label; labels with few distinct values get one bin per value."""
    y = np.asarray(y, dtype=np.float64)
    values = np.unique(y)
    if values.size <= n_bins:
        return np.searchsorted(values, y)
    edges = np.unique(np.quantile(y, np.linspace(0, 1, n_bins + 1)[1:-1]))
    return np.searchsorted(edges, y, side="right")


def assign_folds(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int, n_bins: int = 5,
                 source: str = "labels") -> np.ndarray:
    """Fold index (0..n_splits-1) of every row; rows of one group always share a fold.

    Raises `SiqaError` when there are fewer groups than folds (a single group cannot be cross-validated).
    """
    groups = np.asarray(groups)
    n_groups = np.unique(groups).size
    if n_splits < 2:
        raise SiqaError(f"{source}: cross-validation needs at least 2 folds, got {n_splits}")
    if n_groups < n_splits:
        raise SiqaError(f"{source}: {n_groups} reference group(s) cannot fill {n_splits} grouped folds; "
                        f"use fewer folds or data with more reference images")
    fold = np.full(len(groups), -1, dtype=np.int64)
    bins = label_bins(y, n_bins)
    if np.unique(bins).size >= 2 and n_groups >= MIN_GROUPS_PER_FOLD * n_splits:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            # "least populated class has fewer members than n_splits" is expected on small tables
            warnings.simplefilter("ignore", UserWarning)
            for k, (_, test) in enumerate(splitter.split(np.zeros(len(groups)), bins, groups)):
                fold[test] = k
    if np.unique(fold).size < n_splits or (fold < 0).any():
        # stratification could not give every fold a group: fall back to plain grouped folds
        splitter = GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        for k, (_, test) in enumerate(splitter.split(np.zeros(len(groups)), groups=groups)):
            fold[test] = k
    return fold


def inner_folds(groups: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """Grouped folds inside a training set (for alpha choice and out-of-fold meta-features).

    Uses as many folds as there are groups when that is fewer than `n_splits`; needs at least 2 groups.
    """
    groups = np.asarray(groups)
    n_groups = np.unique(groups).size
    if n_groups < 2:
        raise SiqaError(f"labels: an inner cross-validation needs at least 2 reference groups, got {n_groups}")
    splitter = GroupKFold(n_splits=min(n_splits, n_groups), shuffle=True, random_state=seed)
    fold = np.empty(len(groups), dtype=np.int64)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(groups)), groups=groups)):
        fold[test] = k
    return fold
