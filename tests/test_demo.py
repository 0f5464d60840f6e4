"""The demo dataset: SeIQA layout, documented synthetic labels, graded degradations, byte-identical reruns."""

import csv
import dataclasses
import hashlib
import itertools
import re

import numpy as np
import pytest
from openpyxl import load_workbook
from PIL import Image

from featurestore.datasets.demo import (
    BASE_DAMAGE,
    DEGRADATIONS,
    LEVELS,
    PHOTOS,
    lfw_face,
    load_photo,
    make_demo_dataset,
)
from featurestore.errors import SiqaError

COUNTS = {"Train": 72, "Val": 12, "Test": 24}
REQUIRED_FAMILIES = {
    "gaussian_blur",
    "gaussian_noise",
    "jpeg",
    "object_removed",
    "object_pasted",
    "patch_shuffle",
    "object_recolour",
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "data"
    summary = make_demo_dataset(out)
    return out, summary


def _meta(out):
    with open(out / "demo_meta.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_counts_and_seiqa_layout(demo):
    out, summary = demo
    assert summary["pairs"] == COUNTS
    for split, n in COUNTS.items():
        refs = sorted(p.name for p in (out / split / "Ref").iterdir())
        dists = sorted(p.name for p in (out / split / "Dist").iterdir())
        assert refs == dists and len(refs) == n
        assert all(re.fullmatch(r"\d{6}\.png", name) for name in refs)
        assert (out / split / f"{split}_scores.xlsx").exists() == (split == "Train")
    shapes = set()
    for ref in (out / "Test" / "Ref").iterdir():
        with Image.open(ref) as r, Image.open(out / "Test" / "Dist" / ref.name) as d:
            assert r.size == d.size and r.mode == d.mode == "RGB" and max(r.size) == 256
            shapes.add(r.size)
    assert any(w != h for w, h in shapes)


def test_train_scores_xlsx_has_header_and_integer_labels(demo):
    out, _ = demo
    sheet = load_workbook(out / "Train" / "Train_scores.xlsx", read_only=True).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == ("name", "score")
    names = [name for name, _ in rows[1:]]
    scores = [score for _, score in rows[1:]]
    assert names == sorted(p.name for p in (out / "Train" / "Dist").iterdir())
    assert all(isinstance(s, int) and 0 <= s <= 5 for s in scores)
    assert set(scores) == set(range(6))
    meta_scores = {row["name"]: int(row["score"]) for row in _meta(out) if row["split"] == "train"}
    assert dict(zip(names, scores)) == meta_scores


def test_meta_lists_every_pair_and_follows_the_rule(demo):
    out, _ = demo
    meta = _meta(out)
    assert len(meta) == sum(COUNTS.values()) and len({row["name"] for row in meta}) == len(meta)
    for row in meta:
        degradation = DEGRADATIONS[row["degradation"]]
        assert row["kind"] == degradation.kind
        assert int(row["score"]) == 5 - (BASE_DAMAGE[degradation.kind] + int(row["level"]))
        assert (out / row["split"].capitalize() / "Dist" / row["name"]).is_file()


def test_every_degradation_family_in_every_split(demo):
    out, summary = demo
    assert REQUIRED_FAMILIES <= set(DEGRADATIONS) and summary["degradations"] == sorted(DEGRADATIONS)
    for split in ("train", "val", "test"):
        assert {row["degradation"] for row in _meta(out) if row["split"] == split} == set(DEGRADATIONS)
    train_levels = {(row["degradation"], int(row["level"])) for row in _meta(out) if row["split"] == "train"}
    assert train_levels == {(name, level) for name in DEGRADATIONS for level in LEVELS}


def test_splits_are_disjoint_by_reference_and_donor(demo):
    out, summary = demo
    refs = summary["references"]
    assert not set(refs["Train"]) & set(refs["Val"]) and not set(refs["Train"]) & set(refs["Test"])
    assert not set(refs["Val"]) & set(refs["Test"])
    hashes = {
        split: {hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / split / "Ref").iterdir()} for split in COUNTS
    }
    assert not hashes["Train"] & hashes["Test"] and not hashes["Train"] & hashes["Val"]
    # Several pairs share each reference, as in SeIQA.
    assert len(hashes["Train"]) == len(refs["Train"]) < COUNTS["Train"]
    split_of = {photo.name: photo.split for photo in PHOTOS}
    for row in _meta(out):
        if row["degradation"] == "object_pasted":
            assert row["donor"] != row["reference"] and split_of[row["donor"]] == row["split"]


def test_rerun_is_byte_identical_and_seed_matters(demo, tmp_path):
    out, _ = demo
    make_demo_dataset(tmp_path / "again")
    make_demo_dataset(tmp_path / "seed1", seed=1)
    first = _tree_bytes(out)
    assert _tree_bytes(tmp_path / "again") == first
    other_seed = _tree_bytes(tmp_path / "seed1")
    assert other_seed.keys() == first.keys() and other_seed != first


def test_label_rule_falls_with_level_and_meaning_costs_more():
    for degradation in DEGRADATIONS.values():
        scores = [degradation.score(level) for level in LEVELS]
        assert all(0 <= s <= 5 for s in scores)
        assert all(a > b for a, b in itertools.pairwise(scores)), degradation.name
    for level in LEVELS:
        photometric = min(d.score(level) for d in DEGRADATIONS.values() if d.kind == "photometric")
        semantic = max(d.score(level) for d in DEGRADATIONS.values() if d.kind != "photometric")
        assert semantic < photometric


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_degradations_grow_with_level(name):
    photos = {photo.name: photo for photo in PHOTOS}
    reference = load_photo(photos["astronaut"], 128)  # it has a sign and a face: every degradation applies
    scene = dataclasses.replace(reference, donor=load_photo(photos["coffee"], 128), donor_face=lfw_face(10))
    errors = []
    for level in LEVELS:
        out = DEGRADATIONS[name].apply(scene, level, np.random.default_rng(0))
        assert out.shape == reference.rgb.shape and out.dtype == np.uint8
        errors.append(np.abs(out.astype(np.float64) - reference.rgb).mean())
    assert 0 < errors[0] < errors[1] < errors[2], errors


def test_rerun_replaces_an_earlier_demo_but_not_other_folders(tmp_path):
    out = tmp_path / "data"
    make_demo_dataset(out, n_train=20, n_val=4, n_test=8, size=64)
    make_demo_dataset(out, n_train=10, n_val=0, n_test=3, size=64)
    assert len(list((out / "Train" / "Dist").iterdir())) == 10 and not (out / "Val").exists()
    assert len(_meta(out)) == 13
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(SiqaError, match="holds no earlier demo"):
        make_demo_dataset(foreign, size=64)
    assert (foreign / "holiday.jpg").read_bytes() == b"not ours"


def test_the_seiqa_loader_reads_the_demo_and_ignores_its_meta_file(demo):
    from featurestore.datasets import load_pairs

    out, _ = demo
    table = load_pairs(out).df
    assert table.groupby("split").size().to_dict() == {"train": 72, "val": 12, "test": 24}
    rule = {row["name"]: float(row["score"]) for row in _meta(out) if row["split"] == "train"}
    train = table[table.split == "train"]
    assert dict(zip(train.name, train.label)) == rule
    assert table[table.split != "train"].label.isna().all()


def test_no_pair_repeats_a_photo_degradation_and_level(tmp_path):
    from featurestore.datasets.demo import plan_pairs

    plan = plan_pairs({"train": 72, "val": 12, "test": 24}, seed=0)
    keys = [(p.split, p.photo, p.degradation, p.level) for p in plan]
    assert len(keys) == len(set(keys))


def test_text_and_face_edits_only_where_the_reference_has_that_content(demo):
    out, _ = demo
    photos = {photo.name: photo for photo in PHOTOS}
    for split in ("train", "val", "test"):
        in_split = [p for p in PHOTOS if p.split == split]
        assert any(p.sign for p in in_split) and any(p.face_box or p.portrait for p in in_split), split
    for row in _meta(out):
        assert DEGRADATIONS[row["degradation"]].applies_to(photos[row["reference"]]), row


def test_localized_edits_record_the_box_they_changed_and_nothing_outside_it(demo):
    out, _ = demo
    for row in _meta(out):
        box = [row[c] for c in ("box_x0", "box_y0", "box_x1", "box_y1")]
        if not DEGRADATIONS[row["degradation"]].localized:
            assert box == [""] * 4, row
            continue
        x0, y0, x1, y1 = (int(v) for v in box)
        split = row["split"].capitalize()
        ref = np.asarray(Image.open(out / split / "Ref" / row["name"]).convert("RGB"))
        dist = np.asarray(Image.open(out / split / "Dist" / row["name"]).convert("RGB"))
        assert 0 <= x0 < x1 <= ref.shape[1] and 0 <= y0 < y1 <= ref.shape[0], row
        changed = np.any(ref != dist, axis=-1)
        changed[y0:y1, x0:x1] = False
        assert not changed.any(), row
        # the box is tight: an edit covers a part of the image, not all of it
        assert (x1 - x0) * (y1 - y0) < 0.8 * ref.shape[0] * ref.shape[1], row
