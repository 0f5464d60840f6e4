"""One settings object, validated once (issue 24): the schema walked key by key, every shipped config and
preset valid, and each typo a user makes refused with one line naming the file and the key, before any work."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import cli
from blend import run as run_module
from blend.calibrators import CALIBRATORS
from blend.methods import METHODS
from blend.schema import schema_rows
from blend.settings import BlendSettings, load_settings, settings_from
from configs import config_file
from featurestore.errors import SiqaError
from featurestore.extractors import EXTRACTORS
from tabular.models import POOL
from tabular.settings import MetaSettings, presets

ROOT = Path(__file__).resolve().parents[1]
CSIQ = Path(__file__).resolve().parents[2] / "shared" / "data" / "tabular" / "csiq.csv"


# --- the schema ---------------------------------------------------------------------------------------

def test_every_key_of_the_schema_has_a_type_and_a_meaning():
    rows = schema_rows()
    assert all(row["type"] and row["meaning"] for row in rows), [r for r in rows if not r["meaning"]]
    sections = {row["section"] for row in rows}
    assert {f"extractors.{name}" for name in EXTRACTORS.names()} <= sections
    assert {"tabular", "tabular.meta", "tabular.blend", "tabular.pool.<member>"} <= sections
    assert {f"tabular.pool.<member> with model = {name!r}" for name in POOL.names()} <= sections
    assert {"method", "cap", "top_k", "rounds", "anchors", "temperature"} <= {r["key"] for r in rows
                                                                              if r["section"] == "tabular.blend"}


@pytest.mark.parametrize("model", [*(cls.Settings for _, cls in EXTRACTORS.items()),
                                   *(cls.Settings for _, cls in POOL.items()), MetaSettings, BlendSettings])
def test_every_default_is_valid_under_its_own_schema(model):
    defaults = model()
    assert model.model_validate(defaults.model_dump()) == defaults


def test_every_registered_name_is_accepted():
    for name in POOL.names():
        settings = settings_from({"tabular": {"pool": {"member": {"model": name}}}}).tabular
        assert settings.pool["member"].model == name
    for method in [*METHODS.names(), "auto"]:
        assert settings_from({"tabular": {"blend": {"method": method}}}).tabular.blend.method == method
    for calibrator in [*CALIBRATORS.names(), "auto"]:
        assert settings_from({"tabular": {"blend": {"calibration": calibrator}}}).tabular.blend.calibration == calibrator
    assert list(settings_from({"extractors": {n: {"enabled": False} for n in EXTRACTORS.names()}}).extractors) \
        == EXTRACTORS.names()


@pytest.mark.parametrize("path", [config_file("default.toml"), config_file("offline.toml")])
def test_the_shipped_configs_are_valid(path):
    settings = load_settings(path)
    assert settings.source == str(path) and settings.extractors


@pytest.mark.parametrize("preset", presets())
def test_every_preset_is_valid(preset):
    assert load_settings(tabular={"preset": preset}).tabular.preset == preset


def test_settings_are_typed_and_frozen():
    settings = load_settings(config_file("offline.toml")).tabular
    assert isinstance(settings.folds, int) and settings.blend.method == "top"
    with pytest.raises(Exception, match="frozen"):
        settings.folds = 7


# --- what a user with a typo sees -----------------------------------------------------------------------

TYPOS = [
    ({"tabular": {"blend": {"method": "gredy"}}},
     r"^cfg.toml: \[tabular.blend\] method = 'gredy': unknown blend method 'gredy' \(known: .*\); did you mean "
     r"'greedy'\?$"),
    ({"extractors": {"colour": {"enabled": "false"}}},
     r"^cfg.toml: \[extractors.colour\] enabled = 'false': must be true or false$"),
    ({"extractorz": {"colour": {}}},
     r"^cfg.toml: \[extractorz\]: unknown section \(allowed: extractors, tabular\); did you mean 'extractors'\?$"),
    ({"extractors": {"colur": {}}},
     r"^cfg.toml: \[extractors.colur\]: unknown extractor \(known: .*\); did you mean 'colour'\?$"),
    ({"tabular": {"blend": {"top_k": 0}}},
     r"^cfg.toml: \[tabular.blend\] top_k = 0: Input should be greater than or equal to 1$"),
    ({"tabular": {"folds": 3.5}}, r"^cfg.toml: \[tabular\] folds = 3.5: Input should be a valid integer$"),
    ({"tabular": {"time_limit": -5}}, r"^cfg.toml: \[tabular\] time_limit = -5: Input should be greater than 0$"),
    ({"tabular": {"folds": 2}}, r"^cfg.toml: \[tabular\] folds = 2: Input should be greater than or equal to 3$"),
    ({"tabular": {"preset": "fats"}}, r"^cfg.toml: \[tabular\] preset = 'fats': unknown preset \(known: .*fast"),
    ({"tabular": {"meta": {"alphas": [0.1, -1.0]}}}, r"^cfg.toml: \[tabular.meta\] alphas = \[0.1, -1.0\]: alphas "
                                                      r"must all be > 0$"),
    ({"tabular": {"pool": {"catboost": {"depth": "6"}}}},
     r"^cfg.toml: \[tabular.pool.catboost\] depth = '6': Input should be a valid integer$"),
    ({"tabular": {"pool": {"lightgbm": {"learning_rate": 3}}}},
     r"^cfg.toml: \[tabular.pool.lightgbm\] learning_rate = 3: Input should be less than or equal to 1$"),
    ({"extractors": {"imagenet": {"resize": "stretch"}}},
     r"^cfg.toml: \[extractors.imagenet\] resize = 'stretch': Input should be 'keep', 'pad', 'crop' or 'squash'$"),
    ({"extractors": {"formula": {"metrics": ["psnr", "nonsense"]}}},
     r"^cfg.toml: \[extractors.formula\] metrics\[1\] = 'nonsense': Input should be 'psnr', "),
    ({"extractors": {"regions": {"model": "efficientnet-lite9"}}},
     r"^cfg.toml: \[extractors.regions\] model = 'efficientnet-lite9': unknown regions model .*; did you mean "),
    ({"extractors": {"faces": {"scale_factor": 1}}},
     r"^cfg.toml: \[extractors.faces\] scale_factor = 1: Input should be greater than 1$"),
]


@pytest.mark.parametrize("config, message", TYPOS, ids=[m[6:40] for _, m in TYPOS])
def test_a_typo_is_one_line_naming_the_file_and_the_key(config, message):
    with pytest.raises(SiqaError, match=message):
        settings_from(config, "cfg.toml")


def _no_fitting(*args, **kwargs):
    raise AssertionError("fitting started before the settings were checked")


def test_oof_refuses_a_bad_config_before_reading_or_fitting_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run_module, "NestedCV", _no_fitting)
    config = tmp_path / "bad.toml"
    config.write_text('[tabular.blend]\nmethod = "gredy"\n')
    with pytest.raises(SystemExit) as exit_:
        cli.main(["oof", "--table", str(tmp_path / "never-read.csv"), "--label", "dmos", "--group", "image",
                  "--config", str(config), "--run", str(tmp_path / "run")])
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"siqa: error: {config}: [tabular.blend] method = 'gredy': unknown "
                                               f"blend method") and err[0].endswith("did you mean 'greedy'?"), err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv", [["--label", "image", "--group", "image"]])
def test_the_label_cannot_be_the_group(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["oof", "--table", str(CSIQ), *argv, "--run", str(tmp_path / "run")])
    assert exit_.value.code == 2
    assert "--label and --group both name 'image'" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["features", "--data", "nowhere"], ["weights"], ["doctor"], ["config", "show"]])
def test_every_config_reading_command_refuses_the_same_typo(tmp_path, capsys, command):
    config = tmp_path / "bad.toml"
    config.write_text("[extractors.colour]\nenabled = \"false\"\n")
    with pytest.raises(SystemExit) as exit_:
        cli.main([*command, "--config", str(config)])
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip() == \
        f"siqa: error: {config}: [extractors.colour] enabled = 'false': must be true or false"


def test_a_config_that_is_not_utf8_is_one_line(tmp_path):
    config = tmp_path / "latin1.toml"
    config.write_bytes('# caf\xe9\n[tabular]\nfolds = 5\n'.encode("latin-1"))
    with pytest.raises(SiqaError, match=r"latin1.toml: not UTF-8 text"):
        load_settings(config)


def test_config_show_prints_the_validated_settings_and_schema_lists_every_key():
    show = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "config", "show", "--config",
                           str(config_file("offline.toml"))], capture_output=True, text=True, cwd=ROOT, check=True)
    import json

    shown = json.loads(show.stdout)
    assert shown["tabular"]["blend"]["method"] == "top" and shown["extractors"]["formula"]["folder"].startswith("formula-v")
    schema = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "config", "schema"], capture_output=True,
                            text=True, cwd=ROOT, check=True).stdout
    for row in schema_rows():
        assert f"  {row['key']} (" in schema
