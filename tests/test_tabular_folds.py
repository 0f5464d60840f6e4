"""Grouped, label-stratified folds: no shared group, deterministic, clear errors."""
from __future__ import annotations

import numpy as np
import pytest

from featurestore.errors import SiqaError
from tabular.folds import assign_folds, inner_folds, label_bins


def _data(seed=0, n_groups=25, per_group=12):
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"ref{i}" for i in range(n_groups)], per_group)
    y = rng.normal(size=groups.size) + np.repeat(rng.normal(size=n_groups), per_group)
    return y, groups


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_folds_never_share_a_group(seed):
    y, groups = _data(seed)
    fold = assign_folds(y, groups, 5, seed)
    assert set(fold) == set(range(5))
    for g in np.unique(groups):
        assert np.unique(fold[groups == g]).size == 1
    inner = inner_folds(groups[fold != 0], 4, seed)
    for g in np.unique(groups[fold != 0]):
        assert np.unique(inner[groups[fold != 0] == g]).size == 1


def test_folds_are_deterministic_by_seed():
    y, groups = _data()
    assert np.array_equal(assign_folds(y, groups, 5, 3), assign_folds(y, groups, 5, 3))
    assert not np.array_equal(assign_folds(y, groups, 5, 3), assign_folds(y, groups, 5, 4))


def test_folds_are_stratified_on_label_bins():
    # each group holds every label level (like TID2013: a reference at every distortion level)
    groups = np.repeat(np.arange(20), 6)
    y = np.tile(np.arange(6.0), 20)
    fold = assign_folds(y, groups, 4, 0)
    for k in range(4):
        assert set(y[fold == k]) == set(range(6))


def test_label_bins_use_distinct_values_when_few():
    assert list(label_bins(np.array([0, 5, 5, 3.0]), 5)) == [0, 2, 2, 1]
    assert np.unique(label_bins(np.linspace(0, 1, 100), 5)).size == 5


def test_constant_labels_fall_back_to_group_folds():
    groups = np.repeat(np.arange(6), 3)
    fold = assign_folds(np.zeros(18), groups, 3, 0)
    assert set(fold) == {0, 1, 2}


def test_fewer_groups_than_folds_is_a_clear_error():
    with pytest.raises(SiqaError, match="table.csv: 3 reference group"):
        assign_folds(np.arange(9.0), np.repeat([1, 2, 3], 3), 5, 0, source="table.csv")
    with pytest.raises(SiqaError, match="1 reference group"):
        assign_folds(np.arange(9.0), np.zeros(9), 5, 0)


def test_repeats_with_few_groups_use_different_partitions():
    """8 references in 5 folds (the demo's shape): other seeds must give other partitions, else the
    repeats' mean ± std would measure one split three times."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(8), 9)
    y = rng.integers(0, 6, size=groups.size).astype(float)

    def partition(seed):
        fold = assign_folds(y, groups, n_splits=5, seed=seed)
        return frozenset(frozenset(groups[fold == k]) for k in range(5))

    assert len({partition(seed) for seed in range(3)}) > 1
