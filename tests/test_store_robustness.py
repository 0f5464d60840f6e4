"""Killed runs, concurrent runs and determinism of the feature store, with real processes.

"The same store" throughout: for every extractor folder and level, the same set of keys with the same
values, each key in exactly one row, no temporary files left, and the same `pairs.parquet` and
`views.json` bytes. Shard boundaries may differ after a kill (a resumed run batches what was left), so
shard names are compared only between uninterrupted runs, where they must be identical too.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openpyxl
import pyarrow.parquet as pq
import pytest
from PIL import Image
from store_worker import extractors

from featurestore.datasets import load_pairs
from featurestore.sql import query
from featurestore.store import FeatureStore

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "store_worker.py"
N_REFS, PER_REF = 6, 4  # 24 pairs, 30 distinct images; train = first 3 references


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """SeIQA layout, 16 train + 8 test pairs of tiny random images; each reference file is repeated
    under every name that uses it (as in SeIQA), so it is one sha256 decoded once."""
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("robust") / "data"
    labels = []
    k = 0
    for r in range(N_REFS):
        split = "Train" if r < 4 else "Test"
        ref = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
        for level in range(PER_REF):
            k += 1
            name = f"{k:06d}.png"
            dist = np.clip(ref + rng.normal(0, 8 * (level + 1), ref.shape), 0, 255).astype(np.uint8)
            for sub, img in (("Ref", ref), ("Dist", dist)):
                (root / split / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / split / sub / name)
            if split == "Train":
                labels.append((name, level + 1))
    wb = openpyxl.Workbook()
    wb.active.append(["name", "score"])
    for row in labels:
        wb.active.append(list(row))
    wb.save(root / "Train" / "Train_scores.xlsx")
    return root


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> dict:
    """An uninterrupted run, in this process, counting its atomic renames."""
    store = tmp_path_factory.mktemp("reference") / "store"
    renames = []
    real_replace = os.replace

    def counting_replace(src, dst):
        renames.append(Path(dst).name)
        real_replace(src, dst)

    os.replace = counting_replace
    try:
        summary = FeatureStore(store).extract(load_pairs(data), extractors(), progress=False, chunk_pairs=2)
    finally:
        os.replace = real_replace
    assert not summary.failures
    return {"store": store, "snapshot": snapshot(store), "renames": renames, "computed": dict(summary.computed)}


def snapshot(root: Path) -> dict:
    """Everything that defines the store's content, independent of shard boundaries."""
    assert not temp_files(root), temp_files(root)
    out = {"pairs.parquet": (root / "pairs.parquet").read_bytes(), "views.json": (root / "views.json").read_bytes()}
    for folder in sorted((root / "features").glob("*/*")):
        rows = whole_shards(folder)
        out[f"{folder.parent.name}/{folder.name}"] = rows
    return out


def whole_shards(folder: Path) -> dict:
    """key -> row values over every shard of `folder`; every shard must read whole, every key once."""
    rows = {}
    for shard in FeatureStore.shards(folder):
        table = pq.read_table(shard)
        for row in table.to_pylist():
            key = row.pop(table.column_names[0])
            assert key not in rows, f"duplicate key {key} in {folder}"
            rows[key] = row
    return rows


def temp_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name.endswith(".tmp"))


def worker(data: Path, store: Path, *args: str, sleep: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "TOY_SLEEP": str(sleep), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(WORKER), "--data", str(data), "--store", str(store), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def resume(data: Path, store: Path):
    return FeatureStore(store).extract(load_pairs(data), extractors(), progress=False, chunk_pairs=2)


def shard_count(store: Path) -> int:
    return len(list((store / "features").glob("*/*/part-*.parquet"))) if (store / "features").is_dir() else 0


def test_uninterrupted_runs_are_byte_identical(data, reference, tmp_path):
    """Same data, same extractors: same files, same names, same bytes (pairs.parquet, views.json, shards),
    in this process and in another one (whose string hashing, hence set order, differs). timings.json is
    a log of measured seconds, not content, and is left out like the lock file."""
    resume(data, tmp_path / "again")
    proc = worker(data, tmp_path / "elsewhere")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err

    def files(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and p.name not in (".lock", "timings.json")}

    first = files(reference["store"])
    for other in ("again", "elsewhere"):
        second = files(tmp_path / other)
        assert list(first) == list(second)
        assert first == second
    # and the work matches the data: 30 distinct images, 24 pairs, each computed once
    assert reference["computed"] == {"toymean/image": N_REFS * (PER_REF + 1), "toymean/pair": 24,
                                     "toymse/pair": 24}


KILL_POINTS = [(when, position) for position in ("pairs.parquet", "views.json", "first shard", "middle shard",
                                                  "last shard", "timings.json", "pixels.json")
               for when in ("during", "before", "after")]


@pytest.mark.slow
@pytest.mark.parametrize("when,position", KILL_POINTS)
def test_killed_inside_each_write_then_resumed_gives_the_same_store(data, reference, tmp_path, when, position):
    """SIGKILL inside the N-th atomic write: with half its bytes written ("during"), with its temp file
    whole and fsynced but not renamed ("before"), or just renamed ("after"). No partial file is ever
    visible, and a rerun completes to the same store."""
    renames = reference["renames"]  # the store's marker first: a new store; the two logs last
    assert renames[:3] == ["siqa-store.json", "pairs.parquet", "views.json"]
    assert renames[-2:] == ["timings.json", "pixels.json"]  # measured seconds, and which pixels each file decoded to
    assert all(n.startswith("part-") for n in renames[3:-2])
    n_shards = len(renames) - 5
    n = {"pairs.parquet": 2, "views.json": 3, "first shard": 4, "middle shard": len(renames) // 2,
         "last shard": len(renames) - 2, "timings.json": len(renames) - 1, "pixels.json": len(renames)}[position]
    store = tmp_path / "store"
    proc = worker(data, store, f"--die-{when}", str(n))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    # What the kill left: whole shards only, each key once; a temp file unless the rename happened.
    for folder in (store / "features").glob("*/*"):
        whole_shards(folder)
    committed = n if when == "after" else n - 1
    assert shard_count(store) == min(max(0, committed - 3), n_shards)
    assert len(temp_files(store)) == (when != "after")
    if committed >= 2:
        pq.read_table(store / "pairs.parquet")
    if committed >= 3:
        json.loads((store / "views.json").read_text())
    summary = resume(data, store)
    assert not summary.failures
    assert snapshot(store) == reference["snapshot"]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_the_same_store(data, reference, tmp_path):
    """A real `kill -9` at a random moment of a slowed-down run, three times over, then a rerun."""
    seed = random.SystemRandom().randrange(10**6)
    rng = random.Random(seed)
    store = tmp_path / "store"
    interrupted = 0
    for _ in range(3):
        before = shard_count(store)
        proc = worker(data, store, sleep=0.04)
        deadline = time.monotonic() + 60
        while shard_count(store) == before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # wait until this run is storing work
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        interrupted += proc.returncode == -signal.SIGKILL
        for folder in (store / "features").glob("*/*"):
            whole_shards(folder)  # whole shards, no key twice, whatever the moment
    assert interrupted >= 1, f"no kill landed mid-run (seed {seed})"
    resume(data, store)
    assert snapshot(store) == reference["snapshot"], f"seed {seed}"


@pytest.mark.slow
def test_two_concurrent_runs_and_a_reader_do_not_corrupt_the_store(data, reference, tmp_path):
    """Two workers at once on one store (train and test, so both must register their pairs) while this
    process keeps querying it: the lock serialises the writers, every key is computed once in all, and
    the reader never sees a partial file."""
    store = tmp_path / "store"
    procs = [worker(data, store, "--splits", split, sleep=0.02) for split in ("train", "test", "train,test")]
    reads = 0
    while any(p.poll() is None for p in procs):
        if (store / "pairs.parquet").exists() and (store / "views.json").exists():
            query(store, "SELECT count(*) AS n FROM features")
            reads += 1
        time.sleep(0.05)
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    total = {}
    for r in results:
        for key, n in r["computed"].items():
            total[key] = total.get(key, 0) + n
    assert total == reference["computed"]  # nothing computed twice, nothing lost
    assert reads > 0
    assert snapshot(store) == reference["snapshot"]


@pytest.fixture
def photo_pairs(tmp_path) -> Path:
    """48 test pairs of real photos (scikit-image), 128x96, with graded noise and blur."""
    from conftest import photo
    from PIL import ImageFilter

    rng = np.random.default_rng(3)
    root = tmp_path / "photos"
    for sub in ("Ref", "Dist"):
        (root / "Test" / sub).mkdir(parents=True)
    k = 0
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        ref = photo(name, 128)
        for level in range(12):
            k += 1
            dist = Image.fromarray(np.clip(ref + rng.normal(0, 2 * level, ref.shape), 0, 255).astype(np.uint8))
            Image.fromarray(ref).save(root / "Test" / "Ref" / f"{k:04d}.png")
            dist.filter(ImageFilter.GaussianBlur(level / 4)).save(root / "Test" / "Dist" / f"{k:04d}.png")
    return root


@pytest.mark.slow
def test_siqa_features_killed_and_rerun_equals_an_uninterrupted_run(tmp_path, photo_pairs, capsys):
    """End to end through the command line with real offline extractors: `siqa features` SIGKILLed at a
    random moment after it started storing, then run again, gives the store an uninterrupted run gives."""
    import cli

    config = tmp_path / "offline_small.toml"
    config.write_text("[extractors.frequency]\n[extractors.colour]\n")
    args = ["features", "--data", str(photo_pairs), "--config", str(config), "--quiet"]
    cli.main(args + ["--store", str(tmp_path / "whole")])  # uninterrupted, in this process
    seed = random.SystemRandom().randrange(10**6)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "cli", *args, "--store", str(killed)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while shard_count(killed) == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(random.Random(seed).uniform(0.0, 0.05))
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"run ended before the kill (seed {seed}): {err[-500:]}"
    cli.main(args + ["--store", str(killed)])  # the rerun
    assert "computed" in capsys.readouterr().out
    assert snapshot(killed) == snapshot(tmp_path / "whole"), f"seed {seed}"


@pytest.mark.parametrize("damage", ["shard", "pairs.parquet", "views.json"])
def test_a_damaged_store_file_is_named_in_one_line(data, reference, tmp_path, damage):
    """Writes are atomic, so only damage from outside can leave a bad file: the error names it and says
    how to recover, instead of a traceback from pyarrow or json."""
    import shutil

    from featurestore.errors import SiqaError

    store = tmp_path / "store"
    shutil.copytree(reference["store"], store)
    victim = {"shard": min((store / "features").glob("*/image/part-*.parquet")),
              "pairs.parquet": store / "pairs.parquet", "views.json": store / "views.json"}[damage]
    victim.write_bytes(victim.read_bytes()[:40])
    with pytest.raises(SiqaError) as info:
        resume(data, store)
    message = str(info.value)
    assert message.startswith(f"{victim}: unreadable") and "\n" not in message and "delete it" in message
    victim.unlink()  # the advice works
    resume(data, store)
    assert snapshot(store) == reference["snapshot"]


def test_store_path_that_is_a_file(data, tmp_path):
    from featurestore.errors import SiqaError

    (tmp_path / "store").write_text("not a folder")
    with pytest.raises(SiqaError, match="store: cannot use as a feature store"):
        resume(data, tmp_path / "store")
