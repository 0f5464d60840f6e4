"""Submission zip: layout, byte-reproducibility, and a validator that rejects every broken variant."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from blend.submission import README_KEYS, read_submission, validate_submission, write_submission_zip
from featurestore.errors import SiqaError

NAMES = [f"{i:06d}.png" for i in range(1, 9)]


def _write(path, names=NAMES, scores=None, **kwargs):
    scores = np.linspace(0.5, 4.5, len(names)) if scores is None else scores
    return write_submission_zip(names, scores, path, runtime_per_image=kwargs.get("runtime", 0.25),
                                cpu=True, description="test run")


def test_layout_and_readme(tmp_path):
    path = _write(tmp_path / "sub.zip")
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["prediction.xlsx", "readme.txt"]
        readme = archive.read("readme.txt").decode().splitlines()
    assert readme == ["runtime per image [s] : 0.2500", "CPU[1] / GPU[0] : 1",
                      "Extra Data [1] / No Extra Data [0] : 0", "Other description : test run"]
    table, fields = read_submission(path)
    assert list(table.columns) == ["picture_name", "Score"] and list(table["picture_name"]) == NAMES
    assert set(fields) == set(README_KEYS)
    validate_submission(path, NAMES)


def test_same_input_gives_identical_bytes(tmp_path):
    first = _write(tmp_path / "a.zip").read_bytes()
    second = _write(tmp_path / "b.zip").read_bytes()
    assert first == second


@pytest.mark.parametrize("names, scores, message", [
    (NAMES[:-1], None, "1 test picture\\(s\\) missing"),
    (NAMES + [NAMES[0]], None, "listed more than once: 000001.png"),
    (NAMES + ["999999.png"], None, "not in the test split"),
    (NAMES, np.r_[np.ones(7), 5.5], "outside 0..5"),
    (NAMES, np.r_[np.ones(7), -0.1], "outside 0..5"),
    (NAMES, np.r_[np.ones(7), np.nan], "not finite"),
])
def test_validator_rejects_broken_predictions(tmp_path, names, scores, message):
    scores = np.linspace(0.5, 4.5, len(names)) if scores is None else scores
    path = _write(tmp_path / "bad.zip", names, scores)
    with pytest.raises(SiqaError, match=message):
        validate_submission(path, NAMES)


def test_validator_rejects_broken_archives(tmp_path):
    good = _write(tmp_path / "good.zip")
    with zipfile.ZipFile(good) as archive:
        xlsx, readme = archive.read("prediction.xlsx"), archive.read("readme.txt").decode()
    cases = {
        "no_readme.zip": {"prediction.xlsx": xlsx},
        "short_readme.zip": {"prediction.xlsx": xlsx, "readme.txt": readme.splitlines()[0]},
        "bad_cpu.zip": {"prediction.xlsx": xlsx, "readme.txt": readme.replace("GPU[0] : 1", "GPU[0] : 7")},
    }
    messages = {"no_readme.zip": "lacks readme.txt", "short_readme.zip": "lacks line",
                "bad_cpu.zip": "CPU\\[1\\] / GPU\\[0\\]' is invalid"}
    for name, entries in cases.items():
        with zipfile.ZipFile(tmp_path / name, "w") as archive:
            for entry, payload in entries.items():
                archive.writestr(entry, payload)
        with pytest.raises(SiqaError, match=messages[name]):
            validate_submission(tmp_path / name, NAMES)
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(SiqaError, match="not a readable zip"):
        validate_submission(tmp_path / "junk.zip", NAMES)


def test_wrong_columns_are_rejected(tmp_path):
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.active.append(["name", "score"])
    workbook.active.append([NAMES[0], 1.0])
    raw = io.BytesIO()
    workbook.save(raw)
    with zipfile.ZipFile(tmp_path / "cols.zip", "w") as archive:
        archive.writestr("prediction.xlsx", raw.getvalue())
        archive.writestr("readme.txt", "")
    with pytest.raises(SiqaError, match="columns are \\['name', 'score'\\]"):
        validate_submission(tmp_path / "cols.zip", NAMES[:1])
