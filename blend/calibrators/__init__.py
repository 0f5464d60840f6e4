"""Calibrators (blend -> 0..5): one module each, registered with `@CALIBRATORS.register("<name>", priority=N)`.

A calibrator is a class with `fit(x, y) -> self` (x: blend values and y: the target, both already put on
the 0..5 scale by the training labels' `LabelScale`, which `MonotoneCalibrator` fits),
`transform(x) -> scores in [LOW, HIGH]`, monotone non-decreasing in x, and `export()`: `transform` as a
`tabular.inference` program (what a run's fast path evaluates without scikit-learn or scipy). `auto = True` makes it a
candidate of `MonotoneCalibrator("auto")`, whose ties go to the lower priority.
"""
from __future__ import annotations

from featurestore.registry import Registry

LOW, HIGH = 0.0, 5.0
CALIBRATORS = Registry("calibrator", package=__name__)
