"""Every file a command writes goes through one writer (issue 23, parts 2 and 7): never into a store or a run
unless it is the command's own product, never through a planted link, whole or not at all."""
from __future__ import annotations

import errno
import io
import os
import shutil
import zipfile

import numpy as np
import openpyxl
import pandas as pd
import pytest

from toy_run import build_run, toy_extractors  # noqa: F401 (module-scoped autouse fixture)
from conftest import file_bytes
import cli
from blend.submission import read_submission, validate_submission, write_submission_zip
from featurestore.errors import SiqaError
from featurestore.store.layout import TEMP_NAME


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("outputs"))


@pytest.fixture
def paths(built, tmp_path):
    """A copy of the store and of the run fit on it (the run's store path rewritten is not needed: submit,
    predict and report are given --store)."""
    for name in ("store", "run"):
        shutil.copytree(built[name], tmp_path / name, symlinks=True)
    return {**built, "store": tmp_path / "store", "run": tmp_path / "run", "tmp": tmp_path}


def _main(capsys, *args):
    try:
        cli.main(["-q", *(str(a) for a in args)])
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _refused(capsys, *args, says: str):
    code, _, err = _main(capsys, *args)
    assert code == 1, err
    assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_submit_and_predict_cannot_write_into_the_store(paths, capsys):
    store, run = paths["store"], paths["run"]
    before = file_bytes(store)
    _refused(capsys, "submit", "--run", run, "--store", store, "--out", store / "pairs.parquet",
             says="inside the feature store")
    _refused(capsys, "predict", "--run", run, "--store", store, "--pairs", paths["data"], "--out",
             store / "views.json", says="inside the feature store")
    _refused(capsys, "sql", "--store", store, "--out", store / "features" / "new.csv", "SELECT 1 AS x",
             says="inside the feature store")
    assert file_bytes(store) == before


def test_outputs_cannot_replace_a_runs_files(paths, capsys):
    store, run = paths["store"], paths["run"]
    before = file_bytes(run)
    victim = min(p for p in run.rglob("*") if p.is_file() and p.parent != run)  # e.g. models/...
    _refused(capsys, "submit", "--run", run, "--store", store, "--out", victim, says="inside the run folder")
    _refused(capsys, "predict", "--run", run, "--store", store, "--pairs", paths["data"], "--out",
             run / "run.json", says="inside the run folder")
    _refused(capsys, "sql", "--store", store, "--format", "csv", "--out", run / "config.json", "SELECT 1 AS x",
             says="inside the run folder")
    assert file_bytes(run) == before


def test_a_link_to_a_store_is_the_store(paths, capsys):
    link = paths["tmp"] / "innocent"
    link.symlink_to(paths["store"])
    before = file_bytes(paths["store"])
    _refused(capsys, "sql", "--store", paths["store"], "--format", "parquet", "--out", link / "pairs.parquet",
             "SELECT 1 AS x", says="inside the feature store")
    assert file_bytes(paths["store"]) == before


def test_submit_writes_its_own_zip_in_its_run(paths, capsys):
    run = paths["run"]
    code, _, err = _main(capsys, "submit", "--run", run, "--store", paths["store"])
    assert code == 0, err
    code, _, err = _main(capsys, "submit", "--run", run, "--store", paths["store"], "--out", run / "submission.zip")
    assert code == 0, err
    table, _ = read_submission(run / "submission.zip")
    assert len(table) == 6


def test_planted_links_are_never_followed(paths, capsys):
    run, store = paths["run"], paths["store"]
    victim = paths["tmp"] / "victim.txt"
    victim.write_text("precious")
    # the temp name the old submit used: now a random name, created O_EXCL|O_NOFOLLOW
    (run / "submission.zip.tmp").symlink_to(victim)
    code, _, err = _main(capsys, "submit", "--run", run, "--store", store)
    assert code == 0, err
    assert victim.read_text() == "precious" and not (run / "submission.zip").is_symlink()
    (run / "submission.zip").unlink()
    (run / "submission.zip").symlink_to(victim)
    _refused(capsys, "submit", "--run", run, "--store", store, says="is a symbolic link")
    (run / "report.html").unlink(missing_ok=True)
    (run / "report.html").symlink_to(victim)
    _refused(capsys, "report", "--run", run, "--store", store, says="is a symbolic link")
    assert victim.read_text() == "precious"
    assert not (run / "report").exists()  # every target is checked before a first plot is written


def test_a_linked_report_folder_is_refused(paths, capsys):
    run = paths["run"]
    elsewhere = paths["tmp"] / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mine.png").write_bytes(b"user's picture")
    shutil.rmtree(run / "report", ignore_errors=True)
    (run / "report").symlink_to(elsewhere)
    _refused(capsys, "report", "--run", run, "--store", paths["store"], says="is a symbolic link")
    assert [p.name for p in elsewhere.iterdir()] == ["mine.png"]


@pytest.mark.parametrize("suffix", [".parquet", ".json", ".csv"])
def test_predict_out_in_every_format(paths, capsys, suffix):
    """The README's own examples: `siqa predict --pairs ... --out scores.parquet` (it crashed: issue 23)."""
    out = paths["tmp"] / f"scores{suffix}"
    code, _, err = _main(capsys, "predict", "--run", paths["run"], "--store", paths["store"], "--pairs",
                         paths["data"], "--out", out, "-q")
    assert code == 0, err
    frame = {".parquet": pd.read_parquet, ".json": pd.read_json, ".csv": pd.read_csv}[suffix](out)
    assert {"name", "score"} <= set(frame.columns) and len(frame) == 30


def test_predict_does_not_offer_an_option_it_lacks(paths, capsys):
    code, _, err = _main(capsys, "predict", "--run", paths["run"], "--store", paths["store"], "--pairs",
                         paths["data"], "--out", paths["tmp"] / "scores.txt")
    assert code == 2 and "use .csv, .json or .parquet" in err and "--format" not in err


def _no_space(monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)


def _temps(folder):
    return [p for p in folder.rglob("*") if TEMP_NAME.fullmatch(p.name)]


def test_a_full_disk_keeps_the_old_output(paths, capsys, monkeypatch):
    run, store = paths["run"], paths["store"]
    for args in (["submit", "--run", run, "--store", store], ["report", "--run", run, "--store", store]):
        assert _main(capsys, *args)[0] == 0
    table = paths["tmp"] / "table.csv"
    table.write_text("old,result\n1,2\n")
    before = {"run": file_bytes(run), "table": table.read_bytes()}
    _no_space(monkeypatch)
    for args in (["sql", "--store", store, "--out", table, "SELECT * FROM pairs"],
                 ["submit", "--run", run, "--store", store],
                 ["report", "--run", run, "--store", store]):
        _refused(capsys, *args, says="No space left on device")
    monkeypatch.undo()
    assert file_bytes(run) == before["run"] and table.read_bytes() == before["table"]
    assert _temps(run) == [] and _temps(paths["tmp"]) == []


def test_a_submission_is_validated_before_it_replaces_the_old_one(tmp_path):
    names = ["a.png", "b.png"]
    good = write_submission_zip(names, [1.0, 2.0], tmp_path / "sub.zip", 0.1, True, expected_names=names)
    before = good.read_bytes()
    with pytest.raises(SiqaError, match=r"sub.zip: 1 score\(s\) not finite or outside 0..5"):
        write_submission_zip(names, [1.0, 7.0], tmp_path / "sub.zip", 0.1, True, expected_names=names)
    with pytest.raises(SiqaError, match=r"sub.zip: 1 test picture\(s\) missing"):
        write_submission_zip(names[:1], [1.0], tmp_path / "sub.zip", 0.1, True, expected_names=names)
    assert good.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["sub.zip"]


def test_formula_like_names_are_text_in_the_xlsx(tmp_path):
    names = ["=1+1.png", "+cmd.png", "-2.png", "@SUM(A1).png", "plain.png"]
    path = write_submission_zip(names, np.linspace(1, 4, len(names)), tmp_path / "sub.zip", 0.1, True,
                                expected_names=names)
    validate_submission(path, names)
    with zipfile.ZipFile(path) as archive:
        xlsx = archive.read("prediction.xlsx")
    sheet = openpyxl.load_workbook(io.BytesIO(xlsx)).active
    cells = [sheet.cell(row=i + 2, column=1) for i in range(len(names))]
    assert [c.value for c in cells] == names and {c.data_type for c in cells} == {"s"}
    with zipfile.ZipFile(io.BytesIO(xlsx)) as book:
        assert b"<f>" not in book.read("xl/worksheets/sheet1.xml")


def test_the_writer_refuses_a_link_and_never_reuses_a_temp_name(tmp_path, monkeypatch):
    from featurestore.outputs import write_file

    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "out.bin").symlink_to(victim)
    with pytest.raises(SiqaError, match="out.bin: is a symbolic link"):
        write_file(tmp_path / "out.bin", b"x")
    # a link planted at the very temp name the writer picks is not followed
    import uuid

    fixed = uuid.UUID(int=7)
    monkeypatch.setattr(uuid, "uuid4", lambda: fixed)
    (tmp_path / f".new.bin.{fixed.hex}.tmp").symlink_to(victim)
    with pytest.raises(SiqaError, match="new.bin: cannot write"):
        write_file(tmp_path / "new.bin", b"x")
    assert victim.read_text() == "precious" and not (tmp_path / "new.bin").exists()


def test_write_output_allows_only_declared_products_inside_a_run(paths):
    from blend.outputs import write_output

    run = paths["run"]
    with pytest.raises(SiqaError, match="inside the run folder"):
        write_output(run / "notes.txt", b"x")
    write_output(run / "notes.txt", b"x", products=[run / "notes.txt"])
    assert (run / "notes.txt").read_bytes() == b"x"


def test_a_folder_that_cannot_take_the_file_is_one_line(tmp_path):
    from featurestore.outputs import write_file

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SiqaError, match=r"file/out.csv: cannot write \(.*\); nothing was written$"):
        write_file(tmp_path / "file" / "out.csv", b"x")
