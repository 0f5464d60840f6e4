"""`best`: the top ceil(1/cap) models by Final, equal weights (with cap = 1: the single best model, the
fall-back when the pool cannot beat its best member)."""
from __future__ import annotations

import math

import numpy as np

from tabular import metrics

from . import METHODS


def top_k(cap: float) -> int:
    """How many models equal weights of at most `cap` need."""
    return math.ceil(1 / cap - 1e-9)


@METHODS.register("best", priority=0)
def best(P: np.ndarray, y: np.ndarray, *, cap: float, random_state: int = 0) -> np.ndarray:
    scores = np.array([metrics.final(P[:, j], y) for j in range(P.shape[1])])
    top = np.argsort(-scores, kind="stable")[:top_k(cap)]
    weights = np.zeros(P.shape[1])
    weights[top] = 1.0 / len(top)
    return weights
