"""What a run can judge: the flags every prediction carries, so a user can filter what the run never saw.

- `feature_ranges(X)`: column -> [min, max] of the finite values a run was fit on (recorded in run.json).
- `outside_range(X, columns, ranges)`: per row, how far its furthest feature lies outside that range, in
  widths of the range (0 inside; 0.5: half the fitted range beyond its edge), and which features lie outside.
  Trees and the calibrator are flat outside what they saw and linear members extrapolate: either way the
  number there is a guess, and how far says how much of one.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def feature_ranges(X: pd.DataFrame) -> dict[str, list[float]]:
    ranges = {}
    for column in X.columns:
        values = X[column].to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size:
            ranges[str(column)] = [float(finite.min()), float(finite.max())]
    return ranges


def outside_range(X: np.ndarray, columns: list[str], ranges: dict[str, list[float]]) -> tuple[np.ndarray, list[str]]:
    """(distance, names) per row of `X` (rows x `columns`): the largest distance outside a fitted range in
    widths of that range (NaN values are not outside), and the comma-separated features outside ("" if none).
    Columns without a recorded range (a run of an older siqa) are not judged."""
    X = np.asarray(X, dtype=np.float64)
    distance = np.zeros((len(X), len(columns)))
    for j, column in enumerate(columns):
        if column not in ranges:
            continue
        low, high = ranges[column]
        width = high - low if high > low else max(abs(high), 1.0)
        with np.errstate(invalid="ignore"):
            beyond = np.maximum(low - X[:, j], X[:, j] - high) / width
        distance[:, j] = np.where(beyond > 0, beyond, 0.0)
    names = [", ".join(columns[j] for j in np.flatnonzero(row)) for row in distance > 0]
    return distance.max(axis=1, initial=0.0), names
