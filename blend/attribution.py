"""Where a score came from: exact Shapley values of a fitted run's score over its feature groups.

The explained function is the run's headline pipeline exactly as it predicts (pool members, dense-block
Ridges, blend weights and calibrator: the compiled program `siqa predict` scores with, or the fitted
pipeline when the run has none). Features are grouped by the extractor that computed them (`regions_*`,
`text_*`, a dense block such as `imagenet_embed_absdiff` with its extractor), and the value of a coalition
of groups is the mean score of hybrids of the explained pair and each `background` row (labelled rows of the
run): the pair's features for the groups in the coalition, the background row's for the others
(interventional, as SHAP's explainers use a background set). With G groups every one of the 2^G
coalitions is evaluated, so the group values are exact Shapley values, not estimates, and

    score = baseline + sum(groups),   baseline = mean score of the background rows

holds to float rounding. Per feature, a group's value is split by Owen's rule (Shapley over groups, then
inside the group): for each coalition of the other groups one random order of the group's features is walked
and each feature gets its step, so the per-feature values add up exactly to the group's value too (the steps
telescope); with one order per coalition the split inside a group is an estimate, its total is not.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import factorial

import numpy as np

from featurestore.errors import SiqaError

#: rows x scalar columns, {block: rows x width} -> 0..5 scores
ScoreFunction = Callable[[np.ndarray, dict[str, np.ndarray]], np.ndarray]
MAX_GROUPS = 16  # 2^16 coalitions per pair: beyond that exact enumeration stops being cheap
CHUNK_ROWS = 8192  # rows per call of the score function: bounds the memory of the dense blocks


@dataclass(frozen=True)
class FeatureRows:
    """Rows in the pipeline's input form: scalar features (rows x columns, NaN allowed) and dense blocks."""

    X: np.ndarray
    dense: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.X)

    def row(self, i: int) -> FeatureRows:
        return FeatureRows(self.X[i:i + 1], {b: v[i:i + 1] for b, v in self.dense.items()})


@dataclass(frozen=True)
class Attribution:
    """One pair's score split as `baseline + sum(groups.values())` (= `baseline + sum(features.values())` when
    the features were attributed; empty otherwise)."""

    score: float
    baseline: float
    groups: dict[str, float]
    features: dict[str, float]

    def top(self, n: int = 3) -> list[tuple[str, float]]:
        """The `n` groups that moved the score most (largest |value|), strongest first."""
        return sorted(self.groups.items(), key=lambda item: -abs(item[1]))[:n]


def feature_groups(names: list[str], extractors: list[str]) -> dict[str, str]:
    """feature -> group: the extractor whose name prefixes it (`<extractor>_<column>`, longest name first);
    a feature no extractor prefixes (a feature-table run) is grouped by the text before its first `_`."""
    by_length = sorted(extractors, key=len, reverse=True)
    return {name: next((e for e in by_length if name.startswith(f"{e}_")), name.split("_", 1)[0]) for name in names}


class ShapleyExplainer:
    """Exact group Shapley values (and Owen per-feature values) of `predict` for rows against `background`.

    `columns` and `blocks` name the scalar columns of `X` and the dense blocks, in the order `predict` takes
    them; `groups` maps each of them to its group.
    """

    def __init__(self, predict: ScoreFunction, columns: list[str], blocks: list[str], groups: dict[str, str],
                 background: FeatureRows, seed: int = 0, per_feature: bool = True):
        self.predict = predict
        self.columns, self.blocks = list(columns), list(blocks)
        self.features = self.columns + self.blocks
        self.group_names = sorted({groups[f] for f in self.features})
        if len(self.group_names) > MAX_GROUPS:
            raise SiqaError(f"explain: {len(self.group_names)} feature groups; exact Shapley values enumerate "
                            f"2^groups coalitions and stop at {MAX_GROUPS} groups")
        if not len(background):
            raise SiqaError("explain: the background holds no row")
        self.background = background
        self.seed = seed
        #: split each group over its features (2^(G-1) x (features - groups) more hybrids per background row,
        #: about 40x the groups' cost for 95 features in 7 groups)
        self.per_feature = per_feature
        index = {g: i for i, g in enumerate(self.group_names)}
        #: group index of every feature (scalar columns, then blocks)
        self.feature_group = np.array([index[groups[f]] for f in self.features])
        n_groups = len(self.group_names)
        coalitions = np.arange(2 ** n_groups)
        #: coalition x group: whether the group is in the coalition (bit g of the coalition's number)
        self.members = (coalitions[:, None] >> np.arange(n_groups)) & 1 == 1
        sizes = self.members.sum(axis=1)
        #: Shapley weight |S|! (G - |S| - 1)! / G! of adding a group to a coalition of each size
        self.weights = np.array([factorial(s) * factorial(n_groups - s - 1) / factorial(n_groups)
                                 if s < n_groups else 0.0 for s in sizes])

    # --- the value function ---------------------------------------------------------------------------
    def _values(self, row: FeatureRows, masks: np.ndarray) -> np.ndarray:
        """Mean score over the background rows of each mask's hybrid: the row's features where the mask
        (masks x features) is true, the background row's elsewhere."""
        n_back, n_cols = len(self.background), len(self.columns)
        per_chunk = max(1, CHUNK_ROWS // n_back)
        out = np.empty(len(masks))
        for start in range(0, len(masks), per_chunk):
            part = masks[start:start + per_chunk]
            X = np.where(part[:, None, :n_cols], row.X[0][None, None, :], self.background.X[None, :, :])
            dense = {b: np.where(part[:, None, n_cols + k, None], row.dense[b][0][None, None, :],
                                 self.background.dense[b][None, :, :]).reshape(-1, row.dense[b].shape[1])
                     for k, b in enumerate(self.blocks)}
            scores = np.asarray(self.predict(X.reshape(-1, n_cols), dense), dtype=np.float64)
            out[start:start + len(part)] = scores.reshape(len(part), n_back).mean(axis=1)
        return out

    # --- Shapley and Owen values ----------------------------------------------------------------------
    def explain(self, row: FeatureRows) -> Attribution:
        """The attribution of one row (a `FeatureRows` of length 1)."""
        masks = self.members[:, self.feature_group]
        value = self._values(row, masks)
        n_groups = len(self.group_names)
        group_values = np.zeros(n_groups)
        feature_values = np.zeros(len(self.features))
        rng = np.random.default_rng(self.seed)
        for g in range(n_groups):
            without = np.flatnonzero(~self.members[:, g])
            with_g = without + (1 << g)
            group_values[g] = float(self.weights[without] @ (value[with_g] - value[without]))
            if self.per_feature:
                feature_values += self._owen_split(row, g, without, value, masks, rng)
        return Attribution(score=float(value[-1]), baseline=float(value[0]),
                           groups=dict(zip(self.group_names, group_values.tolist())),
                           features=dict(zip(self.features, feature_values.tolist())) if self.per_feature else {})

    def _owen_split(self, row: FeatureRows, g: int, without: np.ndarray, value: np.ndarray, masks: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
        """Per-feature values of group `g`: one random order of its features walked from each coalition without
        it; the steps of a walk add up to that coalition's marginal, so the values add up to the group's."""
        own = np.flatnonzero(self.feature_group == g)
        out = np.zeros(len(self.features))
        if len(own) == 1:
            out[own[0]] = float(self.weights[without] @ (value[without + (1 << g)] - value[without]))
            return out
        orders = np.array([rng.permutation(own) for _ in without])
        # the walk's inner points: coalition's features plus the first k of the order, k = 1 .. len(own) - 1
        inner = np.repeat(masks[without], len(own) - 1, axis=0).reshape(len(without), len(own) - 1, -1)
        for k in range(1, len(own)):
            taken = orders[:, :k]
            inner[np.arange(len(without))[:, None], k - 1, taken] = True
        inner_values = self._values(row, inner.reshape(-1, len(self.features))).reshape(len(without), len(own) - 1)
        walk = np.column_stack([value[without], inner_values, value[without + (1 << g)]])
        steps = np.diff(walk, axis=1)  # coalition x position in the order
        np.add.at(out, orders, self.weights[without][:, None] * steps)
        return out


def spread_background(rows: FeatureRows, target: np.ndarray, count: int) -> FeatureRows:
    """`count` rows whose labels are spread evenly over the label range (the rows at evenly spaced ranks of
    `target`): a small background that still holds good and bad pairs."""
    order = np.argsort(target, kind="stable")
    picked = order[np.unique(np.round(np.linspace(0, len(order) - 1, min(count, len(order)))).astype(int))]
    return FeatureRows(rows.X[picked], {b: v[picked] for b, v in rows.dense.items()})
