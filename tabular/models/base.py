"""The model-pool contract and registry: adding a model is one module of `tabular.models` plus one
`@POOL.register("<name>")` line.

A pool model is a scikit-learn regressor, and `sklearn.utils.estimator_checks` checks it (tests/
test_contracts.py): parameters in `__init__`; `fit(X, y, groups=None)` learns (`X` a float64
DataFrame of scalar features and meta-features, or any 2-d array, NaN allowed; `y` the target, higher
= better; `groups` the reference keys, for models that tune themselves with grouped inner CV);
`predict(X)` returns one score per row on the target's scale. Fitted state ends in `_`.
`PoolModel.fit` / `predict` validate the input the scikit-learn way (2-d, numeric, at least two rows,
`n_features_in_`, the same columns as in fit) and hand the model's `_fit` / `_predict` a float64
DataFrame whose columns are the given names (`x0`, `x1`, ... for an array).
`export()` gives, once fitted, the model as a library-free program (`tabular.inference`) computing `predict`
from the same matrix; a model without one (the default: None) makes its run score through the full pipeline.
Models that use threads take `threads`; models with randomness take `random_state`.
Models that keep files (fine-tuned adapters) take `work_dir`, a folder of the run that outlives the process
(None outside a run).

Members that learn from the pair images themselves (fine-tuned vision-language models) set
`needs_pairs = True`: they override `fit` / `predict` (no feature validation: they read no feature) and get X
indexed by pair id and a keyword `pairs`, a frame with the same index holding each row's `ref_path`,
`dist_path`, `ref_sha256` and `dist_sha256` (read from the store's pairs table), so they plug into the nested
evaluation unchanged.
"""
from __future__ import annotations

import inspect
import os
import warnings
from typing import ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from featurestore.errors import SiqaError
from featurestore.registry import Registry
from featurestore.settings import Strict, signature_model

from ..inference import step
from .parameters import PARAMETERS

POOL: Registry[type["PoolModel"]] = Registry("pool model", package="tabular.models")

#: meta-feature columns (dense-block Ridge predictions) carry this prefix in the pool's input
META_PREFIX = "meta_"


class PoolModel(RegressorMixin, BaseEstimator):
    name: ClassVar[str]
    needs_pairs: ClassVar[bool] = False
    #: whether predictions live on the target's scale; the blender averages only members that do
    on_target_scale: ClassVar[bool] = True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing features are imputed (or taken natively) by every model
        return tags

    #: constructor parameters the run fills in (never set in a config): how it runs, and the run's seed
    RUN_PARAMETERS: ClassVar[tuple[str, ...]] = ("threads", "work_dir", "random_state")
    #: the schema of its `[tabular.pool.<member>]` parameters: its annotated constructor signature less the
    #: parameters the run fills in, made when the class is (`featurestore.settings.signature_model`)
    Settings: ClassVar[type[Strict]]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.Settings = signature_model(cls, PoolModel.RUN_PARAMETERS, PARAMETERS)

    @classmethod
    def takes_seeds(cls) -> bool:
        return "random_state" in inspect.signature(cls.__init__).parameters

    @classmethod
    def runtime_parameters(cls, threads: int, work_dir: str | None) -> dict:
        """`threads` and `work_dir` for a model whose constructor takes them."""
        accepted = inspect.signature(cls.__init__).parameters
        return {k: v for k, v in (("threads", threads), ("work_dir", work_dir)) if k in accepted}

    def fit(self, X, y, groups: np.ndarray | None = None) -> "PoolModel":
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_all_finite="allow-nan", ensure_min_samples=2,
                             y_numeric=True)
        self._fit(self._frame(X), np.asarray(y, dtype=np.float64), groups)
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64, ensure_all_finite="allow-nan")
        return self._predict(self._frame(X))

    def _frame(self, X: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(X, columns=self._input_names(X.shape[1]))

    def _input_names(self, n: int) -> list[str]:
        names = getattr(self, "feature_names_in_", None)
        return [str(c) for c in names] if names is not None else [f"x{j}" for j in range(n)]

    def _positions(self, columns: list[str]) -> np.ndarray:
        """Positions of the named `_fit` columns in the input matrix (for an exported `take`)."""
        names = self._input_names(self.n_features_in_)
        return np.array([names.index(c) for c in columns], dtype=np.int64)

    def _fit(self, X: pd.DataFrame, y: np.ndarray, groups: np.ndarray | None) -> None:
        raise NotImplementedError

    def _predict(self, X: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def export(self) -> list[dict] | None:
        """The fitted model as a `tabular.inference` program from the input matrix of `predict` to its
        output, equal to `predict` (tests/test_fast_predict.py); None when the model has none."""
        return None

    #: fitted attributes that name the member's own files under its `work_dir` (a run's `fits/`): kept relative
    #: to it in `state`, so a moved run still finds them
    file_attributes: ClassVar[tuple[str, ...]] = ()

    def state(self, work_dir: str) -> dict:
        """The fitted member as JSON data, for a member no `export` program can express (one that reads the pair
        images and keeps its weights as files): registry name, constructor parameters, fitted attributes."""
        import json

        params = {k: v for k, v in self.get_params().items() if k != "work_dir"}
        fitted = {k: v for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_")}
        for key in self.file_attributes:
            fitted[key] = os.path.relpath(fitted[key], work_dir)
        state = {"model": self.name, "params": params, "fitted": fitted}
        try:
            return json.loads(json.dumps(state, allow_nan=False))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{self.name}: its fitted state is not plain data ({error})") from None

    @classmethod
    def from_state(cls, state: dict, work_dir: str) -> "PoolModel":
        """The member `state` describes, its files under `work_dir`: built from data, no code is loaded."""
        model = cls(**state["params"], **cls.runtime_parameters(1, work_dir))
        for key, value in state["fitted"].items():
            setattr(model, key, os.path.join(work_dir, value) if key in cls.file_attributes else value)
        return model

    def describe(self) -> str:
        """What the fitted model chose from the data that a reader of the leaderboard should know (the
        feature a one-feature model picked, say); empty when there is nothing to say."""
        return ""


class FiniteScaler(TransformerMixin, BaseEstimator):
    """Median imputation then z-scoring, both learnt on the training rows.

    For models that cannot take NaN (linear, kernel, neural). A column that is all-NaN in training is
    imputed with 0; a constant column is only centred.
    """

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: imputed with 0 below
            median = np.nanmedian(np.where(np.isfinite(X), X, np.nan), axis=0) if len(X) else np.zeros(X.shape[1])
        self.median_ = np.nan_to_num(median, nan=0.0)
        filled = self._fill(X)
        self.mean_ = filled.mean(axis=0)
        scale = filled.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        return self

    def _fill(self, X: np.ndarray) -> np.ndarray:
        return np.where(np.isfinite(X), X, self.median_)

    def transform(self, X) -> np.ndarray:
        return (self._fill(np.asarray(X, dtype=np.float64)) - self.mean_) / self.scale_

    def export(self) -> dict:
        return step("finite_scale", median=self.median_, mean=self.mean_, scale=self.scale_)


def select_columns(X: pd.DataFrame, columns: list[str] | None, model: str) -> pd.DataFrame:
    """The configured columns of X (all when None); a missing one is a configuration error."""
    if columns is None:
        return X
    missing = [c for c in columns if c not in X.columns]
    if missing:
        raise SiqaError(f"config: tabular model {model}: no feature column(s) {', '.join(map(repr, missing))}")
    return X[list(columns)]
