"""The `[extractors]` section of a config file: which extractors run, and with what settings.

    [extractors.<name>]      one table per extractor: `enabled` (default true) plus the keys of the
                             extractor's own `Settings` (declared next to its class)

`extractor_settings` validates the section once (unknown extractor names with the closest known one, and
every key by the extractor's schema); `build_extractors` makes the extractors from what it returns. The
whole config file is loaded by `blend.settings.load_settings`.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from configs import config_file

from .errors import SiqaError
from .extractors import EXTRACTORS, Extractor
from .extractors.base import ExtractorSettings
from .settings import did_you_mean, validate

DEFAULT_CONFIG = config_file("default.toml")


def read_toml(path: str | Path, what: str = "config file") -> dict:
    """Parse a TOML file; a missing, unreadable or malformed file is a one-line `SiqaError` naming it."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise SiqaError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise SiqaError(f"{path}: is a folder, not a {what}") from None
    except UnicodeDecodeError as exc:
        raise SiqaError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); TOML files are UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise SiqaError(f"{path}: invalid TOML ({exc})") from None


@dataclass(frozen=True)
class ExtractorEntry:
    """One `[extractors.<name>]` table, validated."""

    enabled: bool
    settings: ExtractorSettings

    def table(self) -> dict:
        return {"enabled": self.enabled, **self.settings.model_dump()}


def extractor_settings(section: dict, source: str) -> dict[str, ExtractorEntry]:
    """The `[extractors]` section validated, in the order the config lists the extractors."""
    known = EXTRACTORS.names()
    entries = {}
    for name, table in section.items():
        where = f"extractors.{name}"
        if name not in EXTRACTORS:
            raise SiqaError(f"{source}: [{where}]: unknown extractor (known: {', '.join(known)})"
                            f"{did_you_mean(name, known)}")
        if not isinstance(table, dict):
            raise SiqaError(f"{source}: {where} = {table!r}: must be a table ([{where}] ...)")
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            raise SiqaError(f"{source}: [{where}] enabled = {enabled!r}: must be true or false")
        settings = validate(EXTRACTORS.get(name).Settings, {k: v for k, v in table.items() if k != "enabled"},
                            source, where)
        entries[name] = ExtractorEntry(enabled, settings)
    return entries


def extractor_tables(entries: dict[str, ExtractorEntry]) -> dict[str, dict]:
    """The entries as TOML-shaped tables (every setting, defaults filled in)."""
    return {name: entry.table() for name, entry in entries.items()}


def build_extractors(entries: dict[str, ExtractorEntry], include_disabled: bool = False) -> list[Extractor]:
    """Every enabled extractor (every configured one with `include_disabled`), in the order the config lists them."""
    return [EXTRACTORS.get(name)(entry.settings) for name, entry in entries.items() if entry.enabled or include_disabled]
