"""One line, never a traceback (issue 23, finding 10), and a signing key others could know is refused (finding 8).
Each case once gave a traceback (or a key anyone could forge runs with); now `siqa` exits 1 with one line
`siqa: error: <file>: <problem>`."""
from __future__ import annotations

import os
import secrets
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


@pytest.fixture
def run_folder(tmp_path):
    """Something `siqa trust` signs: the signing key is read whatever the run holds."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text("{}")
    return folder


def _key(tmp_path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "key"
    path.write_bytes(content)
    path.chmod(mode)
    return path


# --- finding 8: a key others could know -----------------------------------------------------------------

@pytest.mark.parametrize("content,mode,says", [
    (secrets.token_hex(32).encode(), 0o644, "only you can read"),
    (b"a" * 40, 0o600, "not a siqa signing key"),
    (b"a" * 64, 0o600, "not a siqa signing key"),
    (secrets.token_hex(16).encode(), 0o600, "not a siqa signing key"),  # a machine-id: 32 hex digits
], ids=["mode 0644", "40 times a", "64 times a", "32 hex digits"])
def test_a_key_others_can_read_or_guess_is_refused(tmp_path, monkeypatch, capsys, run_folder, content, mode, says):
    monkeypatch.setenv("SIQA_KEY_FILE", str(_key(tmp_path, content, mode)))
    assert says in _one_line(capsys, "trust", "--run", run_folder)
    assert not (run_folder / "siqa-run.json").exists()


def test_etc_machine_id_is_not_a_key(monkeypatch, capsys, run_folder):
    if not Path("/etc/machine-id").is_file():
        pytest.skip("no /etc/machine-id here")
    monkeypatch.setenv("SIQA_KEY_FILE", "/etc/machine-id")
    _one_line(capsys, "trust", "--run", run_folder)


def test_the_key_siqa_makes_is_accepted(tmp_path, monkeypatch, capsys, run_folder):
    monkeypatch.setenv("SIQA_KEY_FILE", str(tmp_path / "fresh" / "key"))
    cli.main(["trust", "--run", str(run_folder)])
    assert "signed with your key" in capsys.readouterr().out


# --- finding 10 -----------------------------------------------------------------------------------------

def test_a_binary_key_file(tmp_path, monkeypatch, capsys, run_folder):
    monkeypatch.setenv("SIQA_KEY_FILE", str(_key(tmp_path, bytes(range(256)) * 2)))
    assert "not a siqa signing key" in _one_line(capsys, "trust", "--run", run_folder)


def test_a_home_that_cannot_hold_the_key(monkeypatch, capsys, run_folder):
    monkeypatch.delenv("SIQA_KEY_FILE")
    monkeypatch.setenv("HOME", "/proc/nonexistent")
    assert "/proc/nonexistent/.config/siqa/key: cannot read or create" in _one_line(capsys, "trust", "--run", run_folder)


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
