"""Pairwise-rank MLP: an MLP trained to order pairs the way people do, not only to regress the label.

Loss on each mini-batch = lambda_fidelity * fidelity + lambda_plcc * (1 - PLCC) + lambda_mse * MSE:
- fidelity (Tsai et al. 2007): for every pair i<j, p_ij = Phi(yhat_i - yhat_j) (standard normal CDF),
  g_ij = (sign(y_i - y_j) + 1) / 2, loss_ij = 1 - sqrt(p_ij g_ij) - sqrt((1 - p_ij)(1 - g_ij));
  it targets SROCC, which only cares about order;
- 1 - PLCC targets the linear part of the challenge metric;
- MSE keeps the output on the label's scale, which neither correlation fixes.
"""
from __future__ import annotations

import numpy as np
import torch

from ..inference import step
from .base import POOL
from .torch_base import TorchPoolModel

_EPS = 1e-12  # keeps sqrt differentiable at 0 without moving the value measurably


def fidelity_loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean fidelity loss over all pairs i<j of a batch."""
    i, j = torch.triu_indices(len(pred), len(pred), offset=1)
    p = 0.5 * (1.0 + torch.erf((pred[i] - pred[j]) / np.sqrt(2.0)))
    g = (torch.sign(y[i] - y[j]) + 1.0) / 2.0
    loss = 1.0 - torch.sqrt((p * g).clamp_min(_EPS)) - torch.sqrt(((1.0 - p) * (1.0 - g)).clamp_min(_EPS))
    return loss.mean()


def plcc_loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 - Pearson correlation of a batch."""
    pc, yc = pred - pred.mean(), y - y.mean()
    return 1.0 - (pc * yc).sum() / (pc.norm() * yc.norm() + 1e-8)


@POOL.register("pairwise_mlp")
class PairwiseRankMLP(TorchPoolModel):
    def __init__(self, hidden: tuple[int, ...] = (128, 64), dropout: float = 0.1, epochs: int = 150,
                 max_steps: int = 800, batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 1e-3,
                 lambda_fidelity: float = 1.0, lambda_plcc: float = 1.0, lambda_mse: float = 0.1,
                 log_features: bool = False, random_state: int = 0):
        self.hidden = hidden
        self.dropout = dropout
        self.epochs = epochs
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lambda_fidelity = lambda_fidelity
        self.lambda_plcc = lambda_plcc
        self.lambda_mse = lambda_mse
        self.log_features = log_features
        self.random_state = random_state

    def _loss(self, output, y, rows):
        pred = output[:, 0]
        return (self.lambda_fidelity * fidelity_loss(pred, y) + self.lambda_plcc * plcc_loss(pred, y)
                + self.lambda_mse * torch.mean((pred - y) ** 2))

    def _score(self, output, X):
        return output[:, 0].double().numpy()

    def _export_score(self):
        return [step("column", index=0)]
