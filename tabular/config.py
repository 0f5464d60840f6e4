"""The `[tabular]` configuration: a preset from `configs/presets/<name>.toml` merged with run overrides.

A run config (e.g. `configs/default.toml`) may carry a `[tabular]` section: `preset = "fast" |
"default" | "best"` (default `default`) picks the base, and every other key overrides the preset's,
tables merging key by key (`[tabular.pool.catboost] seeds = [0]`, `[tabular.pool.svr] enabled = false`).
The keys and their meaning are documented in `configs/presets/default.toml`. The `[tabular.blend]`
table is merged here but owned and checked by the blend layer (`blend.config`).
"""
from __future__ import annotations

import copy
import logging
import tomllib

from configs import config_file
from featurestore.checks import mismatch
from featurestore.errors import SiqaError

PRESETS_DIR = config_file("presets")
KEYS = {"preset", "folds", "repeats", "seed", "label_bins", "threads", "jobs", "time_limit", "single_repeat_rows",
        "meta", "blend", "pool"}
SECTION_KEYS = {"meta": {"folds", "alphas"}}


def presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _check_kinds(base: dict, override: dict, where: str) -> None:
    """Each overriding value must be of the kind the preset's value has (one line naming the key)."""
    for key, value in override.items():
        if key not in base:
            continue
        if isinstance(base[key], dict) and isinstance(value, dict):
            _check_kinds(base[key], value, f"{where}.{key}")
            continue
        problem = mismatch(key, value, base[key])
        if problem:
            raise SiqaError(f"config: [{where}] {problem}")


def _renamed_members(pool: dict) -> dict:
    """The pool tables with former member names (rank3, rank5, rank6, best_feature) under their new names."""
    from .models import RENAMED_MEMBERS

    out = {}
    for member, table in pool.items():
        new = RENAMED_MEMBERS.get(member)
        if new is not None:
            logging.getLogger(__name__).warning(
                "config: [tabular.pool.%s] is a deprecated name; use [tabular.pool.%s]", member, new)
            if new in pool:
                raise SiqaError(f"config: [tabular.pool.{member}] and [tabular.pool.{new}] are the same member "
                                f"(the first is its deprecated name); keep one")
        out[new or member] = table
    return out


def resolve(config: dict | None) -> dict:
    """The effective tabular settings for a run config (the whole parsed TOML, or None)."""
    section = dict((config or {}).get("tabular", {}))
    unknown = set(section) - KEYS
    if unknown:
        raise SiqaError(f"config: unknown [tabular] key(s) {', '.join(sorted(unknown))}")
    if isinstance(section.get("pool"), dict):
        section["pool"] = _renamed_members(section["pool"])
    name = section.pop("preset", "default")
    path = PRESETS_DIR / f"{name}.toml"
    if not path.is_file():
        raise SiqaError(f"config: unknown tabular preset {name!r} (known: {', '.join(presets())})")
    with path.open("rb") as handle:
        base = tomllib.load(handle)["tabular"]
    _check_kinds(base, section, "tabular")
    resolved = _merge(base, section)
    for key, allowed in SECTION_KEYS.items():
        extra = set(resolved.get(key, {})) - allowed
        if extra:
            raise SiqaError(f"config: unknown [tabular.{key}] key(s) {', '.join(sorted(extra))}")
    resolved["preset"] = name
    return resolved
