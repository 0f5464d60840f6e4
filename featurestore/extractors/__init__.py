"""Extractors. Each module of this package registers its extractors with `@EXTRACTORS.register()`; the
registry imports every module on first use, so a new extractor is one new module, listed nowhere else."""
from __future__ import annotations

from .base import EXTRACTORS, Column, Extractor, ImageExtractor, PairExtractor, WeightSource, create

__all__ = ["EXTRACTORS", "Column", "Extractor", "ImageExtractor", "PairExtractor", "WeightSource", "create"]
