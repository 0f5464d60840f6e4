"""What a new user meets first (issue 13): defaults that follow the run, scoring without ceremony, and the
command line's conventions (exit codes, --version, --out formats, piped SQL scripts, `siqa weights`)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from toy_run import CONFIG, build_run, toy_extractors  # noqa: F401 (module-scoped autouse fixture)
import siqa
from featurestore.errors import SiqaError
from featurestore.store import FeatureStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Path]:
    return build_run(tmp_path_factory.mktemp("defaults"))


def _test_pair(toy) -> tuple[str, str]:
    pairs = FeatureStore(toy["store"]).pairs()
    row = pairs[pairs.split == "test"].iloc[0]
    return row.ref_path, row.dist_path


def _cli(*args, cwd=ROOT, stdin=None, env=None):
    """`siqa ARGS` in a subprocess: its real exit status, stdout and stderr."""
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], cwd=cwd, input=stdin,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                          timeout=600)


# --- defaults that follow the run ----------------------------------------------------------------------

def test_predict_uses_the_run_s_own_store_from_anywhere(toy, tmp_path, monkeypatch, capsys):
    from cli import main

    summary = json.loads((toy["run"] / "run.json").read_text())
    assert summary["store"] == str(toy["store"].resolve()) and Path(summary["store"]).is_absolute()
    ref, dist = _test_pair(toy)
    monkeypatch.chdir(tmp_path)  # no ./store here: predict must not create one and recompute
    before = {p.name for p in (toy["store"] / "features").rglob("part-*.parquet")}
    main(["predict", "--run", str(toy["run"]), "--ref", ref, "--dist", dist])
    out = capsys.readouterr()
    assert not (tmp_path / "store").exists()
    assert "0 feature rows computed" in out.err
    assert {p.name for p in (toy["store"] / "features").rglob("part-*.parquet")} == before
    assert float(out.out) == pytest.approx(siqa.score(ref, dist, run=toy["run"]), abs=1e-4)


def test_oof_records_only_the_extractors_it_used_and_warns_about_the_others(toy, tmp_path, monkeypatch):
    from blend.run import run_oof, run_store
    from blend.settings import load_settings
    from tabular.data import TabularData

    config = tmp_path / "more.toml"
    config.write_text("[extractors.formula]\n" + CONFIG)  # enabled, but never computed into the toy store
    monkeypatch.chdir(toy["store"].parent)  # a relative --store, as a user types it
    summary = run_oof(TabularData.from_store("store"), load_settings(config), tmp_path / "run", progress=False)
    assert summary["store"] == str(toy["store"].resolve())
    assert run_store(tmp_path / "run") == toy["store"].resolve()
    assert run_store(tmp_path / "run", override="elsewhere") == Path("elsewhere")
    assert sorted(summary["extractors"]) == ["toymean", "toymse"]
    assert len(summary["warnings"]) == 1 and "formula" in summary["warnings"][0]
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["input"]["extractors"]
    assert sorted(recorded) == ["toymean", "toymse"]  # what predict will compute for a new pair


def test_oof_points_runs_latest_at_the_last_run(tmp_path, monkeypatch):
    from blend.run import point_latest, run_target

    monkeypatch.chdir(tmp_path)
    for name in ("first", "second"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        target, latest = run_target(Path("runs") / name)
        assert point_latest(target, latest) == Path("runs") / "latest"
        assert (tmp_path / "runs" / "latest").resolve() == (tmp_path / "runs" / name).resolve()
    real = tmp_path / "other" / "latest"
    real.mkdir(parents=True)
    assert point_latest(tmp_path / "other" / "x", real) is None and real.is_dir() and not real.is_symlink()


# --- scoring without ceremony --------------------------------------------------------------------------

def test_a_loaded_predictor_scores_paths_arrays_pil_images_and_tensors_alike(toy):
    import torch

    ref, dist = _test_pair(toy)
    model = siqa.load(toy["run"])
    expected = model.score(ref, dist)
    ref_rgb, dist_rgb = (np.asarray(Image.open(p).convert("RGB")) for p in (ref, dist))
    assert model.score(ref_rgb, dist_rgb) == pytest.approx(expected, abs=1e-9)
    assert model.score(Image.open(ref), Image.open(dist)) == pytest.approx(expected, abs=1e-9)
    tensors = [torch.from_numpy(x).permute(2, 0, 1).float() / 255 for x in (ref_rgb, dist_rgb)]
    assert model.score(*tensors) == pytest.approx(expected, abs=1e-9)
    many = model.score([ref_rgb, ref], [dist_rgb, dist])  # mixed kinds, many pairs
    np.testing.assert_allclose(many, [expected, expected], atol=1e-9)
    with pytest.raises(SiqaError, match="shape"):
        model.score(np.zeros((4, 4, 5), np.uint8), dist_rgb)


def test_predict_takes_folders_paired_by_name_and_seiqa_layouts(toy, tmp_path, capsys):
    from cli import main

    test = toy["data"] / "Test"
    main(["predict", "--run", str(toy["run"]), "--ref", str(test / "Ref"), "--dist", str(test / "Dist"), "--quiet"])
    by_folder = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert sorted(by_folder["name"]) == sorted(p.name for p in (test / "Dist").iterdir())
    out = tmp_path / "scores.json"
    main(["predict", "--run", str(toy["run"]), "--pairs", str(toy["data"]), "--out", str(out), "--quiet"])
    by_layout = pd.DataFrame(json.loads(out.read_text()))  # --out's extension picks the format
    from featurestore.datasets import load_pairs

    table = load_pairs(toy["data"]).df  # train names repeat in test: compare the test rows, in table order
    assert len(by_layout) == len(table)
    layout_test = by_layout[(table["split"] == "test").to_numpy()].sort_values("name")
    np.testing.assert_allclose(by_folder.sort_values("name")["score"], layout_test["score"], atol=1e-4)


# --- the command line's conventions --------------------------------------------------------------------

def test_exit_codes_version_and_output_formats(toy, tmp_path):
    assert _cli("--version").stdout.startswith("siqa ")
    usage = _cli("predict", "--run", toy["run"])
    assert usage.returncode == 2 and "Usage:" in usage.stderr  # the command line is wrong
    work = _cli("predict", "--run", tmp_path / "no-run", "--ref", "a.png", "--dist", "b.png")
    assert work.returncode == 1 and work.stderr.startswith("siqa: error: ")  # the work failed

    query = "SELECT split, count(*) AS n FROM pairs GROUP BY split ORDER BY split"
    csv = tmp_path / "x.csv"
    assert _cli("sql", "--store", toy["store"], "--out", csv, query).returncode == 0
    assert pd.read_csv(csv).columns.tolist() == ["split", "n"]  # CSV, not the printed table
    as_json = _cli("sql", "--store", toy["store"], "--format", "json", query)
    assert as_json.stdout.endswith("\n") and json.loads(as_json.stdout)[0]["split"] == "test"
    assert _cli("sql", "--store", toy["store"], "--out", tmp_path / "x.txt", query).returncode == 2

    script = "SELECT count(*) FROM pairs;\nSELECT * FROM no_such_view;\nSELECT 1;\n"
    piped = _cli("sql", "--store", toy["store"], stdin=script)
    assert piped.returncode == 1 and "no_such_view" in piped.stdout and "1 statement(s)" in piped.stderr
    assert _cli("sql", "--store", toy["store"], stdin="SELECT 1;\n").returncode == 0


def test_weights_exits_1_when_an_enabled_weight_is_missing(tmp_path):
    empty = {"SIQA_WEIGHTS_DIR": str(tmp_path), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf"),
             "TORCH_HOME": str(tmp_path / "torch"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    config = tmp_path / "clip.toml"
    config.write_text("[extractors.clip]\n")
    missing = _cli("weights", "--config", config, env=empty)
    assert missing.returncode == 1 and "MISSING" in missing.stdout and "weight(s) missing for enabled extractor(s)" in missing.stderr
    config.write_text("[extractors.clip]\nenabled = false\n[extractors.colour]\n")
    assert _cli("weights", "--config", config, env=empty).returncode == 0  # a disabled extractor may miss them


def test_extractors_and_config_show(toy):
    listing = _cli("extractors", "--store", toy["store"], "--json")
    rows = {r["name"]: r for r in json.loads(listing.stdout)}
    from featurestore.extractors import EXTRACTORS

    assert set(rows) >= {"formula", "colour", "frequency", "clip"} and set(rows) <= set(EXTRACTORS.names())
    assert rows["colour"]["columns"] and isinstance(rows["formula"]["config"], dict)
    shown = json.loads(_cli("config", "show", "--config", ROOT / "configs" / "offline.toml").stdout)
    assert "formula" in shown["extractors"] and shown["tabular"]["preset"]
    assert shown["extractors"]["formula"]["folder"].startswith("formula-v")
