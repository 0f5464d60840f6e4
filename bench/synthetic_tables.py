"""Synthetic full-reference IQA tables shaped like KADID-10k: references x distortion types x levels.

Every row is (reference r, distortion type t, level l). A latent distortion strength d grows with the
level, scaled by a per-type severity and a per-reference sensitivity (some images hide noise, others
show it); the opinion score is a saturating function of d plus rater noise. Each metric column sees d
through its own per-type sensitivity (a metric over- or under-rates some distortion types, as real
metrics do), a monotone non-linear transform and measurement noise, so no single metric ranks every
type right and a learnt combination beats the best one, as on real tables.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

N_TYPES, N_LEVELS = 25, 5
TRANSFORMS = (np.log1p, np.sqrt, lambda v: v, lambda v: v ** 1.5, lambda v: 1 - np.exp(-v))


def kadid_like(n_rows: int, n_features: int = 9, seed: int = 0, min_refs: int = 6) -> pd.DataFrame:
    """A table with columns `ref`, `dist_type`, `dist_level`, `mos` (0..5, higher = better), `f0..f{n-1}`."""
    rng = np.random.default_rng(seed)
    per_ref = N_TYPES * N_LEVELS
    n_refs = max(min_refs, int(round(n_rows / per_ref)))
    counts = np.full(n_refs, n_rows // n_refs)
    counts[: n_rows - counts.sum()] += 1
    ref = np.repeat(np.arange(n_refs), counts)
    combo = np.concatenate([rng.choice(per_ref, size=c, replace=c > per_ref) for c in counts])
    dist_type, level = combo // N_LEVELS, combo % N_LEVELS + 1

    severity = rng.uniform(0.4, 1.6, N_TYPES)
    ref_sensitivity = rng.lognormal(0.0, 0.25, (n_refs, N_TYPES))
    d = severity[dist_type] * ref_sensitivity[ref, dist_type] * level / N_LEVELS
    mos = 5.0 / (1.0 + np.exp(2.2 * (d - 0.8))) + rng.normal(0, 0.25, n_rows) + rng.normal(0, 0.15, n_refs)[ref]

    columns = {}
    for f in range(n_features):
        bias = rng.lognormal(0.0, 0.45, N_TYPES)          # how this metric (mis)weights each type
        content = rng.normal(0, 0.1, n_refs)                # image-dependent offset of the metric
        transform = TRANSFORMS[f % len(TRANSFORMS)]
        raw = np.clip(bias[dist_type] * d + content[ref] + rng.normal(0, 0.08, n_rows), 0, None)
        columns[f"f{f}"] = transform(raw) * rng.uniform(0.5, 20.0)
    return pd.DataFrame({"ref": [f"ref{r:04d}" for r in ref], "dist_type": dist_type, "dist_level": level,
                         "mos": np.clip(mos, 0, 5), **columns})
