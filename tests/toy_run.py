"""A tiny end-to-end run for the tests of what users look at (report, predict, SQL shell).

The shared toy extractors (tests/toy_extractors.py, registered while a test module that imports the
autouse fixture `toy_extractors` runs), a SeIQA-layout folder of real photos with graded noise (the label falls
with the noise level), and `build_run`: features into a store, then an out-of-fold run with the `fast`
preset cut down to its two quickest models.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import photo
from featurestore.extractors import EXTRACTORS
from toy_extractors import TOYS

REFERENCES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins")


@pytest.fixture(scope="module", autouse=True)
def toy_extractors():
    """Registers the toy extractors for the test module that imports this fixture, and only while it runs."""
    with EXTRACTORS.registered(*TOYS):
        yield


CONFIG = """
[extractors.toymean]
[extractors.toymse]

[tabular]
preset = "fast"
[tabular.pool.pairwise_mlp]
enabled = false
[tabular.pool.log_ridge]
enabled = false
[tabular.pool.lightgbm]
enabled = false
"""


def noisy(ref: np.ndarray, level: int, rng) -> np.ndarray:
    return np.clip(ref + rng.normal(0, 12 * level, ref.shape), 0, 255).astype(np.uint8)


def make_dataset(root: Path, levels: int = 4, seed: int = 0) -> Path:
    """Train: every reference x `levels` noise levels, score 5 - level (+ a little jitter); Test: one pair per
    reference. Returns the folder."""
    import openpyxl

    rng = np.random.default_rng(seed)
    rows = []
    for split, n_levels in (("Train", levels), ("Test", 1)):
        (root / split / "Ref").mkdir(parents=True)
        (root / split / "Dist").mkdir(parents=True)
        for i, ref_name in enumerate(REFERENCES):
            ref = photo(ref_name)
            for level in range(n_levels):
                name = f"{ref_name}_{level}.png"
                Image.fromarray(ref).save(root / split / "Ref" / name)
                Image.fromarray(noisy(ref, level + 1, rng)).save(root / split / "Dist" / name)
                if split == "Train":
                    rows.append((name, int(np.clip(5 - level - (i % 2), 0, 5))))
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["name", "score"])
    for row in rows:
        ws.append(list(row))
    wb.save(root / "Train" / "Train_scores.xlsx")
    return root


def build_run(tmp: Path) -> dict[str, Path]:
    """Dataset, store (features of every split) and run folder; returns their paths."""
    from blend.run import run_oof
    from blend.settings import load_settings
    from featurestore.config import build_extractors
    from featurestore.datasets import load_pairs
    from featurestore.store import FeatureStore
    from tabular.data import TabularData

    data = make_dataset(tmp / "data")
    config = tmp / "toy.toml"
    config.write_text(CONFIG)
    store, run = tmp / "store", tmp / "run"
    FeatureStore(store).extract(load_pairs(data), build_extractors(load_settings(config).extractors), progress=False)
    run_oof(TabularData.from_store(store), load_settings(config), run, progress=False)
    return {"data": data, "config": config, "store": store, "run": run}
