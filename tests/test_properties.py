"""Property-based tests (hypothesis): the dataset loaders on generated folders and tables, and the store's
round trip of random columns through Parquet shards and DuckDB views; plus the loaders' error contract."""
from __future__ import annotations

import hashlib
import math
import tempfile
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from featurestore.datasets import SPLITS, PairTable, load_pairs, pair_key
from featurestore.errors import SiqaError
from featurestore.extractors.base import Column, PairExtractor
from featurestore.sql import connect
from featurestore.store import FeatureStore, column_numpy, to_arrow

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _png(seed: int) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


CONTENTS = [_png(i) for i in range(4)]  # images share content as real datasets do (one reference, many names)
SUFFIXES = [".png", ".jpg", ".JPEG", ".bmp", ".tif", ".webp"]

# File names as people write them: letters of any script, digits (leading zeros), spaces, dots, dashes.
# Never empty, never hidden (a leading dot), never `.`/`..`.
stems = st.text(st.characters(whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters=" -_.()"),
                min_size=1, max_size=10).filter(lambda s: not s.startswith(".") and s.strip(" .") == s)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- pairs tables -------------------------------------------------------------------------------------

table_rows = st.lists(
    st.tuples(stems, st.sampled_from(SUFFIXES), st.integers(0, 3), st.integers(0, 3),
              st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)), st.sampled_from(SPLITS)),
    min_size=1, max_size=8, unique_by=lambda r: (r[0] + r[1]))


@SETTINGS
@given(rows=table_rows, fmt=st.sampled_from(["csv", "parquet"]), with_split=st.booleans(),
       subfolder=st.sampled_from(["", "imgs/", "a b/ü/"]))
def test_pairs_table_round_trip(rows, fmt, with_split, subfolder):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / subfolder).mkdir(parents=True, exist_ok=True)
        records = []
        for stem, suffix, ref_content, dist_content, label, split in rows:
            ref_name, dist_name = f"{subfolder}ref_{stem}{suffix}", f"{subfolder}{stem}{suffix}"
            (root / ref_name).write_bytes(CONTENTS[ref_content])
            (root / dist_name).write_bytes(CONTENTS[dist_content])
            records.append({"ref_name": ref_name, "dist_name": dist_name, "mos": label,
                            **({"split": split} if with_split else {})})
        path = root / f"pairs.{fmt}"
        getattr(pd.DataFrame(records), f"to_{fmt}")(path, index=False)
        table = load_pairs(path)
        df = table.df
        assert len(df) == len(rows)
        assert list(df.name) == [r["dist_name"] for r in records]  # verbatim: no '001' -> 1, no 'NA' -> NaN
        for got, r, (_, _, ref_content, dist_content, label, split) in zip(df.itertuples(), records, rows):
            assert got.split == (split if with_split else "train")
            assert (math.isnan(got.label) if label is None else got.label == label)
            assert got.ref_path == str(root / r["ref_name"]) and got.dist_path == str(root / r["dist_name"])
            assert got.ref_sha256 == sha(CONTENTS[ref_content]) and got.dist_sha256 == sha(CONTENTS[dist_content])
            assert got.pair_id == pair_key(got.ref_sha256, got.dist_sha256)


# --- SeIQA folders ------------------------------------------------------------------------------------

# (stem, dist suffix, how the reference file is spelled: same name, other extension, other case)
split_names = st.lists(st.tuples(stems, st.sampled_from(SUFFIXES), st.sampled_from(["same", "suffix", "case"])),
                       min_size=1, max_size=6, unique_by=lambda r: r[0].casefold())


def ref_spelling(stem: str, suffix: str, how: str) -> str:
    if how == "suffix":
        return stem + (".bmp" if suffix != ".bmp" else ".png")
    if how == "case" and stem.upper().casefold() == stem.casefold():
        return stem.upper() + suffix.upper()
    return stem + suffix


@settings(SETTINGS, max_examples=20)
@given(train=split_names, test=split_names, label_names=st.sampled_from(["file", "stem", "upper"]),
       seed=st.integers(0, 2**16))
def test_seiqa_folder_round_trip(train, test, label_names, seed):
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        expected = {}
        for split, folder, names in (("train", "Train", train), ("test", "Test", test)):
            for sub in ("Ref", "Dist"):
                (root / folder / sub).mkdir(parents=True)
            for stem, suffix, how in names:
                ref, dist = rng.integers(0, len(CONTENTS), 2)
                (root / folder / "Ref" / ref_spelling(stem, suffix, how)).write_bytes(CONTENTS[ref])
                (root / folder / "Dist" / f"{stem}{suffix}").write_bytes(CONTENTS[dist])
                label = float(rng.integers(0, 6)) if split == "train" else math.nan
                expected[(split, f"{stem}{suffix}")] = (label, sha(CONTENTS[ref]), sha(CONTENTS[dist]))
        wb = openpyxl.Workbook()
        wb.active.append(["name", "score"])
        for stem, suffix, _ in train:
            # SeIQA score files name images with or without the extension, in any case
            # (upper case only where it is a Unicode caseless match: 'ı'.upper() is 'I', another letter)
            upper = f"{stem}{suffix}".upper()
            if upper.casefold() != f"{stem}{suffix}".casefold():
                upper = f"{stem}{suffix}"
            written = {"file": f"{stem}{suffix}", "stem": stem, "upper": upper}[label_names]
            wb.active.append([written, int(expected[("train", f"{stem}{suffix}")][0])])
        wb.save(root / "Train" / "Train_scores.xlsx")
        df = load_pairs(root).df
        got = {(r.split, r.name): (r.label, r.ref_sha256, r.dist_sha256) for r in df.itertuples()}
        assert set(got) == set(expected) and len(df) == len(expected)
        for key, (label, ref_sha, dist_sha) in expected.items():
            assert got[key][1:] == (ref_sha, dist_sha)
            assert (math.isnan(got[key][0]) if math.isnan(label) else got[key][0] == label)
        assert list(df.pair_id) == [pair_key(r, d) for r, d in zip(df.ref_sha256, df.dist_sha256)]


# --- the loaders' error contract: one line naming the file ----------------------------------------------

def _table(tmp_path, text: str, name: str = "pairs.csv") -> Path:
    (tmp_path / "a.png").write_bytes(CONTENTS[0])
    (tmp_path / name).write_text(text)
    return tmp_path / name


@pytest.mark.parametrize("text,message", [
    ("", "empty file"),
    ("ref_name,dist_name\n", "no rows"),
    ("ref,dist\na.png,a.png\n", "missing column 'ref_name'"),
    ("ref_name\na.png\n", "missing column 'dist_name'"),
    ("dist_name,REF_NAME,ref_name\na.png,a.png,a.png\n", "column 'ref_name' appears twice"),
    ("ref_name,dist_name\n,a.png\n", "row 2: empty ref_name"),
    ("ref_name,dist_name,mos\na.png,a.png,inf\n", "row 2: mos 'inf' is not a finite number"),
    ("ref_name,dist_name,mos\na.png,a.png,3,5\n", "unreadable table"),
    ("ref_name,dist_name,split\na.png,a.png,dev\n", "row 2: unknown split 'dev'"),
    ("ref_name,dist_name\na.png,a.png\na.png,a.png\n", "row 3: duplicate dist_name 'a.png'"),
    ("ref_name,dist_name\na.png,b.png\n", "b.png listed but not found"),
])
def test_pairs_table_errors(tmp_path, text, message):
    path = _table(tmp_path, text)
    with pytest.raises(SiqaError, match=message) as info:
        load_pairs(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_table_saved_by_excel_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "pairs.csv"
    (tmp_path / "a.png").write_bytes(CONTENTS[0])
    path.write_bytes("ref_name,dist_name,mos\r\na.png,a.png,3\r\n".encode("utf-8-sig"))
    assert load_pairs(path).df.label.tolist() == [3.0]


def test_table_labels_may_be_missing_in_any_spelling(tmp_path):
    path = _table(tmp_path, "ref_name,dist_name,mos,split\n" + "".join(
        f"a.png,{name},{label},test\n" for name, label in
        [("a.png", ""), ("b.png", "NA"), ("c.png", "nan"), ("d.png", " 2.5 ")]))
    for name in "bcd":
        (tmp_path / f"{name}.png").write_bytes(CONTENTS[1])
    labels = load_pairs(path).df.label
    assert labels[:3].isna().all() and labels[3] == 2.5


@pytest.mark.parametrize("content,message", [(b"", "unreadable xlsx: empty file"), (b"PK\x03\x04 not really a zip", "unreadable xlsx")])
def test_broken_score_files(seiqa_dir, content, message):
    (seiqa_dir / "Train" / "Train_scores.xlsx").write_bytes(content)
    with pytest.raises(SiqaError, match=f"Train_scores.xlsx: {message}"):
        load_pairs(seiqa_dir)


def test_empty_split_folders(tmp_path):
    for sub in ("Ref", "Dist"):
        (tmp_path / "Test" / sub).mkdir(parents=True)
    with pytest.raises(SiqaError, match="no pairs found"):
        load_pairs(tmp_path)
    (tmp_path / "Test" / "Ref" / "x.png").write_bytes(CONTENTS[0])
    with pytest.raises(SiqaError, match="x.png: reference has no degraded image"):
        load_pairs(tmp_path)


# --- store round trip ---------------------------------------------------------------------------------

column_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(lambda n: n != "pair_id")
schemas = st.lists(st.tuples(column_names, st.sampled_from([0, 1, 3, 7])), min_size=1, max_size=4,
                   unique_by=lambda c: c[0])


@st.composite
def stored_columns(draw):
    columns = [Column(name, dim) for name, dim in draw(schemas)]
    n = draw(st.integers(1, 12))
    keys = [f"{i:02d}" + draw(st.text("0123456789abcdef", min_size=6, max_size=6)) for i in range(n)]
    values = {}
    for c in columns:
        if c.dim == 0:
            values[c.name] = np.array(draw(st.lists(st.floats(width=64), min_size=n, max_size=n)), np.float64)
        else:
            flat = draw(st.lists(st.floats(width=32), min_size=n * c.dim, max_size=n * c.dim))
            values[c.name] = np.array(flat, np.float32).reshape(n, c.dim)
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=3))) if n > 1 else []
    return columns, keys, values, cuts


def same(a, b) -> bool:
    """Equal, NaN equal to NaN, and 0.0 distinct from -0.0 (bit-exact)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes() or (
        a.shape == b.shape and np.array_equal(a, b, equal_nan=True) and np.array_equal(np.signbit(a), np.signbit(b)))


@SETTINGS
@given(stored=stored_columns())
def test_store_round_trip_through_shards_and_duckdb(stored):
    columns, keys, values, cuts = stored

    class Generated(PairExtractor):
        name = "prop"

        def pair_columns(self):
            return columns

        def compute_pairs(self, pairs):
            raise AssertionError("its shards are written by the test")

    ex = Generated()
    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore(tmp)
        folder = store.folder(ex, "pair")
        for lo, hi in zip([0, *cuts], [*cuts, len(keys)]):  # several shards, cut at random places
            store.write_shard(folder, to_arrow("pair_id", keys[lo:hi], columns,
                                                {k: v[lo:hi] for k, v in values.items()}))
        store.register_views([ex])
        store.register_pairs(PairTable(pd.DataFrame({
            "pair_id": keys, "split": "test", "name": [f"{k}.png" for k in keys], "ref_path": "r", "dist_path": "d",
            "ref_sha256": "r", "dist_sha256": "d", "label": math.nan})))
        # 1. Parquet shards, read back by the store
        table = store.read(folder)
        order = np.argsort(table.column(0).to_pylist())
        assert sorted(table.column(0).to_pylist()) == keys
        for c in columns:
            assert same(column_numpy(table.column(c.name), c.dim)[order], values[c.name]), c
        # 2. DuckDB: the extractor view and the wide features view
        con = connect(tmp)
        for sql in ("SELECT * FROM prop ORDER BY pair_id",
                    "SELECT pair_id, " + ", ".join(f"prop_{c.name} AS {c.name}" for c in columns) +
                    " FROM features ORDER BY pair_id"):
            df = con.execute(sql).df()
            assert list(df.pair_id) == keys
            for c in columns:
                got = (df[c.name].to_numpy(np.float64) if c.dim == 0
                       else np.stack([np.asarray(v, np.float32) for v in df[c.name]]))
                assert same(got, values[c.name]), (sql, c)
        types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE prop)").fetchall())
        for c in columns:
            assert types[c.name] == ("DOUBLE" if c.dim == 0 else f"FLOAT[{c.dim}]")
        con.close()
