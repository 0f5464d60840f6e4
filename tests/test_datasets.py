import math

import openpyxl
import pandas as pd
import pytest

from featurestore.datasets import PairTable, load_pairs, pair_key
from featurestore.errors import SiqaError


def write_scores(path, rows, header=("name", "score")):
    wb = openpyxl.Workbook()
    ws = wb.active
    if header:
        ws.append(list(header))
    for r in rows:
        ws.append(list(r))
    wb.save(path)


def test_seiqa_layout_loads(seiqa_dir):
    t = load_pairs(seiqa_dir)
    assert len(t) == 8
    assert sorted(t.df.split.unique()) == ["test", "train"]
    train = t.df[t.df.split == "train"]
    assert train.label.notna().all() and t.df[t.df.split == "test"].label.isna().all()
    assert set(train.label) <= {3.0, 4.0, 5.0}
    r = t.df.iloc[0]
    assert r.pair_id == pair_key(r.ref_sha256, r.dist_sha256) and len(r.ref_sha256) == 64


def test_split_filter(seiqa_dir):
    assert set(load_pairs(seiqa_dir, splits=["test"]).df.split) == {"test"}
    with pytest.raises(SiqaError, match="unknown split"):
        load_pairs(seiqa_dir, splits=["dev"])


def test_reference_shared_by_pairs_has_one_hash(seiqa_dir):
    t = load_pairs(seiqa_dir, splits=["train"])
    assert t.df.ref_sha256.nunique() == 2


@pytest.mark.parametrize("side,other", [("Dist", "Ref"), ("Ref", "Dist")])
def test_unpaired_image(seiqa_dir, side, other):
    (seiqa_dir / "Test" / other / "000007.png").unlink()
    with pytest.raises(SiqaError, match="000007.png"):
        load_pairs(seiqa_dir)


def test_duplicate_names(seiqa_dir):
    src = seiqa_dir / "Test" / "Dist" / "000007.png"
    (seiqa_dir / "Test" / "Dist" / "000007.PNG").write_bytes(src.read_bytes())
    with pytest.raises(SiqaError, match="duplicate image name"):
        load_pairs(seiqa_dir)


def test_unreadable_xlsx(seiqa_dir):
    (seiqa_dir / "Train" / "Train_scores.xlsx").write_bytes(b"garbage")
    with pytest.raises(SiqaError, match="Train_scores.xlsx: unreadable"):
        load_pairs(seiqa_dir)


def test_wrongly_shaped_xlsx(seiqa_dir):
    write_scores(seiqa_dir / "Train" / "Train_scores.xlsx", [("000001.png", 5, "x")], header=("name", "score", "extra"))
    with pytest.raises(SiqaError, match="two columns"):
        load_pairs(seiqa_dir)


@pytest.mark.parametrize("score,msg", [(7, "outside 0..5"), (-1, "outside 0..5"), ("five", "not a number"), (2.5, "not an integer")])
def test_bad_label_values(seiqa_dir, score, msg):
    rows = [(f"{i:06d}.png", 3) for i in range(1, 7)]
    rows[2] = ("000003.png", score)
    write_scores(seiqa_dir / "Train" / "Train_scores.xlsx", rows)
    with pytest.raises(SiqaError, match=msg):
        load_pairs(seiqa_dir)


def test_labelled_row_without_image(seiqa_dir):
    rows = [(f"{i:06d}.png", 3) for i in range(1, 7)] + [("999999.png", 1)]
    write_scores(seiqa_dir / "Train" / "Train_scores.xlsx", rows)
    with pytest.raises(SiqaError, match="999999.png"):
        load_pairs(seiqa_dir)


def test_train_image_without_label(seiqa_dir):
    write_scores(seiqa_dir / "Train" / "Train_scores.xlsx", [(f"{i:06d}.png", 3) for i in range(1, 6)])
    with pytest.raises(SiqaError, match="without a label"):
        load_pairs(seiqa_dir)


def test_missing_scores_file(seiqa_dir):
    (seiqa_dir / "Train" / "Train_scores.xlsx").unlink()
    with pytest.raises(SiqaError, match="Train_scores.xlsx"):
        load_pairs(seiqa_dir)


def test_not_a_dataset(tmp_path):
    with pytest.raises(SiqaError, match="not a SeIQA folder"):
        load_pairs(tmp_path)
    with pytest.raises(SiqaError, match="no such file"):
        load_pairs(tmp_path / "nope")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_pairs_table(seiqa_dir, fmt):
    rows = [{"ref_name": f"Train/Ref/{i:06d}.png", "dist_name": f"Train/Dist/{i:06d}.png", "mos": 0.5 * i,
             "split": "train" if i < 5 else "test"} for i in range(1, 7)]
    path = seiqa_dir / f"pairs.{fmt}"
    getattr(pd.DataFrame(rows), f"to_{fmt}")(path, index=False)
    t = load_pairs(path)
    assert len(t) == 6 and list(t.df.label[:2]) == [0.5, 1.0]
    assert (t.df.split == "test").sum() == 2


def test_pairs_table_errors(seiqa_dir):
    path = seiqa_dir / "pairs.csv"
    pd.DataFrame({"ref": ["a"], "dist_name": ["b"]}).to_csv(path, index=False)
    with pytest.raises(SiqaError, match="missing column 'ref_name'"):
        load_pairs(path)
    pd.DataFrame({"ref_name": ["Train/Ref/000001.png"], "dist_name": ["Train/Dist/nope.png"]}).to_csv(path, index=False)
    with pytest.raises(SiqaError, match="nope.png listed but not found"):
        load_pairs(path)
    pd.DataFrame({"ref_name": ["Train/Ref/000001.png"], "dist_name": ["Train/Dist/000001.png"], "mos": ["bad"]}).to_csv(path, index=False)
    with pytest.raises(SiqaError, match="not a finite number"):
        load_pairs(path)
    path.write_text("")
    with pytest.raises(SiqaError, match="unreadable table"):
        load_pairs(path)


def test_from_paths(seiqa_dir):
    t = PairTable.from_paths([(seiqa_dir / "Test/Ref/000007.png", seiqa_dir / "Test/Dist/000007.png")])
    assert len(t) == 1 and math.isnan(t.df.label[0]) and t.df.name[0] == "000007.png"
