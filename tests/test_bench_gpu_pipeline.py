"""`make bench-gpu` (bench/bench_gpu_pipeline.py): its pairs are of SeIQA size, and the whole script runs on the
CPU (--cpu --tiny) through every extractor configs/default.toml enables. Not timed: the figures come from a GPU."""
from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import bench_gpu_pipeline as bench  # noqa: E402


def test_pairs_have_seiqa_sizes_and_one_degradation(tmp_path):
    shapes = []
    for index in range(6):
        ref_path, dist_path = bench.write_pair((tmp_path, 0, index, "full"))
        ref, dist = np.asarray(Image.open(ref_path)), np.asarray(Image.open(dist_path))
        assert ref.shape == dist.shape and ref.dtype == np.uint8 and not np.array_equal(ref, dist)
        h, w = ref.shape[:2]
        assert 512 <= max(h, w) <= 1024
        assert min(abs(max(h, w) / min(h, w) - a) for a in bench.ASPECTS) < 0.02
        shapes.append((h, w))
    assert len(set(shapes)) > 1
    # deterministic: the same seed and index write the same pixels
    (tmp_path / "again").mkdir()
    again, _ = bench.write_pair((tmp_path / "again", 0, 0, "full"))
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(tmp_path / "00000_ref.png")))


@pytest.mark.slow
def test_cpu_smoke_run_covers_the_default_extractors(tmp_path, capsys):
    out = tmp_path / "result.json"
    assert bench.main(["--cpu", "--tiny", "--pairs", "2", "--workers", "1", "--workdir", str(tmp_path / "work"),
                       "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    with open(ROOT / "configs" / "default.toml", "rb") as handle:
        enabled = [n for n, t in tomllib.load(handle)["extractors"].items() if t.get("enabled", True)]
    assert result["extractors"] == enabled and result["pairs"] == 2 and not result["failures"]
    for name in enabled:  # every level of every extractor computed every key: 4 distinct images, 2 pairs
        levels = [k for k in result["computed"] if k.startswith(f"{name}/")]
        assert levels and all(result["computed"][k] == (4 if k.endswith("/image") else 2) for k in levels), name
    assert {result["devices"][name] for name in enabled} == {"cpu"}
    assert result["batch_sizes"]["clip"] == 32 and result["batch_sizes"]["lpips"] == 8  # the CPU's fixed batches
    assert result["pairs_per_s"] > 0 and result["gpu_busy_fraction"] is None
    assert "pairs/s" in capsys.readouterr().out
