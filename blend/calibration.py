"""Map the blend onto the 0..5 quality scale with a monotone function fit on out-of-fold predictions.

`LabelScale` fixes the affine map from the target to 0..5: the identity when the labels already live
in 0..5 with higher = better (SeIQA), otherwise min-max of the training targets (TID2013 MOS 0..7,
CSIQ -DMOS). Being affine, it changes no correlation.

`MonotoneCalibrator` then maps blend -> 0..5:
- `pchip` (default): isotonic regression of the scaled target on the blend, then a PCHIP curve through
  the centres of the isotonic steps. PCHIP through increasing knots is strictly increasing, so unlike
  the raw isotonic steps it creates no ties (ties would cost SROCC), yet it bends the blend toward the
  label's shape, which is what PLCC rewards. Beyond the outermost knots the curve continues with a
  tiny slope, so order is kept there too, and the result is clipped to [0, 5];
- `isotonic`: the isotonic steps themselves;
- `linear`: least-squares affine map (changes neither SROCC nor PLCC, only the scale), clipped;
- `auto` (default): `pchip` or `linear`, whichever gives the higher Final on grouped inner folds of the
  calibration rows (ties: `linear`). On big, smooth data the curve straightens the blend and wins; on
  small or already linear data its wiggles cost more than they give and the affine map is kept.
"""
from __future__ import annotations

import numpy as np
from scipy.interpolate import PchipInterpolator
from sklearn.isotonic import IsotonicRegression

from featurestore.errors import SiqaError
from tabular import metrics
from tabular.folds import inner_folds

LOW, HIGH = 0.0, 5.0
METHODS = ("pchip", "isotonic", "linear")
AUTO_CANDIDATES = ("linear", "pchip")
_TAIL_SLOPE = 1e-6  # relative: keeps order beyond the knots without visibly moving the score


class LabelScale:
    def fit(self, target: np.ndarray) -> "LabelScale":
        target = np.asarray(target, dtype=np.float64)
        low, high = float(target.min()), float(target.max())
        if LOW <= low and high <= HIGH:
            self.offset_, self.factor_ = 0.0, 1.0
        else:
            self.offset_, self.factor_ = low, (HIGH - LOW) / (high - low) if high > low else 1.0
        return self

    def transform(self, target: np.ndarray) -> np.ndarray:
        return LOW + (np.asarray(target, dtype=np.float64) - self.offset_) * self.factor_


class MonotoneCalibrator:
    def __init__(self, method: str = "auto", n_splits: int = 5, random_state: int = 0):
        self.method = method
        self.n_splits = n_splits
        self.random_state = random_state

    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> "MonotoneCalibrator":
        if self.method not in (*METHODS, "auto"):
            raise SiqaError(f"config: calibration {self.method!r} is not one of {', '.join((*METHODS, 'auto'))}")
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        self.cv_scores_ = {}
        self.method_ = self.method
        if self.method == "auto":
            fold = inner_folds(np.arange(len(y)) if groups is None else np.asarray(groups), self.n_splits,
                               self.random_state)
            for candidate in AUTO_CANDIDATES:
                held_out = np.empty(len(y))
                for k in np.unique(fold):
                    train, test = fold != k, fold == k
                    held_out[test] = MonotoneCalibrator(candidate).fit(x[train], y[train]).transform(x[test])
                self.cv_scores_[candidate] = metrics.final(held_out, y)
            self.method_ = max(AUTO_CANDIDATES, key=lambda c: (self.cv_scores_[c], -AUTO_CANDIDATES.index(c)))
        self._fit_curves(x, y)
        return self

    def _fit_curves(self, x: np.ndarray, y: np.ndarray) -> None:
        y = np.clip(np.asarray(y, dtype=np.float64), LOW, HIGH)
        slope, intercept = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (0.0, float(y.mean()))
        self.linear_ = (float(slope), float(intercept))
        self.isotonic_ = IsotonicRegression(increasing=True, y_min=LOW, y_max=HIGH, out_of_bounds="clip").fit(x, y)
        fitted = self.isotonic_.predict(x)
        # one knot per isotonic step: mean blend value of its rows, the step's level
        levels, step = np.unique(fitted, return_inverse=True)
        centres = np.bincount(step, weights=x) / np.bincount(step)
        self.curve_ = PchipInterpolator(centres, levels) if levels.size >= 2 else None
        self.knots_ = (float(centres.min()), float(centres.max()))
        self.span_ = float(np.ptp(x)) or 1.0

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.method_ == "linear" or (self.method_ == "pchip" and self.curve_ is None):
            out = self.linear_[0] * x + self.linear_[1]
        elif self.method_ == "isotonic":
            out = self.isotonic_.predict(x)
        else:
            inside = np.clip(x, *self.knots_)
            out = self.curve_(inside) + _TAIL_SLOPE * (HIGH - LOW) * (x - inside) / self.span_
        return np.clip(out, LOW, HIGH)
