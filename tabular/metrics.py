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


def rankdata(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties share their mean rank), as scipy.stats.rankdata: the same
    algorithm without scipy's per-call array-API overhead, which dominated the greedy blender."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    tie = np.cumsum(starts) - 1                              # tie-group index of each sorted value
    bounds = np.r_[np.flatnonzero(starts), x.size]           # first sorted position of each group, then n
    ranks = np.empty(x.size)
    ranks[order] = 0.5 * (bounds[tie] + bounds[tie + 1] + 1)
    return ranks


def srocc(pred, y) -> float:
    pred, y = _pair(pred, y)
    return 0.0 if _degenerate(pred, y) else _pearson(rankdata(pred), rankdata(y))


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


def mean_fold_final(pred, y, fold) -> float:
    """Mean over folds of the Final of each fold's rows: each test split is scored by one model, as a
    held-out test set is, so fold-to-fold shifts of fitted maps do not count (pooled Final pays for them)."""
    pred, y = _pair(pred, y)
    fold = np.asarray(fold)
    return float(np.mean([final(pred[fold == k], y[fold == k]) for k in np.unique(fold)]))


def group_bootstrap_draws(groups, draws: int = 200, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(in-bag rows, out-of-bag rows) of `draws` group-bootstrap resamples: each takes as many reference
    groups as there are, with replacement (all rows of a drawn group, once per draw of it); out-of-bag are
    the rows of the groups never drawn (empty when every group was). A seed fixes the draws."""
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    # int32 row numbers: 200 draws of a 100k-row table hold 20M of them
    members = [np.flatnonzero(inverse == k).astype(np.int32) for k in range(inverse.max() + 1)]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        drawn = rng.integers(0, len(members), len(members))
        left = np.setdiff1d(np.arange(len(members)), drawn)
        out.append((np.concatenate([members[k] for k in drawn]),
                    np.concatenate([members[k] for k in left]) if left.size else np.empty(0, dtype=np.int32)))
    return out


def finals_on(preds: list[np.ndarray], y, row_sets: list[np.ndarray]) -> np.ndarray:
    """Final on each row set of the pooled predictions of every repeat (mean over repeats); NaN for a set
    of fewer than two rows."""
    y = np.asarray(y, dtype=np.float64)
    preds = [np.asarray(p, dtype=np.float64) for p in preds]
    return np.array([np.mean([final(p[rows], y[rows]) for p in preds]) if rows.size >= 2 else np.nan
                     for rows in row_sets])


def logistic4(x, top, bottom, centre, width):
    """The monotonic 4-parameter logistic of VQEG / IQA papers: bottom + (top - bottom) / (1 + e^-(x - centre)/|width|)."""
    return bottom + (top - bottom) / (1.0 + np.exp(-(np.asarray(x, dtype=np.float64) - centre) / (abs(width) + 1e-12)))


def fit_logistic4(pred, y) -> np.ndarray | None:
    """Least-squares parameters of `logistic4` mapping `pred` onto `y`; None when the fit does not converge
    (or the prediction is constant)."""
    import warnings

    from scipy.optimize import OptimizeWarning, curve_fit

    pred, y = _pair(pred, y)
    if _degenerate(pred, y):
        return None
    start = [float(np.max(y)), float(np.min(y)), float(np.median(pred)), float(np.std(pred)) or 1.0]
    try:
        with warnings.catch_warnings():  # an unestimable covariance is no concern: only the curve is used
            warnings.simplefilter("ignore", OptimizeWarning)
            # trf: its finite-difference steps stay usable when a start value is 0 (a centred prediction)
            params, _ = curve_fit(logistic4, pred, y, p0=start, method="trf", maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    return params if np.isfinite(params).all() else None


def plcc_after_logistic(pred, y) -> float:
    """PLCC between `logistic4(pred)` (fitted to `y`) and `y`, as IQA papers report it; NaN without a fit."""
    params = fit_logistic4(pred, y)
    if params is None:
        return float("nan")
    pred, y = _pair(pred, y)
    return _pearson(logistic4(pred, *params), y)
