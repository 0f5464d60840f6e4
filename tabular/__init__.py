"""Tabular AutoML over per-pair features: grouped folds, dense-block meta-features, a model pool,
nested out-of-fold evaluation and the fitted pipeline a submission uses. Entry points: `tabular.run`."""
