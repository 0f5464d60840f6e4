"""`top`: equal weights on the `top_k` models with the best Final on the blender's rows (at least ceil(1/cap)
of them, so that no weight exceeds the cap). The presets' default blend.

Fitting weights to out-of-fold predictions (`greedy`, `slsqp`) or choosing between methods by inner CV
(`auto`) learns from the few reference groups the blender's rows hold, and on a handful of groups that
choice is mostly luck: the weights move from outer fold to outer fold and pooled PLCC pays for each move.
An equal-weight average of the few best members needs no weights and, unlike the single best member
(`best`), does not flip from one model to another when two are about as good. Measured on 186-row
subsamples of TID2013 / CSIQ (6-10 references), the demo and synthetic tables of 150 and 500 rows (the
issue-16 notes), it was at or above `auto` on every table but within noise of it on the rest.
"""
from __future__ import annotations

import numpy as np

from tabular import metrics

from . import METHODS
from .best import top_k as cap_k


@METHODS.register("top", priority=-1)
def top(P: np.ndarray, y: np.ndarray, *, cap: float, random_state: int = 0, top_k: int = 3) -> np.ndarray:
    k = min(P.shape[1], max(int(top_k), cap_k(cap)))
    scores = np.array([metrics.final(P[:, j], y) for j in range(P.shape[1])])
    chosen = np.argsort(-scores, kind="stable")[:k]
    weights = np.zeros(P.shape[1])
    weights[chosen] = 1.0 / k
    return weights
