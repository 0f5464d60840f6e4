"""Gradient-boosted trees: CatBoost, XGBoost, LightGBM (the pool runs several seeds of each).

They take NaN natively, so they see the raw feature matrix. Each is pinned to a fixed thread count
and deterministic mode, so a seed reproduces its predictions exactly.

CatBoost's cost grows with the number of columns it scores at every split: `rsm="auto"` lets it
consider at most `AUTO_RSM_COLUMNS` random columns per split (all of them on narrow tables such as the
nine-metric TID2013/CSIQ ones), which on a few hundred columns is about six times faster at no loss
that trees averaged over seeds would notice.

Each exports its trees from the library's own JSON dump (CatBoost `save_model(format="json")`, XGBoost
`save_raw("json")`, LightGBM `dump_model()`) as a `tabular.inference` program with the library's comparison,
missing-value and precision rules.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from ..inference import step
from .base import POOL, PoolModel

AUTO_RSM_COLUMNS = 50


@POOL.register("catboost")
class CatBoostModel(PoolModel):
    def __init__(self, iterations: int = 500, depth: int = 6, learning_rate: float = 0.05,
                 l2_leaf_reg: float = 3.0, rsm: float | str = "auto", random_state: int = 0, threads: int = 2):
        self.iterations = iterations
        self.depth = depth
        self.learning_rate = learning_rate
        self.l2_leaf_reg = l2_leaf_reg
        self.rsm = rsm
        self.random_state = random_state
        self.threads = threads

    def _fit(self, X, y, groups):
        from catboost import CatBoostRegressor

        X = np.asarray(X, dtype=np.float64)
        rsm = min(1.0, AUTO_RSM_COLUMNS / max(X.shape[1], 1)) if self.rsm == "auto" else float(self.rsm)
        self.model_ = CatBoostRegressor(
            iterations=self.iterations, depth=self.depth, learning_rate=self.learning_rate,
            l2_leaf_reg=self.l2_leaf_reg, rsm=rsm, random_seed=self.random_state,
            thread_count=self.threads, verbose=False, allow_writing_files=False)
        self.model_.fit(X, np.asarray(y, dtype=np.float64))

    def _predict(self, X):
        return self.model_.predict(np.asarray(X, dtype=np.float64))

    def export(self):
        with tempfile.TemporaryDirectory(prefix="siqa-catboost-") as tmp:
            path = os.path.join(tmp, "model.json")
            self.model_.save_model(path, format="json")
            with open(path) as fh:
                model = json.load(fh)
        return [catboost_program(model)]


def catboost_program(model: dict) -> dict:
    """An `oblivious_ensemble` step from a CatBoost JSON model (float features only)."""
    features = model["features_info"]["float_features"]
    splits = [(split, features[split["float_feature_index"]]) for tree in model["oblivious_trees"]
              for split in tree["splits"]]
    if any(split["split_type"] != "FloatFeature" for split, _ in splits):
        raise ValueError("catboost export: only float-feature splits are supported")
    depths = [len(tree["splits"]) for tree in model["oblivious_trees"]]
    leaves = [len(tree["leaf_values"]) for tree in model["oblivious_trees"]]
    scale, bias = model.get("scale_and_bias", [1.0, [0.0]])
    return step("oblivious_ensemble",
                split_feature=np.array([f["flat_feature_index"] for _, f in splits], dtype=np.int64),
                split_border=np.array([split["border"] for split, _ in splits], dtype=np.float32),
                split_nan_true=np.array([f["nan_value_treatment"] == "AsTrue" for _, f in splits], dtype=bool),
                tree_start=np.concatenate([[0], np.cumsum(depths)]).astype(np.int64),
                leaf_start=np.concatenate([[0], np.cumsum(leaves)[:-1]]).astype(np.int64),
                leaf_values=np.array([v for tree in model["oblivious_trees"] for v in tree["leaf_values"]]),
                scale=float(scale), bias=float(bias[0] if isinstance(bias, list) else bias))


@POOL.register("xgboost")
class XGBoostModel(PoolModel):
    def __init__(self, n_estimators: int = 400, max_depth: int = 4, learning_rate: float = 0.05,
                 subsample: float = 0.8, colsample_bytree: float = 0.8, min_child_weight: float = 1.0,
                 reg_lambda: float = 1.0, random_state: int = 0, threads: int = 2):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.random_state = random_state
        self.threads = threads

    def _fit(self, X, y, groups):
        from xgboost import XGBRegressor

        self.model_ = XGBRegressor(
            n_estimators=self.n_estimators, max_depth=self.max_depth, learning_rate=self.learning_rate,
            subsample=self.subsample, colsample_bytree=self.colsample_bytree,
            min_child_weight=self.min_child_weight, reg_lambda=self.reg_lambda, tree_method="hist",
            random_state=self.random_state, n_jobs=self.threads, verbosity=0)
        self.model_.fit(np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64))

    def _predict(self, X):
        return self.model_.predict(np.asarray(X, dtype=np.float64)).astype(np.float64)

    def export(self):
        learner = json.loads(self.model_.get_booster().save_raw("json"))["learner"]
        trees = learner["gradient_booster"]["model"]["trees"]
        offsets = np.concatenate([[0], np.cumsum([len(t["left_children"]) for t in trees])]).astype(np.int64)

        def flat(key, dtype):
            return np.concatenate([np.asarray(t[key], dtype=dtype) for t in trees])

        left, right = flat("left_children", np.int64), flat("right_children", np.int64)
        owner = np.repeat(offsets[:-1], np.diff(offsets))
        leaf = left < 0
        # squared-error regression: the prediction is the margin, base score plus leaves, all float32
        base = np.float32(float(learner["learner_model_param"]["base_score"].strip("[]")))
        return [step("tree_ensemble", feature=flat("split_indices", np.int64),
                     threshold=flat("split_conditions", np.float32).astype(np.float64),
                     left=np.where(leaf, -1, left + owner), right=np.where(leaf, -1, right + owner),
                     value=flat("split_conditions", np.float32), default_left=flat("default_left", bool),
                     roots=offsets[:-1], compare="<", input_dtype="float32", base=base, accumulate="float32")]


@POOL.register("lightgbm")
class LightGBMModel(PoolModel):
    def __init__(self, n_estimators: int = 400, num_leaves: int = 15, learning_rate: float = 0.05,
                 min_child_samples: int = 10, subsample: float = 0.8, colsample_bytree: float = 0.8,
                 reg_lambda: float = 1.0, random_state: int = 0, threads: int = 2):
        self.n_estimators = n_estimators
        self.num_leaves = num_leaves
        self.learning_rate = learning_rate
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.random_state = random_state
        self.threads = threads

    def _fit(self, X, y, groups):
        from lightgbm import LGBMRegressor

        self.model_ = LGBMRegressor(
            n_estimators=self.n_estimators, num_leaves=self.num_leaves, learning_rate=self.learning_rate,
            min_child_samples=self.min_child_samples, subsample=self.subsample, subsample_freq=1,
            colsample_bytree=self.colsample_bytree, reg_lambda=self.reg_lambda,
            random_state=self.random_state, n_jobs=self.threads, deterministic=True,
            force_row_wise=True, verbose=-1)
        # numpy, not a DataFrame: store column names may hold characters LightGBM rejects
        self.model_.fit(np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64))

    def _predict(self, X):
        return self.model_.predict(np.asarray(X, dtype=np.float64))

    def export(self):
        dump = self.model_.booster_.dump_model()
        if dump.get("average_output") or dump.get("num_tree_per_iteration", 1) != 1:
            raise ValueError("lightgbm export: only plain regression boosting is supported")
        nodes: dict[str, list] = {k: [] for k in ("feature", "threshold", "left", "right", "value",
                                                  "default_left", "nan_as_zero")}

        def add(node: dict) -> int:
            index = len(nodes["value"])
            for values in nodes.values():
                values.append(0)
            if "leaf_value" in node:
                nodes["left"][index] = nodes["right"][index] = -1
                nodes["value"][index] = node["leaf_value"]
                return index
            if node["decision_type"] != "<=" or node["missing_type"] == "Zero":
                raise ValueError("lightgbm export: only numerical splits without zero_as_missing are supported")
            nodes["feature"][index], nodes["threshold"][index] = node["split_feature"], node["threshold"]
            nodes["default_left"][index] = node["default_left"]
            # LightGBM reads NaN as 0.0 unless the split learnt a side for NaN (missing_type NaN)
            nodes["nan_as_zero"][index] = node["missing_type"] != "NaN"
            nodes["left"][index] = add(node["left_child"])
            nodes["right"][index] = add(node["right_child"])
            return index

        roots = [add(tree["tree_structure"]) for tree in dump["tree_info"]]
        kinds = {"feature": np.int64, "threshold": np.float64, "left": np.int64, "right": np.int64,
                 "value": np.float64, "default_left": bool, "nan_as_zero": bool}
        return [step("tree_ensemble", **{k: np.array(v, dtype=kinds[k]) for k, v in nodes.items()},
                     roots=np.array(roots, dtype=np.int64), compare="<=", input_dtype="float64")]
