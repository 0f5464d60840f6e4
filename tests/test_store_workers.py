"""The parallel executor (`featurestore.store.workers`): worker processes of one thread store exactly what one
process stores; a dead worker, a worker's error and an extractor that cannot travel are handled; CPUs and
threads are counted and pinned through the libraries' own settings."""
from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytest
from conftest import fresh_python
from PIL import Image

from featurestore.config import build_extractors, extractor_settings, read_toml
from featurestore.datasets import load_pairs
from featurestore.devices import wants_gpu
from featurestore.errors import SiqaError
from featurestore.store import FeatureStore
from featurestore.store.workers import ProcessExecutor
from featurestore.threads import cgroup_quota, pin_threads, thread_budget, threads_at_most, usable_cpus
from test_ray_backend import DiesOnce, NeedsWeights, PairError, extractors, store_content

OFFLINE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "offline.toml"


def offline_extractors():
    """Every extractor of configs/offline.toml, formula without its slowest metrics."""
    tables = read_toml(OFFLINE_CONFIG)["extractors"]
    tables["formula"] = {**tables["formula"], "metrics": ["psnr", "ssim", "gmsd", "vif"]}
    return build_extractors(extractor_settings(tables, str(OFFLINE_CONFIG)))


def assert_same_content(got: dict, want: dict) -> None:
    """`store_content` of two stores: the same folders, shard names and keys, and values equal to the bit (NaN
    where NaN)."""
    assert list(got) == list(want)
    for where, (shards, rows) in want.items():
        assert got[where][0] == shards, where
        assert got[where][1].keys() == rows.keys(), where
        for key, values in rows.items():
            for column, value in values.items():
                np.testing.assert_array_equal(got[where][1][key][column], value, err_msg=f"{where} {key} {column}")


def test_workers_store_the_bytes_one_process_stores(tmp_path, seiqa_dir):
    # Every offline extractor (torch, onnxruntime, OpenCV, numpy), a corrupt image and a resized pair: shard names,
    # keys and values equal to the bit, because every CPU extractor computes on one thread in either executor.
    (seiqa_dir / "Train" / "Dist" / "000002.png").write_bytes(b"not a png")
    smaller = seiqa_dir / "Test" / "Dist" / "000007.png"
    Image.open(smaller).resize((40, 30)).save(smaller)
    table = load_pairs(seiqa_dir)
    one = FeatureStore(tmp_path / "one").extract(table, offline_extractors(), progress=False, chunk_pairs=3)
    two = FeatureStore(tmp_path / "two").extract(table, offline_extractors(), progress=False, chunk_pairs=3,
                                                 workers=2)
    assert two.computed == one.computed and two.failures == one.failures and two.cached == one.cached
    assert two.resized_pairs == one.resized_pairs == 1
    assert str(seiqa_dir / "Train" / "Dist" / "000002.png") in two.failures
    assert set(two.compute_seconds) == set(one.compute_seconds)
    one_content, two_content = store_content(tmp_path / "one"), store_content(tmp_path / "two")
    assert {f.split("-")[0] for f in one_content} == {"formula", "frequency", "colour", "imagenet", "text",
                                                     "regions", "faces"}
    assert_same_content(two_content, one_content)
    for name in ("timings.json", "pixels.json", "views.json"):
        assert (tmp_path / "two" / name).is_file(), name


def test_the_store_picks_workers_only_where_there_is_work_to_spread(tmp_path, seiqa_dir, monkeypatch):
    chosen = []
    monkeypatch.setattr(ProcessExecutor, "run", lambda self, *a: chosen.append(self.workers))
    table = load_pairs(seiqa_dir)
    FeatureStore(tmp_path / "a").extract(table, [PairError()], progress=False, workers=4)  # one chunk, one task
    assert chosen == []
    FeatureStore(tmp_path / "b").extract(table, extractors(), progress=False, chunk_pairs=2, workers=4)
    assert chosen == [4]
    FeatureStore(tmp_path / "c").extract(table, extractors(), progress=False, workers=1)
    assert chosen == [4]


def test_one_task_in_this_process_gets_the_workers_as_its_thread_budget(tmp_path, seiqa_dir):
    """With a single task there is nothing to spread over processes: the task runs here, torch on one
    thread, and an extractor that splits its work (formula's pieces) may use the CPUs the run was given."""
    seen = []

    class Budget(PairError):
        def compute_pairs(self, pairs):
            import torch
            seen.append((thread_budget(), torch.get_num_threads()))
            return super().compute_pairs(pairs)

    table = load_pairs(seiqa_dir)
    FeatureStore(tmp_path / "a").extract(table, [Budget()], progress=False, workers=3)
    assert set(seen) == {(3, 1)}
    seen.clear()
    FeatureStore(tmp_path / "b").extract(table, [Budget()], progress=False)  # workers=1: the API default
    assert set(seen) == {(1, 1)}


class DiesAfterAShard(DiesOnce):
    """DiesOnce, but only once another worker has stored one of its shards under `store` (so a shard surely
    exists before the death, whatever the order the workers ran in)."""

    default_config = {**DiesOnce.default_config, "store": ""}

    def compute_pairs(self, pairs):
        if not Path(self.config["marker"]).exists() and any(p.ref.sha256 == self.config["die_on"] for p in pairs):
            deadline = time.monotonic() + 60
            while not list(Path(self.config["store"]).glob("features/raytest_mse*/pair/part-*.parquet")):
                assert time.monotonic() < deadline, "no shard of the other chunks within a minute"
                time.sleep(0.05)
        return super().compute_pairs(pairs)


def test_a_dead_worker_is_one_line_and_loses_nothing(tmp_path, seiqa_dir):
    table = load_pairs(seiqa_dir)
    dies = DiesAfterAShard(die_on=table.df.ref_sha256.iloc[-1], marker=str(tmp_path / "died"),
                           store=str(tmp_path / "s"))
    assert table.df.ref_sha256.iloc[-1] not in set(table.df.ref_sha256.iloc[:2])  # not in the first chunk
    with pytest.raises(SiqaError, match=r"^a feature worker process died .* resumes from it .*\)$"):
        FeatureStore(tmp_path / "s").extract(table, [dies, extractors()[0]], progress=False, chunk_pairs=2,
                                             workers=2)
    store = FeatureStore(tmp_path / "s")
    kept = store.keys(store.folder(dies, "pair"), "pair_id")
    assert 0 < len(kept) < len(table)  # the shards written before the death survive, whole
    resumed = store.extract(table, [dies], progress=False, chunk_pairs=2, workers=2)
    assert resumed.computed["raytest_mse/pair"] == len(table) - len(kept)
    FeatureStore(tmp_path / "one").extract(table, [PairError()], progress=False)
    [resumed_rows] = [rows for k, (_, rows) in store_content(tmp_path / "s").items() if k.startswith("raytest_mse")]
    [(_, rows)] = store_content(tmp_path / "one").values()
    assert resumed_rows == rows


def test_a_workers_siqa_error_comes_back_as_one_line(tmp_path, seiqa_dir):
    with pytest.raises(SiqaError, match=r"^/nowhere/model.pt: weights not found$"):
        FeatureStore(tmp_path / "s").extract(load_pairs(seiqa_dir), [NeedsWeights(), extractors()[0]],
                                             progress=False, workers=2)


def test_an_extractor_that_cannot_travel_computes_here(tmp_path, seiqa_dir):
    class Local(PairError):  # a class inside a function: a worker cannot import it
        name = "local_mse"

    table = load_pairs(seiqa_dir)
    summary = FeatureStore(tmp_path / "s").extract(table, [Local(), extractors()[0]], progress=False,
                                                   chunk_pairs=3, workers=2)
    assert summary.computed["local_mse/pair"] == len(table) and not summary.failures


def test_gpu_extractors_are_those_whose_device_is_cuda_or_auto_with_a_gpu():
    assert not wants_gpu(PairError())  # device = "cpu"
    assert wants_gpu(PairError(device="cuda:1"))
    assert wants_gpu(PairError(device="auto"), gpus=1) and not wants_gpu(PairError(device="auto"), gpus=0)
    assert not wants_gpu(extractors()[0])  # no device setting at all


def _threads() -> dict:
    import cv2
    import torch
    from threadpoolctl import threadpool_info

    return {"torch": torch.get_num_threads(), "interop": torch.get_num_interop_threads(),
            "cv2": cv2.getNumThreads(), "pools": {p["num_threads"] for p in threadpool_info()}}


def test_a_worker_runs_every_library_on_one_thread():
    with ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=pin_threads, initargs=(1,)) as pool:
        assert pool.submit(_threads).result() == {"torch": 1, "interop": 1, "cv2": 1, "pools": {1}}


def test_the_main_process_gets_its_threads_back():
    before = _threads()
    with threads_at_most(1):
        assert _threads()["torch"] == 1 and _threads()["cv2"] == 1
    assert _threads() == before


_SIDE_BY_SIDE_PROBE = """
from concurrent.futures import ThreadPoolExecutor
from threadpoolctl import threadpool_info
from featurestore.threads import side_by_side, threads_at_most

def openmp():  # the calling thread's count in each OpenMP runtime loaded (here: torch's only)
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"]

with threads_at_most(1, budget=2):
    with ThreadPoolExecutor(1) as plain:
        print(plain.submit(openmp).result())
    with side_by_side(2) as pool:
        print(sorted({n for counts in pool.map(lambda _: openmp(), range(4)) for n in counts}))
"""


def test_threads_side_by_side_start_at_the_torch_threads_of_their_maker():
    """OpenMP's thread count is per thread: a plain pool's fresh thread starts at one per core (an MKL product as
    its first operation ran on every core); `side_by_side` threads start at torch's count of the maker. In a fresh
    interpreter, where torch's OpenMP runtime is the only one (a test run may load LightGBM's first, and torch then
    shares it)."""
    plain, side_by_side = fresh_python("import torch\n" + _SIDE_BY_SIDE_PROBE, timeout=120).splitlines()[-2:]
    assert side_by_side == "[1]"
    if usable_cpus() > 1:
        assert plain != "[1]"  # what the initializer is for (one CPU: nothing to see)


def test_fewer_gil_switches_for_a_block_then_as_before():
    import sys

    from featurestore.threads import fewer_gil_switches

    before = sys.getswitchinterval()
    with fewer_gil_switches(0.03):
        assert sys.getswitchinterval() == pytest.approx(0.03)
    assert sys.getswitchinterval() == before
    with pytest.raises(KeyError), fewer_gil_switches(0.03):
        raise KeyError
    assert sys.getswitchinterval() == before


@pytest.mark.parametrize("files, quota", [
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),
    ({}, None),
])
def test_cgroup_quota_v1_and_v2(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_quota(tmp_path) == quota


def test_usable_cpus_is_bounded_by_affinity_and_quota(monkeypatch):
    from featurestore import threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "cgroup_quota", lambda: None)
    assert threads.usable_cpus() == 4
    monkeypatch.setattr(threads, "cgroup_quota", lambda: 1.5)
    assert threads.usable_cpus() == 2


def test_features_cli_takes_workers(tmp_path, seiqa_dir):
    from click.testing import CliRunner

    from cli import app

    config = tmp_path / "c.toml"
    config.write_text("[extractors.frequency]\nenabled = true\n[extractors.colour]\nenabled = true\n")
    result = CliRunner().invoke(app, ["features", "--data", str(seiqa_dir), "--store", str(tmp_path / "s"),
                                      "--config", str(config), "--workers", "2", "-q"])
    assert result.exit_code == 0, result.output
    assert "colour/pair                  computed" in result.output
    refused = CliRunner().invoke(app, ["features", "--data", str(seiqa_dir), "--config", str(config),
                                       "--workers", "0"])
    assert refused.exit_code == 2 and "--workers" in refused.output


def test_a_decoded_image_travels_as_its_pixels_only():
    import pickle

    from featurestore.io import DecodedImage

    image = DecodedImage("abc", np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3), path="/x.png", decode_seconds=0.5)
    image.cached(("model_input", "clip"), lambda: object())  # not picklable: must not travel
    image.float01, image.luma  # noqa: B018 - derived representations, computed here
    copy = pickle.loads(pickle.dumps(image))
    assert (copy.sha256, copy.path, copy.decode_seconds) == ("abc", "/x.png", 0.5)
    np.testing.assert_array_equal(copy.rgb, image.rgb)
    assert copy._cache == {} and "float01" not in vars(copy) and "luma" not in vars(copy)
    np.testing.assert_array_equal(copy.luma, image.luma)

