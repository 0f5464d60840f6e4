"""`slsqp`: SLSQP on a smooth surrogate, 0.6 * Spearman of soft ranks + 0.4 * Pearson (soft rank of a row =
mean sigmoid of its difference to a fixed sample of `anchors` rows, at `temperature` times the blend's
spread), with analytic gradients. Above `max_rows` rows it is fit on a seeded random subset of that many:
a dozen weights need no more, and every step costs rows x anchors."""
from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field
import torch
from scipy.optimize import minimize

from tabular import metrics

from . import METHODS


@METHODS.register("slsqp", priority=2)
def slsqp(P: np.ndarray, y: np.ndarray, *, cap: float, random_state: int = 0,
          anchors: Annotated[int, Field(ge=2, description="slsqp: anchor rows of the smoothed rank objective")] = 400,
          temperature: Annotated[float, Field(gt=0, description="slsqp: softness of the smoothed ranks")] = 0.05,
          max_rows: Annotated[int, Field(ge=2, description="slsqp: rows subsampled for the optimisation")] = 2000
          ) -> np.ndarray:
    m = P.shape[1]
    rng = np.random.default_rng(random_state)
    if len(y) > max_rows:
        rows = np.sort(rng.choice(len(y), max_rows, replace=False))
        P, y = P[rows], y[rows]
    anchor_rows = rng.choice(len(y), size=min(anchors, len(y)), replace=False)
    scale = P.std(axis=0).mean() or 1.0
    P_t = torch.as_tensor(P / scale, dtype=torch.float64)
    y_rank = torch.as_tensor(metrics.rankdata(y), dtype=torch.float64)
    y_t = torch.tensor(y, dtype=torch.float64)  # a copy: y may be a read-only view

    def pearson(a, b):
        a, b = a - a.mean(), b - b.mean()
        return (a * b).sum() / (a.norm() * b.norm() + 1e-12)

    def objective(w: np.ndarray):
        w_t = torch.as_tensor(w, dtype=torch.float64).requires_grad_(True)
        blend = P_t @ w_t
        tau = temperature * (blend.std() + 1e-12)
        soft_rank = torch.sigmoid((blend[:, None] - blend[anchor_rows][None, :]) / tau).mean(dim=1)
        value = -(metrics.SROCC_WEIGHT * pearson(soft_rank, y_rank) + metrics.PLCC_WEIGHT * pearson(blend, y_t))
        value.backward()
        return value.item(), w_t.grad.numpy().copy()

    start = np.full(m, 1.0 / m)
    result = minimize(objective, start, jac=True, method="SLSQP", bounds=[(0.0, cap)] * m,
                      constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(m)}],
                      options={"maxiter": 200, "ftol": 1e-9})
    weights = np.clip(result.x, 0.0, cap)
    return weights / weights.sum()
