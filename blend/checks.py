"""What a run can judge: the flags every prediction carries, so a user can filter what the run never saw.

- `feature_ranges(X)`: column -> [min, max] of the finite values a run was fit on (recorded in run.json).
- `outside_range(X, columns, ranges)`: per row, how far its furthest feature lies outside that range, in
  widths of the range (0 inside; 0.5: half the fitted range beyond its edge), and which features lie outside.
  Trees and the calibrator are flat outside what they saw and linear members extrapolate: either way the
  number there is a guess, and how far says how much of one.
- `unrelated_content(X, columns, ranges)`: where the run has an embedding cosine among its features (a column
  named `*_cos`, as the CLIP / DINO / ImageNet extractors write it), whether a pair's cosine lies below the lowest
  the run was fit on (by more than a tenth of that range's width, so that rounding is no flag): the two images
  are further apart in content than any reference and copy it saw, heavy semantic edits included, so they are
  probably not reference and copy (a cat against an astronaut: ImageNet cosine 0.17, the demo run's lowest 0.37).
- `image_sizes(paths)`: the range of image sizes a store run was fit on (run.json's `image_sizes`).
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


#: how the embedding extractors name the pair cosine of two images' embeddings
COSINE_SUFFIX = "_cos"
#: how far below the lowest cosine a run saw, in widths of its range, a pair counts as unrelated content
UNRELATED_MARGIN = 0.1


def unrelated_content(X: np.ndarray, columns: list[str], ranges: dict[str, list[float]]) -> np.ndarray | None:
    """Per row: any embedding cosine below its fitted minimum by more than `UNRELATED_MARGIN` of its fitted range's
    width; None when the run has no embedding cosine with a recorded range."""
    cosines = [j for j, c in enumerate(columns) if c.endswith(COSINE_SUFFIX) and c in ranges]
    if not cosines:
        return None
    X = np.asarray(X, dtype=np.float64)
    far = np.zeros(len(X), dtype=bool)
    for j in cosines:
        low, high = ranges[columns[j]]
        with np.errstate(invalid="ignore"):
            far |= X[:, j] < low - UNRELATED_MARGIN * (high - low)
    return far


def image_sizes(paths) -> dict | None:
    """{"pixels": [fewest, most], "text": "WxH .. WxH"} over the image files at `paths` that are still there;
    None when none is."""
    from featurestore.errors import SiqaError
    from featurestore.io import image_size

    sizes = []
    for path in dict.fromkeys(paths):
        try:
            sizes.append(image_size(path))
        except SiqaError:  # moved or deleted since extraction: the sizes of the rest still say what it saw
            continue
    if not sizes:
        return None
    by_pixels = sorted(sizes, key=lambda s: s[0] * s[1])
    small, large = by_pixels[0], by_pixels[-1]
    return {"pixels": [small[0] * small[1], large[0] * large[1]],
            "text": f"{small[0]}x{small[1]}" + ("" if small == large else f" .. {large[0]}x{large[1]}")}
