"""TOML configuration: which extractors run (and with what settings), and the tabular preset.

    [extractors.<name>]      one table per extractor; keys are its config, plus `enabled` (default true)
    [tabular]                `preset = "fast"|"default"|"best"` and overrides (see tabular/)
"""
from __future__ import annotations

import tomllib
from pathlib import Path

from configs import config_file

from .errors import SiqaError
from .extractors import EXTRACTORS, Extractor

DEFAULT_CONFIG = config_file("default.toml")


def read_toml(path: str | Path, what: str = "config file") -> dict:
    """Parse a TOML file; a missing or malformed file is a one-line `SiqaError` naming it."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise SiqaError(f"{path}: {what} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise SiqaError(f"{path}: invalid TOML ({exc})") from None


def load_config(path: str | Path | None = None) -> dict:
    path = Path(path) if path else DEFAULT_CONFIG
    config = read_toml(path)
    config["_path"] = str(path)
    return config


def build_extractors(config: dict, include_disabled: bool = False) -> list[Extractor]:
    """Instantiate every enabled extractor (every configured one with `include_disabled`), in the order the
    config lists them."""
    out = []
    for name, table in (config.get("extractors") or {}).items():
        table = dict(table)
        if not table.pop("enabled", True) and not include_disabled:
            continue
        if name not in EXTRACTORS:
            raise SiqaError(f"{config.get('_path', 'config')}: unknown extractor [extractors.{name}]; "
                            f"known: {', '.join(EXTRACTORS.names())}")
        try:
            out.append(EXTRACTORS.get(name)(**table))
        except (TypeError, ValueError) as exc:
            raise SiqaError(f"{config.get('_path', 'config')}: [extractors.{name}]: {exc}") from None
    return out


def disabled_names(config: dict) -> set[str]:
    return {name for name, table in (config.get("extractors") or {}).items() if not table.get("enabled", True)}
