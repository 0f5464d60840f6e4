"""`identity`: the blend as it is, on the label's 0..5 scale (the affine `LabelScale` of the training
labels, fixed before any calibrator sees the blend), clipped to 0..5. Nothing is fitted to the blend.

The simplest `auto` candidate. On a few reference groups every fitted map moves from outer fold to outer
fold (its slope and offset are learnt from the handful of groups each fold trains on), and pooled
out-of-fold PLCC pays for every move; the blend itself is already on the target's scale, so keeping it
costs nothing there and the clip removes the members' far extrapolations on unseen references.
"""
from __future__ import annotations

import numpy as np

from tabular.inference import step

from . import CALIBRATORS, HIGH, LOW


@CALIBRATORS.register("identity", priority=-1)
class IdentityCalibrator:
    auto = True

    def fit(self, x: np.ndarray, y: np.ndarray) -> "IdentityCalibrator":
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(x, dtype=np.float64), LOW, HIGH)

    def export(self) -> list[dict]:
        return [step("clip", low=LOW, high=HIGH)]
