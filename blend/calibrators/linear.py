"""`linear`: the least-squares affine map of the target on the blend (changes neither SROCC nor PLCC, only
the scale), clipped to 0..5."""
from __future__ import annotations

import numpy as np

from tabular.inference import step

from . import CALIBRATORS, HIGH, LOW


@CALIBRATORS.register("linear", priority=0)
class LinearCalibrator:
    auto = True

    def fit(self, x: np.ndarray, y: np.ndarray) -> "LinearCalibrator":
        x = np.asarray(x, dtype=np.float64)
        y = np.clip(np.asarray(y, dtype=np.float64), LOW, HIGH)
        slope, intercept = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (0.0, float(y.mean()))
        self.slope_, self.intercept_ = float(slope), float(intercept)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.clip(self.slope_ * np.asarray(x, dtype=np.float64) + self.intercept_, LOW, HIGH)

    def export(self) -> list[dict]:
        return [step("affine", scale=self.slope_, offset=self.intercept_), step("clip", low=LOW, high=HIGH)]
