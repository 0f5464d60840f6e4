"""`top`: equal weights on the best members — at most `top_k` of them, and only those whose Final is
within two standard errors of the best one's (of the per-fold differences on grouped folds of the
blender's rows, as in `blend.choice`) — with at least ceil(1/cap) members, so that no weight exceeds the
cap. The presets' default blend.

Fitting weights to out-of-fold predictions (`greedy`, `slsqp`) or choosing between methods by inner CV
(`auto`) learns from the few reference groups the blender's rows hold, and on a handful of groups that
choice is mostly luck: the weights move from outer fold to outer fold and pooled PLCC pays for each move.
An equal-weight average of the members that cannot be told apart from the best needs no weights and,
unlike the single best member (`best`), does not flip from one model to another when two are about as
good; a member clearly worse than the best (one model is the right one) is left out, as `best` would.
Two standard errors, not one: on 186-row subsamples of TID2013 / CSIQ, the demo and 150/500-row synthetic
tables one error dropped members that the average needed (nested Final 0.002-0.012 lower on 9 of 12
tables), while a dominant member two errors ahead is still kept alone (issue 16's closing note).
"""
from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from tabular import metrics
from tabular.folds import inner_folds

from ..choice import standard_errors
from . import METHODS
from .best import top_k as cap_k

#: grouped folds of the blender's rows that the standard errors come from
FOLDS = 5
#: how many standard errors below the best a member may score and still be averaged in
SE_FACTOR = 2.0


@METHODS.register("top", priority=-1)
def top(P: np.ndarray, y: np.ndarray, *, cap: float, random_state: int = 0, groups: np.ndarray | None = None,
        top_k: Annotated[int, Field(ge=1, description="top: equal weights on up to this many best members")] = 3
        ) -> np.ndarray:
    scores = np.array([metrics.final(P[:, j], y) for j in range(P.shape[1])])
    order = np.argsort(-scores, kind="stable")
    chosen = list(order[:min(P.shape[1], max(int(top_k), 1))])
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    if len(chosen) > 1 and np.unique(groups).size >= 2:
        fold = inner_folds(groups, FOLDS, random_state)
        errors = standard_errors({j: P[:, j] for j in chosen}, y, fold, int(order[0]))
        chosen = [j for j in chosen if scores[j] >= scores[order[0]] - SE_FACTOR * errors[j]]
    need = cap_k(cap)  # the cap may ask for more members than are within noise of the best
    chosen += [j for j in order if j not in chosen][:max(0, need - len(chosen))]
    weights = np.zeros(P.shape[1])
    weights[chosen] = 1.0 / len(chosen)
    return weights
