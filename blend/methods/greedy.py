"""`greedy`: Caruana et al. ensemble selection with replacement on the exact Final, started from `best`;
a model is added only while its weight stays <= cap, and the best prefix is kept."""
from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from tabular import metrics

from . import METHODS
from .best import best, top_k


@METHODS.register("greedy", priority=1)
def greedy(P: np.ndarray, y: np.ndarray, *, cap: float, random_state: int = 0,
           rounds: Annotated[int, Field(ge=0, description="greedy: ensemble-selection additions")] = 50) -> np.ndarray:
    counts = np.round(best(P, y, cap=cap) * top_k(cap)).astype(np.int64)
    total = int(counts.sum())
    running = P @ counts
    best_counts, best_score = counts.copy(), metrics.final(running / total, y)
    for _ in range(rounds):
        allowed = np.flatnonzero((counts + 1) <= cap * (total + 1) + 1e-9)
        if allowed.size == 0:
            break
        scores = [metrics.final((running + P[:, j]) / (total + 1), y) for j in allowed]
        pick = int(allowed[int(np.argmax(scores))])
        counts[pick] += 1
        total += 1
        running = running + P[:, pick]
        if max(scores) > best_score + 1e-12:
            best_counts, best_score = counts.copy(), max(scores)
    return best_counts / best_counts.sum()
