"""The extractor contract, for every registered extractor, and a plain extractor through store and SQL.

Adding an extractor is one module in featurestore/extractors/ with one `@EXTRACTORS.register()` line;
this module then covers it without being edited."""
from __future__ import annotations

import re
import types
import typing

import numpy as np
import pytest
from toy_extractors import ToyMean, ToyMse

from featurestore.config import build_extractors, extractor_settings
from featurestore.datasets import load_pairs
from featurestore.extractors import EXTRACTORS, Column, ImageExtractor, PairExtractor, create
from featurestore.io import DecodedPair, decode, match_size
from featurestore.sql import connect
from featurestore.store import FeatureStore
from featurestore.weights import MissingWeights

#: store folders of the extractors under their default configuration (configs/default.toml sets some
#: keys to their defaults only). These names are the store's compatibility: a change here recomputes
#: every stored feature of that extractor, so it must come with a version bump, never by accident.
PINNED_FOLDERS = {
    "formula": "formula-v3-e7d57331",  # v2: cw_ssim's luma from float64 RGB, as pyiqa's; v3: fsim, vif summed in another order
    "frequency": "frequency-v1-44136fa3",
    "colour": "colour-v1-44136fa3",
    "imagenet": "imagenet-v1-8314ce36",
    "clip": "clip-v2-9b70716a",   # v2: exact open_clip crop, crop default, letterboxed ViT-L/14-336 twin
    "dino": "dino-v1-30a98ad9",
    "blip": "blip-v1-2f3b57db",
    "lpips": "lpips-v1-6f8c5fd2",
    "dists": "dists-v1-63926ef0",
    "topiq_fr": "topiq_fr-v1-0ef01533",
    "vlm": "vlm-v1-63902e09",  # min_answer_mass 0.05 by default (was 0): answers below it are NaN now
    "text": "text-v1-3a95d0cd",
    "regions": "regions-v1-f89f2b67",
    "faces": "faces-v1-862c72d7",
}


def allowed_values(annotation) -> list:
    """Sample values a setting's type allows: a Literal's values, also inside a union (`int | Literal["auto"]`),
    and 2 for a whole number member of a union."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    members = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    out = []
    for member in members:
        base = typing.get_args(member)[0] if typing.get_origin(member) is typing.Annotated else member
        out += allowed_values(base) if typing.get_origin(base) is typing.Literal else [2] if base is int else []
    return out


@pytest.mark.parametrize("name", EXTRACTORS.names())
def test_every_extractor_keeps_the_contract(name):
    cls = EXTRACTORS.get(name)
    assert cls.name == name
    assert issubclass(cls, ImageExtractor) != issubclass(cls, PairExtractor), "exactly one of the two kinds"
    assert isinstance(cls.version, int) and cls.version >= 1
    assert set(cls.runtime_keys) <= set(cls.default_config), "runtime keys must be config keys"
    ex = create(name)
    assert re.fullmatch(rf"{re.escape(name)}-v{cls.version}-[0-9a-f]{{8}}", ex.folder)
    assert create(name).folder == ex.folder, "the folder name is a function of the config"
    with pytest.raises(ValueError, match=rf"extractor {name}: no_such_key: unknown key \((allowed|it takes no keys)"):
        create(name, no_such_key=1)
    for key in cls.runtime_keys:  # where or how fast it runs never moves its features to another folder
        default = cls.default_config[key]
        choices = [c for c in allowed_values(cls.Settings.model_fields[key].annotation) if c != default]
        other = (choices[0] if choices else not default if isinstance(default, bool)
                 else default + 1 if isinstance(default, int) else f"{default}x")
        assert cls(**{key: other}).folder == ex.folder, key
    try:
        pair_columns, image_columns = ex.pair_columns(), ex.image_columns()
    except MissingWeights:  # its schema depends on the model (VLM hidden size): needs the weights to say
        return
    for columns in (pair_columns, image_columns):
        assert all(isinstance(c, Column) and c.dim >= 0 for c in columns)
        assert len({c.name for c in columns}) == len(columns)
    assert pair_columns
    assert bool(image_columns) == issubclass(cls, ImageExtractor)


def test_folder_names_of_the_shipped_extractors_are_pinned():
    assert set(PINNED_FOLDERS) == set(EXTRACTORS.names())
    for name, folder in PINNED_FOLDERS.items():
        assert create(name).folder == folder, name


def test_config_keys_that_change_outputs_change_the_folder():
    assert create("formula", metrics=["psnr"]).folder != create("formula").folder
    assert create("formula", device="cuda").folder == create("formula").folder  # a runtime key
    assert create("imagenet", size=256).folder != create("imagenet").folder
    assert create("imagenet", batch_size=2, device="cpu").folder == create("imagenet").folder


def test_the_toy_registry_entries_do_not_leak():
    with EXTRACTORS.registered(ToyMean, ToyMse):
        assert {"toymean", "toymse"} <= set(EXTRACTORS.names())
    assert not {"toymean", "toymse"} & set(EXTRACTORS.names())


@pytest.mark.parametrize("cls", [ToyMean, ToyMse], ids=lambda c: c.name)
def test_a_plain_extractor_through_config_store_and_sql(cls, tmp_path, seiqa_dir):
    """Registered, named in a config by its bare table (settings default), extracted, read back by SQL:
    the stored values are what the extractor computes, for every pair."""
    table = load_pairs(seiqa_dir)
    with EXTRACTORS.registered(cls):
        (extractor,) = build_extractors(extractor_settings({cls.name: {}}, "config"))
        assert extractor.config == cls.default_config
        summary = FeatureStore(tmp_path / "store").extract(table, [extractor], progress=False)
    assert not summary.failures and summary.computed[f"{cls.name}/pair"] == len(table)
    con = connect(tmp_path / "store")
    got = con.execute("SELECT * FROM features ORDER BY pair_id").df().set_index("pair_id")
    rows = table.df.sort_values("pair_id")
    pairs = []
    for r in rows.itertuples():
        ref = decode(r.ref_path, r.ref_sha256)
        dist, resized = match_size(ref, decode(r.dist_path, r.dist_sha256))
        pairs.append(DecodedPair(r.pair_id, ref, dist, resized))
    if isinstance(extractor, ImageExtractor):
        ref_cols = extractor.compute_images([p.ref for p in pairs])
        dist_cols = extractor.compute_images([decode(r.dist_path, r.dist_sha256) for r in rows.itertuples()])
        expected = extractor.derive_pairs(ref_cols, dist_cols)
        image_view = con.execute(f"SELECT count(*) FROM {cls.name}_image").fetchone()[0]
        assert image_view == len(set(rows.ref_sha256) | set(rows.dist_sha256))
    else:
        expected = extractor.compute_pairs(pairs)
    for column in extractor.pair_columns():
        stored = got.loc[list(rows.pair_id), f"{cls.name}_{column.name}"]
        if column.dim == 0:
            np.testing.assert_allclose(stored.to_numpy(float), expected[column.name], rtol=1e-12, equal_nan=True)
        else:
            np.testing.assert_allclose(np.stack(stored.to_list()), expected[column.name], rtol=1e-6)
    con.close()
