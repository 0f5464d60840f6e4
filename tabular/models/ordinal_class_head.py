"""`ordinal_class_head`: a six-class classifier trained with cross-entropy + MSE; score = expected class value.

Origin: the rank-5 solution's head in the challenge this pool was modelled on (its pool name was `rank5`,
still accepted in configs as a deprecated alias).

Classes are the distinct label values when there are at most `n_classes` of them (SeIQA train labels
are the integers 0..5), otherwise quantile bins of the label whose value is the bin mean. The MSE term
on the expected value keeps the probabilities calibrated to the label's scale, not only to the mode.
Optional semantic gate: when a configured cosine feature (e.g. CLIP reference/degraded similarity)
falls below `gate_threshold`, the class distribution is pushed toward class 0 (meaning lost), softly
over `gate_softness` so the score stays continuous.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from featurestore.errors import SiqaError

from ..inference import step
from .base import POOL
from .torch_base import TorchPoolModel


@POOL.register("ordinal_class_head")
class OrdinalClassHead(TorchPoolModel):
    def __init__(self, n_classes: int = 6, hidden: tuple[int, ...] = (128,), dropout: float = 0.1,
                 epochs: int = 150, max_steps: int = 800, batch_size: int = 64, lr: float = 1e-3,
                 weight_decay: float = 1e-3, lambda_mse: float = 1.0, gate_feature: str | None = None,
                 gate_threshold: float = 0.0, gate_softness: float = 0.02, log_features: bool = False,
                 random_state: int = 0):
        self.n_classes = n_classes
        self.hidden = hidden
        self.dropout = dropout
        self.epochs = epochs
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lambda_mse = lambda_mse
        self.gate_feature = gate_feature
        self.gate_threshold = gate_threshold
        self.gate_softness = gate_softness
        self.log_features = log_features
        self.random_state = random_state

    def _prepare(self, X, y):
        if self.gate_feature is not None:
            columns = list(X.columns) if isinstance(X, pd.DataFrame) else []
            if self.gate_feature not in columns:
                raise SiqaError(f"config: tabular model ordinal_class_head: no gate feature column {self.gate_feature!r}")
            self.gate_index_ = columns.index(self.gate_feature)
        values = np.unique(y)
        if values.size <= self.n_classes:
            self.class_values_ = values
            classes = np.searchsorted(values, y)
        else:
            edges = np.unique(np.quantile(y, np.linspace(0, 1, self.n_classes + 1)[1:-1]))
            classes = np.searchsorted(edges, y, side="right")
            self.class_values_ = np.array([y[classes == c].mean() for c in range(edges.size + 1)])
        return len(self.class_values_), torch.as_tensor(classes, dtype=torch.long)

    def _loss(self, logits, y, classes):
        values = torch.as_tensor(self.class_values_, dtype=torch.float32)
        expected = torch.softmax(logits, dim=1) @ values
        return F.cross_entropy(logits, classes) + self.lambda_mse * torch.mean((expected - y) ** 2)

    def _score(self, logits, X):
        probs = torch.softmax(logits, dim=1).double().numpy()
        if self.gate_feature is not None:
            x = np.nan_to_num(X[:, self.gate_index_], nan=np.inf)
            gate = 1.0 / (1.0 + np.exp(-np.clip((self.gate_threshold - x) / self.gate_softness, -50, 50)))
            probs = (1.0 - gate)[:, None] * probs
            probs[:, 0] += gate
        return probs @ self.class_values_

    def _export_score(self):
        gate = ({"gate_column": self.gate_index_, "gate_threshold": self.gate_threshold,
                 "gate_softness": self.gate_softness} if self.gate_feature is not None else {})
        return [step("softmax_expectation", values=np.asarray(self.class_values_, dtype=np.float64), **gate)]
