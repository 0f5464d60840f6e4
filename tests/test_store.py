import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestore.datasets import load_pairs
from featurestore.sql import connect, query
from featurestore.store import FeatureStore
from toy_extractors import ToyMean, ToyMse


def test_extract_caches_images_and_resumes(tmp_path, seiqa_dir):
    table = load_pairs(seiqa_dir)
    store = FeatureStore(tmp_path / "store")
    ToyMean.calls.clear()
    s1 = store.extract(table, [ToyMean(), ToyMse()], progress=False)
    # 2 distinct references shared by 8 pairs + 8 degraded images = 10 distinct images, each encoded once.
    assert sum(ToyMean.calls) == 10
    assert s1.computed["toymean/image"] == 10
    assert s1.computed["toymean/pair"] == 8 and s1.computed["toymse/pair"] == 8
    s2 = store.extract(table, [ToyMean(), ToyMse()], progress=False)
    assert sum(ToyMean.calls) == 10 and not s2.computed
    assert s2.cached["toymse/pair"] == 8
    df = query(store.root, "SELECT name, label, toymean_delta, toymse_mse, toymean_absdiff FROM features ORDER BY name")
    assert len(df) == 8 and df.toymse_mse.gt(0).all()
    assert df.label.notna().sum() == 6
    assert len(df.toymean_absdiff.iloc[0]) == 3


def test_config_change_gets_new_folder(tmp_path, seiqa_dir):
    table = load_pairs(seiqa_dir)
    store = FeatureStore(tmp_path / "store")
    store.extract(table, [ToyMean(scale=1.0)], progress=False)
    store.extract(table, [ToyMean(scale=2.0)], progress=False)
    folders = sorted(p.name for p in (store.root / "features").iterdir())
    assert len(folders) == 2 and all(f.startswith("toymean-v1-") for f in folders)


def test_renaming_files_costs_nothing(tmp_path, seiqa_dir):
    store = FeatureStore(tmp_path / "store")
    store.extract(load_pairs(seiqa_dir), [ToyMse()], progress=False)
    for sub in ("Ref", "Dist"):
        (seiqa_dir / "Test" / sub / "000007.png").rename(seiqa_dir / "Test" / sub / "renamed.png")
    s = store.extract(load_pairs(seiqa_dir), [ToyMse()], progress=False)
    assert not s.computed


def test_dense_columns_are_fixed_size_lists_and_sql_arrays(tmp_path, seiqa_dir):
    store = FeatureStore(tmp_path / "store")
    store.extract(load_pairs(seiqa_dir), [ToyMean()], progress=False)
    shard = FeatureStore.shards(store.root / "features" / ToyMean().folder / "image")[0]
    mean_type = pq.read_schema(shard).field("mean").type
    assert pa.types.is_fixed_size_list(mean_type) and mean_type.list_size == 3
    assert mean_type.value_type == pa.float32()
    con = connect(store.root)
    sims = con.execute("""SELECT array_cosine_similarity(r.mean, d.mean) AS c FROM pairs p
                          JOIN toymean_image r ON r.sha256 = p.ref_sha256
                          JOIN toymean_image d ON d.sha256 = p.dist_sha256""").fetchall()
    assert len(sims) == 8 and all(0.9 < s[0] <= 1.0 + 1e-6 for s in sims)


def test_bad_image_is_reported_and_others_extracted(tmp_path, seiqa_dir):
    (seiqa_dir / "Test" / "Dist" / "000007.png").write_bytes(b"not a png")
    store = FeatureStore(tmp_path / "store")
    s = store.extract(load_pairs(seiqa_dir), [ToyMse()], progress=False)
    assert s.computed["toymse/pair"] == 7
    assert any("000007.png" in k for k in s.failures)


def test_failing_extractor_batch_is_reported(tmp_path, seiqa_dir):
    class Broken(ToyMse):
        name = "brokentest"

        def compute_pairs(self, pairs):
            raise ValueError("boom")

    s = FeatureStore(tmp_path / "store").extract(load_pairs(seiqa_dir), [Broken()], progress=False)
    assert not s.computed and any("boom" in v for v in s.failures.values())


def test_timings_give_a_measured_seconds_per_pair(tmp_path, seiqa_dir):
    store = FeatureStore(tmp_path / "store")
    mean, mse = ToyMean(), ToyMse()
    store.extract(load_pairs(seiqa_dir), [mean, mse], progress=False)
    timings = store.timings()
    assert timings["decode/image"]["items"] == 10
    assert timings[f"{mean.folder}/image"]["items"] == 10 and timings[f"{mse.folder}/pair"]["items"] == 8
    per_pair = store.seconds_per_pair([mean.folder, mse.folder])
    expected = (2 * timings["decode/image"]["seconds"] / 10 + 2 * timings[f"{mean.folder}/image"]["seconds"] / 10
                + timings[f"{mean.folder}/pair"]["seconds"] / 8 + timings[f"{mse.folder}/pair"]["seconds"] / 8)
    assert per_pair == pytest.approx(expected) and per_pair > 0
    # a warm rerun computes nothing and leaves the measurements alone
    store.extract(load_pairs(seiqa_dir), [mean, mse], progress=False)
    assert store.timings() == timings
    # features that exist but were never timed here (e.g. copied in) make the estimate unknown
    store.timings_path.unlink()
    assert store.seconds_per_pair([mean.folder]) is None
