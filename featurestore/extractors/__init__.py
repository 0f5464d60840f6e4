"""Extractor registry. Each module below registers its extractors on import; list it in `_MODULES`."""
from __future__ import annotations

import importlib

from .base import REGISTRY, Column, Extractor, WeightSource, create, register

_MODULES = [
    "formula",
    "frequency",
    "colour",
    "imagenet",
    "clip",
    "dino",
    "pyiqa_deep",
    "vlm",
]


def load_all() -> dict[str, type[Extractor]]:
    for mod in _MODULES:
        importlib.import_module(f"{__name__}.{mod}")
    return REGISTRY


__all__ = ["REGISTRY", "Column", "Extractor", "WeightSource", "create", "register", "load_all"]
