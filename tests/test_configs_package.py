"""The shipped configs are package data: found through `importlib.resources`, inside the wheel, usable without
the source tree."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from configs import config_file

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.toml"))


def test_every_shipped_config_is_found_through_the_package():
    assert {"configs/default.toml", "configs/offline.toml", "configs/vlm_questions.toml",
            "configs/presets/default.toml", "configs/presets/fast.toml", "configs/presets/best.toml",
            "configs/presets/best-gpu.toml"} <= set(SHIPPED)
    for name in SHIPPED:
        assert config_file(name.removeprefix("configs/")).read_bytes() == (ROOT / name).read_bytes()


def test_code_reads_configs_through_the_one_lookup():
    from featurestore.config import DEFAULT_CONFIG
    from featurestore.extractors.vlm import DEFAULT_QUESTIONS
    from tabular.settings import PRESETS_DIR, presets

    assert DEFAULT_CONFIG == config_file("default.toml")
    assert DEFAULT_QUESTIONS == config_file("vlm_questions.toml")
    assert PRESETS_DIR == config_file("presets")
    assert presets() == ["best", "best-gpu", "default", "fast"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # --no-build-isolation: the build backend (setuptools) is already here and no index is needed.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT),
                    "-w", str(out)], check=True, cwd=out, env={**os.environ, "PIP_NO_INPUT": "1"})
    (path,) = out.glob("siqa-*.whl")
    return path


@pytest.mark.slow
def test_the_wheel_ships_every_config(wheel):
    members = set(zipfile.ZipFile(wheel).namelist())
    assert set(SHIPPED) <= members
    assert "configs/__init__.py" in members


@pytest.mark.slow
def test_configs_load_from_the_installed_wheel_without_the_source_tree(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:  # a wheel is a zip laid out as site-packages: unpacking installs it
        archive.extractall(site)
    probe = ("import configs, featurestore.config, tabular.settings\n"
             "for module in (configs, featurestore.config, tabular.settings):\n"
             "    assert module.__file__.startswith(%r), module.__file__\n"
             "from blend.settings import load_settings\n"
             "print(sorted(load_settings().extractors)[:1], load_settings(tabular={'preset': 'fast'}).tabular.folds)\n"
             % str(site))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    result = subprocess.run([sys.executable, "-c", probe],
                            cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "3"
