"""The configuration files siqa ships: run configs (`default.toml`, `offline.toml`), the tabular presets
(`presets/<name>.toml`) and the VLM question set (`vlm_questions.toml`).

They are package data, so a non-editable install has them too; `config_file` is the one way code finds them.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def config_file(name: str) -> Path:
    """Path of a shipped configuration file, e.g. `config_file("presets/fast.toml")` (it may not exist)."""
    return Path(str(files(__name__).joinpath(*name.split("/"))))


def presets() -> list[str]:
    """Names of the shipped tabular presets (`presets/<name>.toml`)."""
    return sorted(p.stem for p in config_file("presets").glob("*.toml"))
