"""Shared training loop for the small torch models of the pool (pairwise-rank MLP, ordinal class head).

Inputs are imputed and z-scored (after appending log-features when `log_features` is set, see
`linear.LogAugment`), the target z-scored; training is mini-batch AdamW for `epochs` epochs, but for at
most `max_steps` optimiser steps: on a few hundred rows that is every epoch, on tens of thousands of
rows each epoch holds hundreds of steps and a few epochs already converge, so training time stops
growing with the table. The run is
seeded inside `torch.random.fork_rng`, so a seed gives the same network every time without touching
the caller's global random state. Fit and predict run on one torch thread (`one_thread`) and restore
the caller's thread setting afterwards. Subclasses define the network's output width, the loss and
how an output becomes a score.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from ..inference import step
from .base import FiniteScaler, PoolModel
from .linear import LogAugment


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one torch intra-op thread, restoring the caller's setting afterwards.

    These networks are too small for intra-op parallelism, and on a busy machine a second OpenMP
    thread spin-waiting makes each step several times slower; one thread also makes fit and predict
    compute the same way whatever the caller's setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def mlp(n_in: int, hidden: tuple[int, ...], n_out: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, width), nn.GELU(), nn.Dropout(dropout)]
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class TorchPoolModel(PoolModel):
    def _prepare(self, X, y: np.ndarray) -> tuple[int, torch.Tensor | None]:
        """Learn input/target-dependent state before training.

        Returns the network's output width and an optional per-row tensor handed to `_loss` with
        each batch (e.g. class indices)."""
        return 1, None

    def _loss(self, output: torch.Tensor, y: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def _score(self, output: torch.Tensor, X: np.ndarray) -> np.ndarray:
        """Standardised score from network output; X is the raw (unscaled) input."""
        raise NotImplementedError

    def _export_score(self) -> list[dict]:
        """`_score` as `tabular.inference` steps from the network's float32 output."""
        raise NotImplementedError

    def _fit(self, X, y, groups):
        y = np.asarray(y, dtype=np.float64)
        self.y_mean_, self.y_scale_ = float(y.mean()), float(y.std()) or 1.0
        z = (y - self.y_mean_) / self.y_scale_
        n_outputs, per_row = self._prepare(X, z)
        X = np.asarray(X, dtype=np.float64)
        if self.log_features:
            self.log_ = LogAugment().fit(X)
        self.scaler_ = FiniteScaler().fit(self._augment(X))
        inputs = torch.as_tensor(self.scaler_.transform(self._augment(X)), dtype=torch.float32)
        targets = torch.as_tensor(z, dtype=torch.float32)
        n = len(z)
        batch = min(self.batch_size, n)
        epochs = max(1, min(self.epochs, self.max_steps // max(n // batch, 1)))
        with one_thread(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            self.net_ = mlp(inputs.shape[1], tuple(self.hidden), n_outputs, self.dropout)
            optimiser = torch.optim.AdamW(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            generator = torch.Generator().manual_seed(self.random_state)
            self.net_.train()
            for _ in range(epochs):
                order = torch.randperm(n, generator=generator)
                # drop the ragged tail: a batch of one has no pairs and no correlation
                for start in range(0, n - batch + 1, batch):
                    index = order[start:start + batch]
                    optimiser.zero_grad()
                    rows = None if per_row is None else per_row[index]
                    self._loss(self.net_(inputs[index]), targets[index], rows).backward()
                    optimiser.step()
        self.net_.eval()

    def _augment(self, X: np.ndarray) -> np.ndarray:
        return self.log_.transform(X) if self.log_features else X

    def _predict(self, X):
        X = np.asarray(X, dtype=np.float64)
        with one_thread(), torch.no_grad():
            # in float64: float32 kernels split a batch by its size, so a row's score would move in its last
            # digits with the rows it is predicted beside (scikit-learn's check_methods_subset_invariance
            # fails on some CPUs); the trained float32 weights are used as they are
            net = copy.deepcopy(self.net_).double()
            output = net(torch.as_tensor(self.scaler_.transform(self._augment(X)), dtype=torch.float64))
        return self._score(output, X) * self.y_scale_ + self.y_mean_

    def export(self):
        """The network as float32 matmuls with exact GELU (`mlp`), then `_score`; torch's float32 kernels sum
        in another order than numpy's, so the two agree to float32 rounding, not bit for bit."""
        linear = [layer for layer in self.net_ if isinstance(layer, nn.Linear)]
        if any(not isinstance(layer, (nn.Linear, nn.GELU, nn.Dropout)) for layer in self.net_):
            raise ValueError(f"{self.name} export: only Linear, GELU and Dropout layers are supported")
        return [*([self.log_.export()] if self.log_features else []), self.scaler_.export(),
                step("mlp", weights=[layer.weight.detach().numpy().copy() for layer in linear],
                     biases=[layer.bias.detach().numpy().copy() for layer in linear]),
                *self._export_score(), step("affine", scale=self.y_scale_, offset=self.y_mean_)]
