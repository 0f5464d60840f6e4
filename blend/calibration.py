"""Map the blend onto the 0..5 quality scale with a monotone function fit on out-of-fold predictions.

`LabelScale` fixes the affine map from the target to 0..5: the identity when the labels already live
in 0..5 with higher = better (SeIQA), otherwise min-max of the training targets (TID2013 MOS 0..7,
CSIQ -DMOS). Being affine, it changes no correlation.

`MonotoneCalibrator` fits that label scale on the training targets, puts the blend (which lives on the
target's scale) through it too, and then maps blend -> 0..5 with one registered calibrator
(`blend.calibrators`: `identity`, `linear`, `pchip`, `isotonic`, ...), or with `auto` (default): the
`auto` candidates (`identity`, `linear`, `pchip`), the simplest (lowest priority, `identity`: nothing
fitted) whose Final on grouped inner folds of the calibration rows is within one standard error of the
best (`blend.choice`; `choice = "max"`: the best, ties to the simpler). On big, smooth data the curve
straightens the blend and wins; on small data a fitted map shifts from fold to fold, its wiggles cost
more than they give, and a win on a handful of groups is mostly luck: the blend is kept as it is.
"""
from __future__ import annotations

import numpy as np

from tabular import metrics
from tabular.folds import inner_folds
from tabular.inference import step

from .calibrators import CALIBRATORS, HIGH, LOW
from .choice import choose


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

    def inverse(self, scaled: np.ndarray) -> np.ndarray:
        """Values on 0..5 back on the target's own scale."""
        return self.offset_ + (np.asarray(scaled, dtype=np.float64) - LOW) / self.factor_

    def export(self) -> list[dict]:
        return [step("affine", scale=self.factor_, offset=LOW - self.offset_ * self.factor_)]


class MonotoneCalibrator:
    def __init__(self, method: str = "auto", n_splits: int = 5, choice: str = "one_se", random_state: int = 0):
        self.method = method
        self.choice = choice
        self.n_splits = n_splits
        self.random_state = random_state

    def fit(self, x: np.ndarray, target: np.ndarray, groups: np.ndarray | None = None,
            scale: LabelScale | None = None) -> "MonotoneCalibrator":
        """`x`: blend values and `target`: their labels, both on the target's own scale (higher = better);
        `scale`: the label scale to use (default: fit on `target`)."""
        self.scale_ = scale or LabelScale().fit(target)
        x = self.scale_.transform(x)
        y = self.scale_.transform(target)
        self.cv_scores_ = {}
        self.method_ = self.method
        if self.method == "auto":
            candidates = [name for name, cls in CALIBRATORS.items() if cls.auto]
            fold = inner_folds(np.arange(len(y)) if groups is None else np.asarray(groups), self.n_splits,
                               self.random_state)
            held_out = {}
            for candidate in candidates:
                held_out[candidate] = np.empty(len(y))
                for k in np.unique(fold):
                    train, test = fold != k, fold == k
                    held_out[candidate][test] = CALIBRATORS.get(candidate)().fit(x[train], y[train]).transform(x[test])
                self.cv_scores_[candidate] = metrics.final(held_out[candidate], y)
            self.method_ = choose(self.choice, held_out, y, fold)
        self.calibrator_ = CALIBRATORS.get(self.method_)().fit(x, y)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Scores (0..5) of blend values on the target's scale."""
        scale = getattr(self, "scale_", None)  # None: unpickled from a run of an older siqa, fit on 0..5 blends
        return self.calibrator_.transform(x if scale is None else scale.transform(x))

    def export(self) -> list[dict]:
        """`transform` as a `tabular.inference` program: the label scale's affine map, then the calibrator's."""
        scale = getattr(self, "scale_", None)
        return ([] if scale is None else scale.export()) + self.calibrator_.export()
