"""One line, never a traceback (issue 23, finding 10). Each case once gave a traceback; now `siqa` exits 1 with
one line `siqa: error: <file>: <problem>`. (Finding 8, a signing key others could know, is gone with the key:
a run holds data only, tests/test_run_safety.py.)"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import cli
from blend.run import run_oof
from featurestore.doctor import read_official, seiqa_cosine_check
from featurestore.errors import SiqaError
from test_tabular_run import SMALL, _synthetic


def _one_line(capsys, *args) -> str:
    """Run `siqa ARGS`, which must fail with one line; returns that line."""
    with pytest.raises(SystemExit) as exit_:
        cli.main([str(a) for a in args])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.startswith("siqa: error: ") and err.count("\n") == 1, err
    return err


# --- finding 10 -----------------------------------------------------------------------------------------

def test_a_config_that_is_not_utf8(tmp_path, capsys):
    config = tmp_path / "latin1.toml"
    config.write_bytes("# réglages\n[tabular]\npreset = \"fast\"\n".encode("latin-1"))
    assert f"{config}: not UTF-8 text" in _one_line(capsys, "config", "show", "--config", config)


def test_labels_times_1e300(tmp_path):
    data = _synthetic(dense=False)
    data.y = data.y * 1e300
    with pytest.raises(SiqaError, match=r"labels reach .*e\+300; .* rescale the label column"):
        run_oof(data, SMALL, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "siqa-run.json").exists()


def test_labels_times_1e300_from_the_command_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    table = tmp_path / "t.csv"
    rows = ["a,b,mos,ref"] + [f"{a},{b},{(a + 0.1 * b) * 1e300},{i // 6}"
                              for i, (a, b) in enumerate(rng.normal(size=(48, 2)))]
    table.write_text("\n".join(rows) + "\n")
    assert "labels reach" in _one_line(capsys, "oof", "--table", table, "--label", "mos", "--group", "ref",
                                       "--run", tmp_path / "run", "--quiet")


@pytest.mark.parametrize("body,says", [
    ("Method,a.bmp,b.bmp\npsnr,1.0\n", r"line 2: 2 value\(s\), the header has 3"),
    ("Method,a.bmp,b.bmp\npsnr,1.0,x\n", "line 2: could not convert"),
    (None, "not UTF-8 text"),
])
def test_a_short_or_non_utf8_row_in_doctors_official_values(tmp_path, body, says):
    path = tmp_path / "official_values.csv"
    path.write_bytes(body.encode() if body else "Method,a.bmp\npsnr,1.0\nvif\xe9,2.0\n".encode("latin-1"))
    with pytest.raises(SiqaError, match=says):
        read_official(path)


@pytest.mark.parametrize("content,says", [
    (b"img_name,cos_sim\n000001.png,0.9\n000002.png\n", "line 3: cos_sim is missing or not a number"),
    ("img_name,cos_sim\nn\xe9.png,0.9\n".encode("latin-1"), "unreadable CSV"),
])
def test_a_short_or_non_utf8_row_in_doctors_published_cosines(tmp_path, content, says):
    labels = tmp_path / "train_labels.csv"
    labels.write_bytes(content)
    with pytest.raises(SiqaError, match=says):
        seiqa_cosine_check(tmp_path, labels, progress=False)
