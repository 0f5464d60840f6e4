"""The model pool: the registry `POOL` of scikit-learn shaped regressors.

Pool configuration (`[tabular.pool.<member>]` tables, `tabular.settings.PoolMember`): the member name is also
the registry name, unless `model = "<registry name>"` says otherwise (so one model can appear twice with
different settings, as the `log_ridge` member does); `enabled = false` drops it; `seeds = [..]` makes one
member per seed, named `<member>_s<seed>`; `min_rows = N` keeps it out of runs on tables of fewer labelled
rows (a member that only pays on big tables); every other key is a constructor parameter, checked against
the constructor's annotated signature. `threads`, `work_dir` and `random_state` are filled in by the run.
"""
from __future__ import annotations

from .base import META_PREFIX, POOL, PoolModel

__all__ = ["META_PREFIX", "POOL", "PoolModel", "RENAMED_MEMBERS", "seeded_name"]

#: former pool names (after the challenge ranks their recipes came from) -> names that say what the model is;
#: configs may still use the old ones (`tabular.settings` renames them, with a deprecation warning)
RENAMED_MODELS = {"rank3": "mixed_feature_catboost", "rank5": "ordinal_class_head", "best_feature": "best_single_feature"}
RENAMED_MEMBERS = {**RENAMED_MODELS, "rank6": "log_ridge"}  # rank6 was a member (a configured ridge), not a model
for _old, _new in RENAMED_MODELS.items():
    POOL.alias(_old, _new)


def seeded_name(member: str, seed) -> str:
    """The name of a member's `seeds = [..]` copy with `seed`."""
    return f"{member}_s{seed}"
