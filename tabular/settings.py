"""The `[tabular]` settings: a preset from `configs/presets/<name>.toml`, the run config's overrides merged
key by key, validated into one typed `TabularSettings` before any work.

A run config selects a preset with `[tabular] preset = "fast" | "default" | "best" | ...` and overrides any
key of it in its own `[tabular]` tables (`[tabular.pool.catboost] seeds = [0]`, `[tabular.pool.svr]
enabled = false`). `[tabular.pool.<member>]` tables are validated against the member's model: its
constructor signature is its schema (`PoolModel.Settings`). `[tabular.blend]` belongs to the blend
layer, which declares its schema there and completes this one (`blend.settings`).
"""
from __future__ import annotations

import copy
import logging
import tomllib
from typing import Any

from pydantic import Field, SerializeAsAny, field_validator

from configs import config_file, presets
from featurestore.errors import SiqaError
from featurestore.settings import Strict, registry_name, validate

from .models import POOL, RENAMED_MEMBERS, seeded_name

PRESETS_DIR = config_file("presets")
#: the keys of a pool member's table that are about the member, not its model's constructor
MEMBER_KEYS = ("enabled", "model", "seeds", "min_rows")


class MetaSettings(Strict):
    """`[tabular.meta]`: dense block -> GroupedRidgeCV -> out-of-fold meta-feature."""

    folds: int = Field(5, ge=2, description="grouped folds of the out-of-fold Ridge meta-features")
    alphas: list[float] = Field([1e-3, 1e-2, 0.1, 1.0, 10.0], min_length=1,
                                description="Ridge penalties the grouped inner CV chooses from")

    @field_validator("alphas")
    @classmethod
    def _positive(cls, alphas: list[float]) -> list[float]:
        if any(a <= 0 for a in alphas):
            raise ValueError("alphas must all be > 0")
        return alphas


class PoolMember(Strict):
    """`[tabular.pool.<member>]`: the member keys plus its model's constructor parameters (`params`)."""

    enabled: bool = Field(True, description="false drops the member")
    model: str = Field(description="registered pool model (default: the member's name)")
    seeds: list[int] | None = Field(None, min_length=1, description="one member per seed, named <member>_s<seed>")
    min_rows: int = Field(0, ge=0, description="kept out of runs on tables with fewer labelled rows")
    params: SerializeAsAny[Strict] = Field(Strict(), description="the model's constructor parameters")

    @classmethod
    def from_table(cls, member: str, table: dict, source: str) -> "PoolMember":
        """The member from its TOML table: member keys validated here, the rest against its model's schema."""
        where = f"tabular.pool.{member}"
        own = {k: v for k, v in table.items() if k in MEMBER_KEYS}
        own.setdefault("model", member)
        if isinstance(own["model"], str):
            try:
                own["model"] = POOL.canonical(registry_name(POOL.canonical(own["model"]), POOL.names(), "pool model"))
            except ValueError as problem:
                raise SiqaError(f"{source}: [{where}] model = {own['model']!r}: {problem}") from None
        parameters = {k: v for k, v in table.items() if k not in MEMBER_KEYS}
        if isinstance(own["model"], str):
            model = POOL.get(own["model"])
            if own.get("seeds") is not None and not model.takes_seeds():
                raise SiqaError(f"{source}: [{where}] seeds: model {own['model']} takes no seeds")
            own["params"] = validate(model.Settings, parameters, source, where)
        return validate(cls, own, source, where)

    def estimators(self, member: str, threads: int, seed: int, work_dir: str | None) -> list[tuple[str, Any]]:
        """(name, unfitted estimator) for this member: one per seed, or one seeded with the run's seed."""
        cls = POOL.get(self.model)
        params = {**self.params.model_dump(), **cls.runtime_parameters(threads, work_dir)}
        if self.seeds is None:
            return [(member, cls(**params, **({"random_state": seed} if cls.takes_seeds() else {})))]
        return [(seeded_name(member, s), cls(**params, random_state=s)) for s in self.seeds]

    def names(self, member: str) -> list[str]:
        return [member] if self.seeds is None else [seeded_name(member, s) for s in self.seeds]


class TabularSettings(Strict):
    """`[tabular]`: the nested cross-validation, the pool and (in the blend layer's subclass) the blend."""

    preset: str = Field("default", description="the preset these settings start from (configs/presets/<name>.toml)")
    folds: int = Field(5, ge=3, description="outer grouped folds (nested CV needs 3: the blender's inner folds are "
                                            "the other outer folds)")
    repeats: int = Field(3, ge=1, description="fold assignments with seeds seed, seed+1, ...; CV Final is mean +- std "
                                              "over them")
    seed: int = Field(0, description="seed of the first fold assignment and of every seeded model")
    label_bins: int = Field(5, ge=1, description="stratify folds on this many label quantile bins")
    threads: int = Field(1, ge=1, description="threads per model")
    jobs: int = Field(2, ge=1, description="pool fits run in this many processes at once (results do not depend on it)")
    time_limit: float | None = Field(None, gt=0, description="seconds: plan repeats and members to finish in time "
                                                             "(siqa oof --time-limit); unset = no limit")
    single_repeat_rows: int | None = Field(None, ge=1, description="tables with more labelled rows run one repeat; "
                                                                   "unset = never")
    meta: MetaSettings = Field(MetaSettings(), description="[tabular.meta]")
    pool: dict[str, PoolMember] = Field(min_length=1, description="[tabular.pool.<member>] tables")
    blend: SerializeAsAny[Strict] = Field(Strict(), description="[tabular.blend] (schema: blend.settings)")

    @field_validator("pool")
    @classmethod
    def _some_enabled(cls, pool: dict[str, PoolMember]) -> dict[str, PoolMember]:
        if not any(m.enabled for m in pool.values()):
            raise ValueError("the tabular pool has no enabled model")
        return pool

    def members(self) -> dict[str, PoolMember]:
        return {name: member for name, member in self.pool.items() if member.enabled}

    def members_below(self, n_rows: int) -> dict[str, int]:
        """Member name (with its `_s<seed>` suffix) -> `min_rows`, for enabled members configured for tables of
        more than `n_rows` labelled rows."""
        return {name: member.min_rows for key, member in self.members().items() if member.min_rows > n_rows
                for name in member.names(key)}


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _renamed_members(pool: dict, source: str) -> dict:
    """The pool tables with former member names (rank3, rank5, rank6, best_feature) under their new names."""
    out = {}
    for member, table in pool.items():
        new = RENAMED_MEMBERS.get(member)
        if new is not None:
            logging.getLogger(__name__).warning(
                "%s: [tabular.pool.%s] is a deprecated name; use [tabular.pool.%s]", source, member, new)
            if new in pool:
                raise SiqaError(f"{source}: [tabular.pool.{member}] and [tabular.pool.{new}] are the same member "
                                f"(the first is its deprecated name); keep one")
        out[new or member] = table
    return out


def merged_section(section: dict, source: str) -> dict:
    """The run config's `[tabular]` tables merged over its preset's, pool members renamed: still raw TOML."""
    section = dict(section)
    name = section.get("preset", "default")
    if not isinstance(name, str) or name not in presets():
        raise SiqaError(f"{source}: [tabular] preset = {name!r}: unknown preset (known: {', '.join(presets())})")
    with (PRESETS_DIR / f"{name}.toml").open("rb") as handle:
        base = tomllib.load(handle)["tabular"]
    for table in (base, section):
        if isinstance(table.get("pool"), dict):
            table["pool"] = _renamed_members(table["pool"], source)
    return {**_merge(base, section), "preset": name}


def validate_tabular(model: type[TabularSettings], section: dict, source: str) -> TabularSettings:
    """`model` (TabularSettings or the blend layer's subclass) from a run config's `[tabular]` section."""
    merged = merged_section(section, source)
    pool = merged.get("pool")
    if isinstance(pool, dict):
        merged["pool"] = {member: PoolMember.from_table(member, table, source) if isinstance(table, dict) else table
                          for member, table in pool.items()}
    return validate(model, merged, source, "tabular")
