"""`isotonic`: the isotonic regression steps of the target on the blend (ties within a step)."""
from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression

from tabular.inference import step

from . import CALIBRATORS, HIGH, LOW


def isotonic(x: np.ndarray, y: np.ndarray) -> IsotonicRegression:
    """Isotonic regression of y (clipped to 0..5) on x, clipping x beyond the training range."""
    y = np.clip(np.asarray(y, dtype=np.float64), LOW, HIGH)
    return IsotonicRegression(increasing=True, y_min=LOW, y_max=HIGH, out_of_bounds="clip").fit(x, y)


@CALIBRATORS.register("isotonic", priority=2)
class IsotonicCalibrator:
    auto = False

    def fit(self, x: np.ndarray, y: np.ndarray) -> "IsotonicCalibrator":
        self.isotonic_ = isotonic(np.asarray(x, dtype=np.float64), y)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.clip(self.isotonic_.predict(np.asarray(x, dtype=np.float64)), LOW, HIGH)

    def export(self) -> list[dict]:
        """The steps' interpolation knots, x clipped to the training range (`out_of_bounds="clip"`)."""
        return [step("interp", xp=np.asarray(self.isotonic_.X_thresholds_, dtype=np.float64),
                     fp=np.asarray(self.isotonic_.y_thresholds_, dtype=np.float64)),
                step("clip", low=LOW, high=HIGH)]
