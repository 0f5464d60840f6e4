"""`--backend ray` against `--backend local`: same keys, values, shard names, summaries; resume across backends."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


from featurestore.config import build_extractors, extractor_settings, read_toml
from featurestore.datasets import load_pairs
from featurestore.errors import SiqaError
from featurestore.extractors.base import Column, Extractor
from featurestore.ray_backend import extract_with_ray, plan_resources
from featurestore.store import FeatureStore
import toy_extractors
from toy_extractors import ToyMean, ToyMse

OFFLINE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "offline.toml"


class BatchStats(ToyMean):
    """ToyMean in batches of 3, plus a batch-size column, which exposes any difference in batching."""

    name = "raytest_stats"
    default_config = {**ToyMean.default_config, "batch_size": 3}

    def image_columns(self):
        return super().image_columns() + [Column("batch_len")]

    def compute_images(self, images):
        return {**super().compute_images(images), "batch_len": np.full(len(images), float(len(images)))}


class PairError(ToyMse):
    """ToyMse in batches of 2; fails on every batch holding a pair of `fail_on` (a reference sha256)."""

    name = "raytest_mse"
    default_config = {**ToyMse.default_config, "batch_size": 2}


class NeedsWeights(PairError):
    name = "raytest_weights"

    def compute_pairs(self, pairs):
        raise SiqaError("/nowhere/model.pt: weights not found")


class DiesOnce(PairError):
    """Kills its worker process at its first batch holding a pair of `die_on`, unless `marker` exists."""

    default_config = {**PairError.default_config, "die_on": "", "marker": ""}

    def compute_pairs(self, pairs):
        marker = Path(self.config["marker"])
        if not marker.exists() and any(p.ref.sha256 == self.config["die_on"] for p in pairs):
            marker.touch()
            os._exit(1)
        return super().compute_pairs(pairs)


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    # Workers cannot import this test module by name: ship its extractor classes by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.cloudpickle.register_pickle_by_value(toy_extractors)
    yield ray
    ray.shutdown()


def store_content(root, drop: str = "") -> dict:
    """Per extractor folder and level: shard names and {key: row values} (without column `drop`)."""
    out = {}
    for folder in sorted((root / "features").glob("*/*")):
        shards = FeatureStore.shards(folder)
        if not shards:  # made by a worker killed before its first shard landed (its temp file aside): holds nothing
            continue
        table = FeatureStore(root).read(folder)
        key = table.column_names[0]
        rows = {r[key]: {c: v for c, v in r.items() if c not in (key, drop)} for r in table.to_pylist()}
        out[f"{folder.parent.name}/{folder.name}"] = ([s.name for s in shards], rows)
    return out


def extractors(fail_on=""):
    return [BatchStats(), PairError(fail_on=fail_on)]


def test_ray_matches_local(ray, tmp_path, seiqa_dir):
    # A corrupt degraded image and a batch that raises: both backends must report and skip the same things;
    # a degraded image of another size: both must resize it alike.
    (seiqa_dir / "Train" / "Dist" / "000002.png").write_bytes(b"not a png")
    smaller = seiqa_dir / "Test" / "Dist" / "000007.png"
    Image.open(smaller).resize((40, 30)).save(smaller)
    table = load_pairs(seiqa_dir)
    fail_on = table.df.ref_sha256.iloc[-1]
    local = FeatureStore(tmp_path / "local").extract(table, extractors(fail_on), progress=False, chunk_pairs=3)
    remote = extract_with_ray(tmp_path / "ray", table, extractors(fail_on), progress=False, chunk_pairs=3)
    assert remote.computed == local.computed and remote.cached == local.cached
    assert remote.failures == local.failures
    assert remote.resized_pairs == local.resized_pairs == 1
    assert str(seiqa_dir / "Train" / "Dist" / "000002.png") in remote.failures
    assert any("planted failure" in why for why in remote.failures.values())
    # 10 distinct images minus the corrupt one, each computed once though the references span chunks.
    assert remote.computed["raytest_stats/image"] == 9
    local_content, ray_content = store_content(tmp_path / "local"), store_content(tmp_path / "ray")
    assert list(ray_content) == list(local_content) and len(ray_content) == 3
    for where, (shards, rows) in local_content.items():
        assert ray_content[where][0] == shards, where
        assert ray_content[where][1] == rows, where


def test_a_ray_built_store_has_timings(ray, tmp_path, seiqa_dir):
    """timings.json (the runtime `siqa submit` declares) is kept by the store for every backend."""
    table = load_pairs(seiqa_dir)
    FeatureStore(tmp_path / "local").extract(table, extractors(), progress=False)
    extract_with_ray(tmp_path / "ray", table, extractors(), progress=False)
    local, remote = FeatureStore(tmp_path / "local").timings(), FeatureStore(tmp_path / "ray").timings()
    assert set(remote) == set(local) == {"decode/image"} | {f"{ex.folder}/{level}" for ex in extractors()
                                                            for level in ex.levels}
    for name, measured in local.items():
        assert remote[name]["seconds"] > 0
        if name != "decode/image":  # each Ray chunk decodes its own images: a shared reference more than once
            assert remote[name]["items"] == measured["items"], name
    assert FeatureStore(tmp_path / "ray").seconds_per_pair([ex.folder for ex in extractors()]) > 0


def offline_extractors() -> list[Extractor]:
    """The formula, frequency and colour extractors as configs/offline.toml sets them, formula without its
    slowest metrics (and no ImageNet model: its actor start alone would double the test's time)."""
    tables = read_toml(OFFLINE_CONFIG)["extractors"]
    tables = {name: tables[name] for name in ("formula", "frequency", "colour")}
    tables["formula"] = {**tables["formula"], "metrics": ["psnr", "ssim", "gmsd", "vif"]}
    return build_extractors(extractor_settings(tables, str(OFFLINE_CONFIG)))


def test_offline_extractors_match_local(ray, tmp_path, seiqa_dir):
    table = load_pairs(seiqa_dir)
    local = FeatureStore(tmp_path / "local").extract(table, offline_extractors(), progress=False)
    remote = extract_with_ray(tmp_path / "ray", table, offline_extractors(), progress=False)
    assert remote.computed == local.computed and remote.failures == local.failures
    local_content, ray_content = store_content(tmp_path / "local"), store_content(tmp_path / "ray")
    assert list(ray_content) == list(local_content)
    assert {f.split("-")[0] for f in local_content} == {"formula", "frequency", "colour"}
    for where, (_, rows) in local_content.items():
        assert ray_content[where][1].keys() == rows.keys(), where
        for key, values in rows.items():
            for column, value in values.items():
                # Torch's CPU kernels split reductions by thread count, and a Ray worker runs with its CPU
                # share of threads: float32 rounding may differ (about 1e-6); equal thread counts give equal bits.
                np.testing.assert_allclose(np.asarray(ray_content[where][1][key][column], dtype=float),
                                           np.asarray(value, dtype=float), rtol=1e-4, atol=1e-5,
                                           err_msg=f"{where} {key} {column}")


def test_ray_resumes_a_local_store(ray, tmp_path, seiqa_dir):
    train = load_pairs(seiqa_dir, splits=["train"])
    everything = load_pairs(seiqa_dir)
    FeatureStore(tmp_path / "mixed").extract(train, extractors(), progress=False)
    resumed = extract_with_ray(tmp_path / "mixed", everything, extractors(), progress=False)
    # Only the two test pairs were missing: their two new degraded images (references are shared).
    assert resumed.computed == {"raytest_stats/image": 2, "raytest_stats/pair": 2, "raytest_mse/pair": 2}
    assert resumed.cached["raytest_mse/pair"] == 6
    again = extract_with_ray(tmp_path / "mixed", everything, extractors(), progress=False)
    assert not again.computed and again.cached["raytest_mse/pair"] == 8
    FeatureStore(tmp_path / "local").extract(everything, extractors(), progress=False)
    # Same keys and values as one local run, except `batch_len`: the resumed run batched other images together.
    mixed, local = (store_content(tmp_path / name, drop="batch_len") for name in ("mixed", "local"))
    assert {k: v[1] for k, v in mixed.items()} == {k: v[1] for k, v in local.items()}


def test_a_dead_worker_loses_nothing(ray, tmp_path, seiqa_dir):
    table = load_pairs(seiqa_dir)
    dies = DiesOnce(die_on=table.df.ref_sha256.iloc[-1], marker=str(tmp_path / "died"))
    with pytest.raises(SiqaError, match=r"^--backend ray: raytest_mse on chunk .* run again to resume$"):
        extract_with_ray(tmp_path / "ray", table, [dies], progress=False, chunk_pairs=2)
    kept = FeatureStore(tmp_path / "ray").keys(FeatureStore(tmp_path / "ray").folder(dies, "pair"), "pair_id")
    assert 0 < len(kept) < len(table)  # the shards written before the death survive, whole
    resumed = extract_with_ray(tmp_path / "ray", table, [dies], progress=False, chunk_pairs=2)
    assert resumed.computed["raytest_mse/pair"] == len(table) - len(kept)
    FeatureStore(tmp_path / "local").extract(table, [PairError()], progress=False)
    assert ([rows for _, rows in store_content(tmp_path / "ray").values()]
            == [rows for _, rows in store_content(tmp_path / "local").values()])


def test_worker_siqa_error_comes_back_as_one_line(ray, tmp_path, seiqa_dir):
    with pytest.raises(SiqaError, match=r"^/nowhere/model.pt: weights not found$"):
        extract_with_ray(tmp_path / "store", load_pairs(seiqa_dir), [NeedsWeights()], progress=False)


def test_without_ray_stops_with_one_line(monkeypatch, tmp_path, seiqa_dir):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(SiqaError) as err:
        extract_with_ray(tmp_path / "store", load_pairs(seiqa_dir), extractors(), progress=False)
    assert "\n" not in str(err.value) and "pip install '.[ray]'" in str(err.value)
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("resources", [{"CPU": 1.0}, {"CPU": 2.0}, {"CPU": 16.0, "GPU": 1.0}, {"CPU": 64.0, "GPU": 8.0}])
def test_resource_plan_fits_the_cluster(resources):
    gpu = [type(name, (PairError,), {"name": name})(device="cuda") for name in ("raytest_gpu1", "raytest_gpu2")]
    cpu = [BatchStats(), PairError()]
    chosen = cpu + (gpu if resources.get("GPU") else [])
    plans, decode_cpus = plan_resources(chosen, resources)
    assert set(plans) == {ex.name for ex in chosen}
    cpus = sum(p.replicas * p.options.get("num_cpus", 0) for p in plans.values())
    gpus = sum(p.replicas * p.options.get("num_gpus", 0) for p in plans.values())
    assert 0 < decode_cpus and cpus + decode_cpus <= resources["CPU"] and gpus <= resources.get("GPU", 0)
    assert all(p.replicas >= 1 for p in plans.values())
    if resources.get("GPU"):
        assert all(plans[ex.name].replicas == resources["GPU"] for ex in gpu)


def test_cuda_extractor_on_a_cluster_without_gpu_stops_before_work():
    with pytest.raises(SiqaError, match="raytest_mse run"):
        plan_resources([PairError(device="cuda")], {"CPU": 8.0})
