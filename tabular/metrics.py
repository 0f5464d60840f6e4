"""The challenge metrics: SROCC, PLCC, KRCC, RMSE and Final = 0.6 SROCC + 0.4 PLCC.

PLCC is plain Pearson on the raw prediction (no logistic fit), exactly as the challenge scores it.
A constant prediction has no correlation: it scores 0, not NaN, so a degenerate model ranks last
instead of poisoning a mean.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

SROCC_WEIGHT = 0.6
PLCC_WEIGHT = 0.4


def _pair(pred, y) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if pred.shape != y.shape:
        raise ValueError(f"prediction has {pred.size} values, labels {y.size}")
    return pred, y


def _degenerate(pred: np.ndarray, y: np.ndarray) -> bool:
    return pred.size < 2 or np.ptp(pred) == 0 or np.ptp(y) == 0


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    # plain formula rather than scipy.stats: the blender evaluates it thousands of times per fit
    a, b = a - a.mean(), b - b.mean()
    return float(np.clip((a @ b) / np.sqrt((a @ a) * (b @ b)), -1.0, 1.0))


def srocc(pred, y) -> float:
    pred, y = _pair(pred, y)
    return 0.0 if _degenerate(pred, y) else _pearson(stats.rankdata(pred), stats.rankdata(y))


def plcc(pred, y) -> float:
    pred, y = _pair(pred, y)
    return 0.0 if _degenerate(pred, y) else _pearson(pred, y)


def krcc(pred, y) -> float:
    pred, y = _pair(pred, y)
    return 0.0 if _degenerate(pred, y) else float(stats.kendalltau(pred, y).statistic)


def rmse(pred, y) -> float:
    pred, y = _pair(pred, y)
    return float(np.sqrt(np.mean((pred - y) ** 2)))


def final(pred, y) -> float:
    return SROCC_WEIGHT * srocc(pred, y) + PLCC_WEIGHT * plcc(pred, y)


def all_metrics(pred, y) -> dict[str, float]:
    """Every metric at once, keyed by the names the leaderboard uses."""
    s, p = srocc(pred, y), plcc(pred, y)
    return {"srocc": s, "plcc": p, "krcc": krcc(pred, y), "rmse": rmse(pred, y),
            "final": SROCC_WEIGHT * s + PLCC_WEIGHT * p}
