"""Tabular AutoML over per-pair features: grouped folds, dense-block meta-features, the model pool
(`tabular.models`, registry `POOL`) and the nested out-of-fold pool tables (`tabular.nested`).
Imports nothing from the blend layer above it; run folders are written by `blend.run`."""
