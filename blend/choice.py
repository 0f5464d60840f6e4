"""Choosing between candidates (blend methods, calibrations) on grouped inner folds: the one-standard-error rule.

Each candidate's held-out predictions on the inner folds give a pooled Final. On a table of a few
reference groups those scores differ mostly by luck: a greedy ensemble or a curved calibration that
wins by 0.01 on four held-out groups loses as often as it wins on the next one. So the choice is the
simplest candidate (candidates come simplest first) whose pooled Final is within one standard error
of the best one (Breiman et al.'s rule for tree pruning), the standard error being that of the
per-fold differences to the best candidate. Many groups make the standard error small and the best
candidate wins; few groups keep the simple one unless the complex one wins on every fold.
"""
from __future__ import annotations

import numpy as np

from tabular import metrics


CHOICES = ("one_se", "max")


def choose(rule: str, held_out: dict[str, np.ndarray], y: np.ndarray, fold: np.ndarray) -> str:
    """`one_se`: the rule above; `max`: the best pooled Final, ties to the simpler candidate."""
    if rule == "max":
        scores = {c: metrics.final(p, y) for c, p in held_out.items()}
        names = list(held_out)
        return max(names, key=lambda c: (scores[c], -names.index(c)))
    return one_standard_error_choice(held_out, y, fold)


def standard_errors(held_out: dict[str, np.ndarray], y: np.ndarray, fold: np.ndarray, best: str) -> dict[str, float]:
    """Each candidate's standard error of its per-fold Final differences to `best` (0 with one fold)."""
    folds = np.unique(fold)
    per_fold = {c: np.array([metrics.final(p[fold == k], y[fold == k]) for k in folds]) for c, p in held_out.items()}
    errors = {}
    for candidate in held_out:
        difference = per_fold[best] - per_fold[candidate]
        errors[candidate] = float(np.std(difference, ddof=1) / np.sqrt(difference.size)) if difference.size > 1 else 0.0
    return errors


def one_standard_error_choice(held_out: dict[str, np.ndarray], y: np.ndarray, fold: np.ndarray) -> str:
    """The chosen candidate; `held_out` maps each candidate (simplest first) to its held-out predictions."""
    names = list(held_out)
    pooled = {c: metrics.final(held_out[c], y) for c in names}
    best = max(names, key=lambda c: (pooled[c], -names.index(c)))
    errors = standard_errors(held_out, y, fold, best)
    for candidate in names:
        if pooled[candidate] >= pooled[best] - errors[candidate]:
            return candidate
    return best
