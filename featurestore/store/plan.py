"""Which keys are missing per extractor, and which chunk of pairs computes each of them.

Each missing key goes to the first chunk holding it, in the order of the pair table, so an image shared
by many pairs is computed once, and every backend batches (and names shards) alike."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..extractors.base import Extractor
from .layout import Catalog
from .summary import ExtractSummary


@dataclass
class Chunk:
    rows: pd.DataFrame            # the chunk's pairs (rows of the pair table)
    keys: dict[str, list[str]]    # extractor name -> keys (sha256 or pair_id) this chunk computes, in order


@dataclass
class Plan:
    extractors: list[Extractor]
    chunks: list[Chunk]

    def busy(self) -> list[Extractor]:
        """The extractors with anything to compute."""
        return [ex for ex in self.extractors if any(ex.name in c.keys for c in self.chunks)]


def missing_keys(catalog: Catalog, df: pd.DataFrame, extractors: list[Extractor],
                 summary: ExtractSummary) -> dict[str, set[str]]:
    """Per extractor: the keys of `df` its folder lacks (what it has is counted as cached)."""
    todo = {}
    for ex in extractors:
        wanted = set(ex.keys_in(df))
        have = catalog.keys(catalog.folder(ex, ex.level), ex.key)
        todo[ex.name] = wanted - have
        summary.cached[f"{ex.name}/{ex.level}"] += len(wanted & have)
    return todo


def plan(catalog: Catalog, df: pd.DataFrame, extractors: list[Extractor], summary: ExtractSummary,
         chunk_pairs: int) -> Plan:
    """The pairs that miss anything, cut into chunks of `chunk_pairs`, each with the keys it computes."""
    todo = missing_keys(catalog, df, extractors, summary)
    need_mask = np.zeros(len(df), dtype=bool)
    for ex in extractors:
        need_mask |= ex.needs(df, todo[ex.name])
    need = df[need_mask]
    left = {name: set(keys) for name, keys in todo.items()}
    chunks = []
    for i in range(0, len(need), chunk_pairs):
        rows = need.iloc[i:i + chunk_pairs]
        keys = {}
        for ex in extractors:
            mine = [k for k in ex.keys_in(rows) if k in left[ex.name]]
            left[ex.name].difference_update(mine)
            if mine:
                keys[ex.name] = mine
        if keys:  # else every key of these pairs went to earlier chunks (images they share with them)
            chunks.append(Chunk(rows, keys))
    return Plan(list(extractors), chunks)
