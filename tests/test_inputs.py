"""Inputs a careless user gives (issue 12, item 6 and the weaker list): paths outside the dataset root,
duplicated or overlapping pairs, config values of the wrong kind, too few groups, degenerate labels."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from blend import run as run_module
from blend.run import load_run, run_oof
from blend.runfolder import sign
from conftest import photo
from blend.settings import settings_from
from featurestore.datasets import load_pairs
from featurestore.errors import SiqaError
from test_tabular_run import SMALL, _synthetic


def _no_fitting(*args, **kwargs):
    raise AssertionError("fitting started before the inputs were checked")


def test_config_values_of_the_wrong_kind_are_one_line():
    with pytest.raises(SiqaError, match=r"^config: \[extractors.imagenet\] size = 'huge': Input should be a valid "
                                        r"integer$"):
        settings_from({"extractors": {"imagenet": {"size": "huge"}}})
    with pytest.raises(SiqaError, match=r"^config: \[tabular\] folds = 'three': Input should be a valid integer$"):
        settings_from({"tabular": {"folds": "three"}})
    with pytest.raises(SiqaError, match=r"^config: \[tabular.pool.lightgbm\] n_estimators = 'many': Input should be"):
        settings_from({"tabular": {"preset": "fast", "pool": {"lightgbm": {"n_estimators": "many"}}}})
    with pytest.raises(SiqaError, match=r"^config: \[tabular\] seed = 1.0: Input should be a valid integer$"):
        settings_from({"tabular": {"folds": 4, "seed": 1.0}})  # no float for a whole number
    assert settings_from({"tabular": {"folds": 4}}).tabular.folds == 4


def test_too_few_groups_for_the_inner_cv_stop_before_fitting(tmp_path, monkeypatch):
    monkeypatch.setattr(run_module, "NestedCV", _no_fitting)
    with pytest.raises(SiqaError, match=r"5 reference groups are too few for nested CV with 3 folds"):
        run_oof(_synthetic(n_groups=5, dense=False), SMALL, tmp_path / "run", progress=False)


def test_degenerate_labels_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(run_module, "NestedCV", _no_fitting)
    data = _synthetic(dense=False)
    data.y[np.isfinite(data.y)] = 3.0
    with pytest.raises(SiqaError, match=r"all 90 labelled pairs have the label 3; there is nothing to learn"):
        run_oof(data, SMALL, tmp_path / "run", progress=False)


def test_one_pair_under_two_names_with_two_labels_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(run_module, "NestedCV", _no_fitting)
    data = _synthetic(dense=False)
    data.ids[1] = data.ids[0]
    data.y[1] = data.y[0] + 3
    with pytest.raises(SiqaError, match=r"1 pair\(s\) appear under several names with different labels "
                                        r"\(same images: 000000.png = .*, 000001.png = "):
        run_oof(data, SMALL, tmp_path / "run", progress=False)


def test_repeated_pairs_are_learnt_once_and_test_overlap_is_reported(tmp_path, caplog):
    data = _synthetic(dense=False)
    data.ids[1], data.y[1] = data.ids[0], data.y[0]  # the same pair and label under a second name
    test_row = int(np.flatnonzero(~np.isfinite(data.y))[0])
    data.ids[test_row] = data.ids[2]  # a training pair repeated in the test split
    data.split[test_row] = "test"
    summary = run_oof(data, SMALL, tmp_path / "run", progress=False)
    assert summary["n_rows"] == 89 and summary["train_test_overlap"] == 1
    assert "1 labelled pair(s) repeat another" in caplog.text and "1 test pair(s) are labelled pairs too" in caplog.text


@pytest.fixture
def outside(tmp_path):
    """A pairs table in `data/` whose rows point at `../elsewhere`, an absolute path and a symlink out."""
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    data.mkdir()
    elsewhere.mkdir()
    Image.fromarray(photo()).save(data / "ref.png")
    Image.fromarray(photo("coffee")).save(data / "dist.png")
    Image.fromarray(photo("chelsea")).save(elsewhere / "secret.png")
    os.symlink(elsewhere / "secret.png", data / "link.png")
    return data, elsewhere


@pytest.mark.parametrize("dist", ["../elsewhere/secret.png", "{elsewhere}/secret.png", "link.png"])
def test_pairs_outside_the_dataset_root_are_refused(outside, dist):
    data, elsewhere = outside
    table = data / "pairs.csv"
    table.write_text(f"ref_name,dist_name,mos\nref.png,dist.png,3\nref.png,{dist.format(elsewhere=elsewhere)},2\n")
    with pytest.raises(SiqaError, match=r"pairs.csv: pair .* is outside the dataset root .*--allow-outside-root"):
        load_pairs(table)
    assert len(load_pairs(table, allow_outside_root=True)) == 2


def test_a_symlink_out_of_a_seiqa_folder_is_refused(outside, seiqa_dir):
    _, elsewhere = outside
    victim = sorted((seiqa_dir / "Test" / "Dist").iterdir())[0]
    victim.unlink()
    os.symlink(elsewhere / "secret.png", victim)
    with pytest.raises(SiqaError, match=r"is outside the dataset root"):
        load_pairs(seiqa_dir)


def test_an_empty_pipeline_file_is_one_clear_line(tmp_path, capsys):
    import cli

    run = tmp_path / "run"
    run_oof(_synthetic(dense=False), SMALL, run, progress=False)
    (run / "models" / "inference.json").write_bytes(b"")
    with pytest.raises(SiqaError, match=r"inference.json: changed since the run was written"):
        load_run(run)
    sign(run, "0" * 32)  # the manifest agrees with the empty file: the file itself is then what is wrong
    with pytest.raises(SiqaError, match=r"inference.json: written by another siqa \(.*\); fit the run again"):
        load_run(run)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["report", "--run", str(run), "--quiet"])
    assert exit_.value.code not in (0, 130) and "written by another siqa" in capsys.readouterr().err


def _scores_book(path, rows, edit=None):
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["name", "score"])
    for row in rows:
        sheet.append(list(row))
    if edit:
        edit(book, sheet)
    book.save(path)


@pytest.mark.parametrize("edit, message", [
    (lambda book, ws: ws.__setitem__("B3", "=B2+1"),
     r"row 3 \(000002.png\): no score \(cell B3 is the formula =B2\+1 with no saved value"),
    (lambda book, ws: ws.merge_cells("B2:B3"),
     r"row 3 \(000002.png\): no score \(cell B3 is inside the merged cells B2:B3"),
    (lambda book, ws: ws.__setitem__("B4", True),
     r"row 4 \(000003.png\): score is the logical value TRUE, not a number"),
    (lambda book, ws: book.create_sheet("more").append(["000009.png", 4]),
     r"scores are read from the first sheet 'Sheet' only, but sheet\(s\) 'more' hold data too"),
])
def test_xlsx_messages_say_what_they_saw(seiqa_dir, edit, message):
    rows = [(f"{i:06d}.png", 3) for i in range(1, 7)]
    _scores_book(seiqa_dir / "Train" / "Train_scores.xlsx", rows, edit)
    with pytest.raises(SiqaError, match=message):
        load_pairs(seiqa_dir)
