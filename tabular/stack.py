"""`StackedPool`: meta-features plus the model pool, fit on one set of rows, predicting any other rows.

This is the unit the nested engine refits once per (repeat, excluded folds) and the run refits once on
all labelled rows. An unfitted `StackedPool` is also the whole description of such a fit (settings, columns,
dense blocks, seed and the run's `PoolPlan`): `fresh()` gives an unfitted copy to fit elsewhere. Fitting: dense blocks -> out-of-fold Ridge meta-features on the training rows
(`DenseMetaFeatures`), appended to the scalar columns; then every pool member is fit on that matrix
(members that declare `needs_pairs` also get the rows' pair ids and image paths).
Predicting: meta-features from the Ridges refit on all training rows, then every member predicts.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from featurestore.errors import SiqaError

from .data import TabularData
from .meta import DenseMetaFeatures
from .models import PoolModel
from .settings import TabularSettings



@dataclass(frozen=True)
class PoolPlan:
    """What a run decides about its pool at run time, beside the settings: the members it dropped (a time
    plan, or `min_rows` above the table's rows) and the folder where members keep files (None outside a run)."""

    drop: frozenset[str] = frozenset()
    work_dir: str | None = None

    def dropping(self, members) -> "PoolPlan":
        return PoolPlan(self.drop | frozenset(members), self.work_dir)


class StackedPool:
    def __init__(self, settings: TabularSettings, columns: list[str], blocks: list[str], seed: int,
                 plan: PoolPlan = PoolPlan()):
        self.settings = settings
        self.columns = columns
        self.blocks = blocks
        self.seed = seed
        self.plan = plan

    def fresh(self) -> "StackedPool":
        """An unfitted pool of the same description."""
        return StackedPool(self.settings, self.columns, self.blocks, self.seed, self.plan)

    def _pool(self):
        """The enabled members' estimators, less those the plan dropped."""
        return [(name, model) for member, entry in self.settings.members().items()
                for name, model in entry.estimators(member, self.settings.threads, self.seed, self.plan.work_dir)
                if name not in self.plan.drop]

    def member_names(self) -> list[str]:
        return [name for name, _ in self._pool()]

    def blended_names(self, members: list[str]) -> list[str]:
        """The `members` whose predictions live on the target's scale: what the blender averages."""
        scaled = {name for name, model in self._pool() if model.on_target_scale}
        return [name for name in members if name in scaled]

    @staticmethod
    def _member_inputs(name: str, model: PoolModel, data: TabularData, X: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
        """X (and `pairs=`, indexed by pair id) as the member takes them."""
        if not model.needs_pairs:
            return X, {}
        if data.pairs is None:
            raise SiqaError(f"{data.source}: pool member {name} learns from the pair images, which only a "
                            f"feature-store run has; disable it for a feature table")
        index = pd.Index(data.ids, name="pair_id")
        return X.set_axis(index), {"pairs": data.pairs.set_axis(index)}

    def _inputs(self, data: TabularData, meta: pd.DataFrame) -> pd.DataFrame:
        X = data.X[self.columns].reset_index(drop=True)
        return pd.concat([X, meta], axis=1) if self.blocks else X

    def fit(self, data: TabularData, on_member: Callable[[str], None] | None = None) -> "StackedPool":
        """Fit on every row of `data` (all labelled); `on_member(name)` is called before each member fits."""
        target = data.target
        self.meta_ = DenseMetaFeatures(alphas=self.settings.meta.alphas, n_splits=self.settings.meta.folds,
                                       random_state=self.seed)
        meta = self.meta_.fit_transform({b: data.dense[b] for b in self.blocks}, target, data.groups)
        X = self._inputs(data, meta)
        self.members_, self.fit_seconds_ = [], {}
        for name, model in self._pool():
            if on_member is not None:
                on_member(name)
            start = time.perf_counter()
            inputs, pairs = self._member_inputs(name, model, data, X)
            model.fit(inputs, target, data.groups, **pairs)
            self.fit_seconds_[name] = time.perf_counter() - start
            self.members_.append((name, model))
        return self

    def predict(self, data: TabularData) -> pd.DataFrame:
        """One column per pool member, on the target's scale (higher = better)."""
        meta = self.meta_.transform({b: data.dense[b] for b in self.blocks}) if self.blocks else None
        X = self._inputs(data, meta)
        frame = {}
        for name, model in self.members_:
            inputs, pairs = self._member_inputs(name, model, data, X)
            frame[name] = np.asarray(model.predict(inputs, **pairs), dtype=np.float64)
        return pd.DataFrame(frame)

    def export(self) -> dict:
        """`predict` as plain data: the scalar columns, the meta-feature programs (one per dense block, their
        columns follow the scalars) and each member as its `tabular.inference` program, or, for a member that
        reads the pair images, its `state` (parameters, fitted attributes, its files under the plan's
        `work_dir`). A member with neither is a SiqaError naming it: a run holds data only."""
        members = []
        for name, model in self.members_:
            try:
                member = model.state(self.plan.work_dir) if model.needs_pairs else model.export()
            except ValueError as error:  # a fitted structure the export does not cover (the message says which)
                raise SiqaError(f"pool member {name}: no data-only form ({error}); disable it in "
                                f"[tabular.pool.{name}]") from None
            if member is None:
                raise SiqaError(f"pool member {name}: {type(model).__name__} has no export; disable it in "
                                f"[tabular.pool.{name}]")
            members.append([name, member])
        return {"columns": list(self.columns), "meta": [[block, program] for block, program in
                                                       (self.meta_.export() if self.blocks else {}).items()],
                "members": members}
