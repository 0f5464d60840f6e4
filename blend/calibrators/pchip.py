"""`pchip`: isotonic regression of the target on the blend, then a PCHIP curve through the centres of the
isotonic steps.

PCHIP through increasing knots is strictly increasing, so unlike the raw isotonic steps it creates no
ties (ties would cost SROCC), yet it bends the blend toward the label's shape, which is what PLCC
rewards. Beyond the outermost knots the curve continues with a tiny slope, so order is kept there too,
and the result is clipped to [0, 5]. With fewer than two steps it is the `linear` map.
"""
from __future__ import annotations

import numpy as np
from scipy.interpolate import PchipInterpolator

from tabular.inference import step

from . import CALIBRATORS, HIGH, LOW
from .isotonic import isotonic
from .linear import LinearCalibrator

_TAIL_SLOPE = 1e-6  # relative: keeps order beyond the knots without visibly moving the score


@CALIBRATORS.register("pchip", priority=1)
class PchipCalibrator:
    auto = True

    def fit(self, x: np.ndarray, y: np.ndarray) -> "PchipCalibrator":
        x = np.asarray(x, dtype=np.float64)
        fitted = isotonic(x, y).predict(x)
        # one knot per isotonic step: mean blend value of its rows, the step's level
        levels, step = np.unique(fitted, return_inverse=True)
        centres = np.bincount(step, weights=x) / np.bincount(step)
        self.curve_ = PchipInterpolator(centres, levels) if levels.size >= 2 else None
        self.linear_ = LinearCalibrator().fit(x, y) if self.curve_ is None else None
        self.knots_ = (float(centres.min()), float(centres.max()))
        self.span_ = float(np.ptp(x)) or 1.0
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.curve_ is None:
            return self.linear_.transform(x)
        inside = np.clip(x, *self.knots_)
        out = self.curve_(inside) + _TAIL_SLOPE * (HIGH - LOW) * (x - inside) / self.span_
        return np.clip(out, LOW, HIGH)

    def export(self) -> list[dict]:
        """The curve's piecewise polynomial (`PPoly` breaks and coefficients), its tails and the clip."""
        if self.curve_ is None:
            return self.linear_.export()
        return [step("piecewise_cubic", breaks=np.asarray(self.curve_.x), coefs=np.asarray(self.curve_.c),
                     tail_slope=_TAIL_SLOPE * (HIGH - LOW) / self.span_), step("clip", low=LOW, high=HIGH)]
