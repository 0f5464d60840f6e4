"""Missing is loud (issue 23, finding 9): a pair without its features is refused by submit as by oof (counts per
extractor, `--allow-missing` to go on), an input that is not a regular file is refused at once instead of
hanging or vanishing from the submission, and a label column named like a DMOS warns without --lower-better."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from toy_run import CONFIG, build_run, toy_extractors  # noqa: F401 (module-scoped autouse fixture)
import cli
from blend.run import load_run
from blend.submission import read_submission
from featurestore.store import FeatureStore

ROOT = Path(__file__).resolve().parents[1]


def _siqa(*args) -> int:
    try:
        cli.main([str(a) for a in args])
    except SystemExit as exit_:
        return exit_.code or 0
    return 0


@contextmanager
def at_once(seconds: int = 30):
    """Fail instead of hanging: what once blocked forever (a FIFO, /dev/zero) must answer within `seconds`."""
    def hung(*_):
        raise TimeoutError(f"still running after {seconds}s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("loud"))


def _drop_rows(store: Path, folder: str, pair_ids: set[str]) -> None:
    """Lose the feature rows of `pair_ids` in one pair-level feature folder (what a damaged store looks like)."""
    catalog = FeatureStore(store)
    where = store / "features" / folder / "pair"
    table = catalog.read(where)
    kept = table.filter(pc.invert(pc.is_in(table.column(0), pa.array(sorted(pair_ids), pa.string()))))
    for shard in catalog.shards(where):
        shard.unlink()
    catalog.write_shard(where, kept)


def test_submit_refuses_test_pairs_that_lost_their_feature_rows(toy, tmp_path, capsys, caplog):
    store = tmp_path / "store"
    shutil.copytree(toy["store"], store)
    pairs = FeatureStore(store).pairs()
    lost = set(pairs[pairs.split == "test"].pair_id[:2])
    n_test = int((pairs.split == "test").sum())
    _drop_rows(store, load_run(toy["run"]).summary["source"]["origin"]["folders"]["toymse"], lost)
    out = tmp_path / "s.zip"
    capsys.readouterr()
    assert _siqa("submit", "--run", toy["run"], "--store", store, "--out", out, "--quiet") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"test pairs without features from toymse (2 of {n_test})" in err
    assert "--allow-missing" in err and not out.exists()
    assert _siqa("submit", "--run", toy["run"], "--store", store, "--out", out, "--quiet", "--allow-missing") == 0
    assert f"toymse (2 of {n_test})" in caplog.text
    table, _ = read_submission(out)
    assert len(table) == n_test  # every test pair of the dataset, the two scored with toymse missing


@pytest.mark.parametrize("kind", ["fifo", "device", "dangling link"])
def test_an_input_that_is_not_a_regular_file_is_refused_at_once(toy, tmp_path, kind):
    """Finding 10: `predict --dist /dev/zero` or a FIFO hung forever (in a hashing thread: so in a process of
    its own here, which a timeout can end)."""
    path = tmp_path / "dist.png"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path = Path("/dev/zero")
    else:
        path.symlink_to(tmp_path / "nothing.png")
    ref = next((toy["data"] / "Test" / "Ref").iterdir())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "predict", "--run", str(toy["run"]),
                           "--ref", str(ref), "--dist", str(path), "--quiet"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    expected = {"fifo": "not a regular file (a FIFO)", "device": "not a regular file (a character device)",
                "dangling link": "a link to nothing (dangling)"}[kind]
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert f"{path}: " in done.stderr and expected in done.stderr


@pytest.mark.parametrize("kind", ["fifo", "dangling link"])
def test_a_test_picture_that_is_not_a_regular_file_stops_features_instead_of_vanishing(toy, tmp_path, capsys, kind):
    """Finding 9: test pairs whose files were FIFOs or dangling links vanished, and the zip of the rest passed."""
    data = tmp_path / "data"
    shutil.copytree(toy["data"], data)
    name = sorted((data / "Test" / "Dist").iterdir())[0].name
    victims = [data / "Test" / "Ref" / name, data / "Test" / "Dist" / name]  # the whole pair: no partner left over
    for victim in victims:
        victim.unlink()
        if kind == "fifo":
            os.mkfifo(victim)
        else:
            victim.symlink_to(tmp_path / "gone.png")
    with at_once():
        assert _siqa("features", "--data", data, "--store", tmp_path / "store", "--config", toy["config"],
                     "--quiet") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(victims[0]) in err


def _dmos_table(path: Path) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(48, 3)), columns=["a", "b", "c"])
    frame["DMOS"] = frame.a + rng.normal(0, 0.3, 48)
    frame["ref"] = np.repeat(np.arange(8), 6)
    frame.to_csv(path, index=False)
    return path


def test_a_label_named_like_a_dmos_without_lower_better_warns(tmp_path, capsys, monkeypatch):
    from blend import run as run_module

    def stop(*_, **__):  # the warning comes before any fitting; nothing more is needed here
        raise SystemExit(0)

    monkeypatch.setattr(run_module, "run_oof", stop)
    table = _dmos_table(tmp_path / "t.csv")
    args = ("oof", "--table", table, "--label", "DMOS", "--group", "ref", "--run", tmp_path / "run", "--quiet")
    _siqa(*args)
    assert "label column 'DMOS' reads as lower = better quality" in capsys.readouterr().err
    _siqa(*args, "--lower-better")
    assert "lower = better" not in capsys.readouterr().err


def test_a_pairs_table_with_a_dmos_column_warns_when_read(toy, tmp_path, caplog):
    from featurestore.datasets import load_pairs

    pairs = load_pairs(toy["data"]).df
    table = tmp_path / "pairs.csv"
    pd.DataFrame({"ref_name": pairs.ref_path, "dist_name": pairs.dist_path, "dmos": pairs.label}).to_csv(table, index=False)
    load_pairs(table, allow_outside_root=True)
    assert "labels from column 'dmos', where lower reads as better quality" in caplog.text
