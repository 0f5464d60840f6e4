"""`FittedPipeline`: what a run keeps for prediction — the stacked pool refit on all labelled rows,
the blender and calibrator fit on the out-of-fold predictions of every repeat, and the label scale.

Blend weights are learnt from out-of-fold predictions (the only honest view of how each model does on
unseen references), stacked over the repeats so that one fold split's luck counts less, and applied
to the predictions of the pool refit on all labelled rows.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from featurestore.errors import SiqaError
from tabular.data import TabularData
from tabular.stack import PoolPlan, StackedPool

from .calibration import LabelScale
from .settings import StackSettings


class FittedPipeline:
    def __init__(self, settings: StackSettings, columns: list[str], blocks: dict[str, int],
                 plan: PoolPlan = PoolPlan()):
        self.settings = settings
        self.columns = columns
        self.blocks = blocks
        self.plan = plan

    def fit(self, data: TabularData, oof: pd.DataFrame, oof_target: np.ndarray, oof_groups: np.ndarray,
            scale: LabelScale, on_member: Callable[[str], None] | None = None) -> "FittedPipeline":
        """`data`: all labelled rows; `oof`: out-of-fold member predictions stacked over repeats."""
        seed = self.settings.seed
        self.scale_ = scale
        self.pool_ = StackedPool(self.settings, self.columns, sorted(self.blocks), seed, self.plan).fit(data, on_member)
        started = time.perf_counter()
        self.blended_ = self.pool_.blended_names(list(oof.columns))
        blended = oof[self.blended_].to_numpy()
        self.blender_ = self.settings.make_blender(seed).fit(blended, oof_target, oof_groups)
        self.calibrator_ = self.settings.make_calibrator(seed).fit(self.blender_.predict(blended), oof_target,
                                                                   oof_groups, scale)
        self.blend_seconds_ = time.perf_counter() - started
        return self

    def check(self, data: TabularData) -> None:
        """The data must carry every feature the pipeline was fit on."""
        missing = [c for c in self.columns if c not in data.X.columns]
        missing += [b for b in self.blocks if b not in data.dense]
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise SiqaError(f"{data.source}: missing {len(missing)} feature(s) the run was fit on: {shown}")
        for block, width in self.blocks.items():
            if data.dense[block].shape[1] != width:
                raise SiqaError(f"{data.source}: dense feature {block!r} has width {data.dense[block].shape[1]}, "
                                f"the run was fit on width {width}")

    def predict_frame(self, data: TabularData) -> pd.DataFrame:
        """Per-member predictions (target scale), `blend` (target scale) and `score` (0..5, higher = better)."""
        self.check(data)
        frame = self.pool_.predict(data)
        frame["blend"] = self.blender_.predict(frame[self._blended(list(frame.columns))].to_numpy())
        frame["score"] = self.calibrator_.transform(frame["blend"].to_numpy())
        return frame

    def _blended(self, members: list[str]) -> list[str]:
        """The members the blender averages (all of them in a pipeline of an older siqa)."""
        return getattr(self, "blended_", None) or members

    def weights(self, members: list[str]) -> np.ndarray:
        """The blend weight of every pool member (0 for those the blender does not average)."""
        own = dict(zip(self._blended(members), self.blender_.weights_))
        return np.array([float(own.get(m, 0.0)) for m in members])

    def predict(self, data: TabularData) -> np.ndarray:
        return self.predict_frame(data)["score"].to_numpy()

    def export(self) -> dict:
        """`predict` as plain data for `blend.compiled`: the pool's export, the blend weights, the calibrator's
        program and the label scale (offset, factor)."""
        return {**self.pool_.export(), "blocks": dict(self.blocks),
                "weights": self.weights([name for name, _ in self.pool_.members_]),
                "calibrator": self.calibrator_.export(), "label_scale": [self.scale_.offset_, self.scale_.factor_]}
