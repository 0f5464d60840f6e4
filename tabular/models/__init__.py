"""The model pool: the registry `POOL` of scikit-learn shaped regressors and `build_pool` from configuration.

Pool configuration (`[tabular.pool.<member>]` tables): the member name is also the registry name,
unless `model = "<registry name>"` says otherwise (so one model can appear twice with different
settings, as the `log_ridge` member does); `enabled = false` drops it; `seeds = [..]` makes one member per
seed, named `<member>_s<seed>`; `min_rows = N` keeps it out of runs on tables of fewer labelled rows
(`members_below`: a member that only pays on big tables); every other key is a constructor parameter.
`threads` and `work_dir` are filled in for models that take them.
"""
from __future__ import annotations

import inspect

from featurestore.errors import SiqaError

from .base import META_PREFIX, POOL, PoolModel

__all__ = ["META_PREFIX", "POOL", "PoolModel", "RENAMED_MEMBERS", "build_pool", "members_below"]

#: former pool names (after the challenge ranks their recipes came from) -> names that say what the model is;
#: configs may still use the old ones (`tabular.config.resolve` renames them, with a deprecation warning)
RENAMED_MODELS = {"rank3": "mixed_feature_catboost", "rank5": "ordinal_class_head", "best_feature": "best_single_feature"}
RENAMED_MEMBERS = {**RENAMED_MODELS, "rank6": "log_ridge"}  # rank6 was a member (a configured ridge), not a model
for _old, _new in RENAMED_MODELS.items():
    POOL.alias(_old, _new)


def build_pool(pool_config: dict, threads: int, seed: int, work_dir: str | None = None) -> list[tuple[str, PoolModel]]:
    """(member name, unfitted estimator) for every enabled member of the pool configuration."""
    members = []
    for member, settings in pool_config.items():
        params = dict(settings)
        if not params.pop("enabled", True):
            continue
        min_rows(member, params.pop("min_rows", 0))
        model = POOL.canonical(params.pop("model", member))
        if model not in POOL:
            raise SiqaError(f"config: unknown tabular model {model!r} for pool member {member!r} "
                            f"(known: {', '.join(POOL.names())})")
        cls = POOL.get(model)
        accepted = inspect.signature(cls.__init__).parameters
        if "threads" in accepted:
            params["threads"] = threads
        if "work_dir" in accepted:
            params["work_dir"] = work_dir
        unknown = set(params) - set(accepted) - {"seeds"}
        if unknown:
            raise SiqaError(f"config: tabular model {member}: unknown setting(s) {', '.join(sorted(unknown))}")
        seeds = params.pop("seeds", None)
        if seeds is not None and "random_state" not in accepted:
            raise SiqaError(f"config: tabular model {member}: takes no seeds")
        if seeds is None:
            if "random_state" in accepted:
                params["random_state"] = seed
            members.append((member, cls(**params)))
        else:
            members.extend((seeded_name(member, s), cls(**params, random_state=int(s))) for s in seeds)
    if not members:
        raise SiqaError("config: the tabular pool has no enabled model")
    return members


def seeded_name(member: str, seed) -> str:
    """The name of a member's `seeds = [..]` copy with `seed`."""
    return f"{member}_s{seed}"


def min_rows(member: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SiqaError(f"config: tabular model {member}: min_rows must be a whole number >= 0, not {value!r}")
    return value


def members_below(pool_config: dict, n_rows: int) -> dict[str, int]:
    """Member name (with its `_s<seed>` suffix) -> `min_rows`, for enabled members whose `min_rows`
    exceeds `n_rows`."""
    out = {}
    for member, settings in pool_config.items():
        if settings.get("enabled", True) and (need := min_rows(member, settings.get("min_rows", 0))) > n_rows:
            seeds = settings.get("seeds")
            out.update(dict.fromkeys([member] if seeds is None else [seeded_name(member, s) for s in seeds], need))
    return out
