"""`--backend ray` against `--backend local` on one machine: pairs/s, and that nothing is lost or changed.

Builds a demo dataset (real photos, `siqa demo-data`), extracts it into two fresh stores, once with the
local store and once through a Ray session started here, and prints the throughput of each and the
comparison: same extractor folders and keys, and the largest difference of any value. On a 2-core machine
Ray cannot be faster (its workers share the same cores and each imports the models again); the point is
that the results are the same. `python bench/bench_ray.py --help` for the knobs.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blend.settings import load_settings

from featurestore.config import build_extractors
from featurestore.datasets import load_pairs
from featurestore.datasets.demo import make_demo_dataset
from featurestore.errors import SiqaError
from featurestore.ray_backend import extract_with_ray, import_ray
from featurestore.store import FeatureStore


def store_values(root: Path) -> dict[str, dict[str, dict]]:
    """extractor folder/level -> key -> {column: value}."""
    out = {}
    for folder in sorted((root / "features").glob("*/*")):
        table = FeatureStore(root).read(folder)
        key = table.column_names[0]
        out[f"{folder.parent.name}/{folder.name}"] = {r.pop(key): r for r in table.to_pylist()}
    return out


def largest_difference(a: dict, b: dict) -> float:
    worst = 0.0
    for key, row in a.items():
        for column, value in row.items():
            x, y = np.asarray(value, dtype=float), np.asarray(b[key][column], dtype=float)
            if not np.array_equal(np.isnan(x), np.isnan(y)):
                return float("inf")
            if x.size and not np.isnan(x).all():
                worst = max(worst, float(np.nanmax(np.abs(x - y))))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=24, help="demo train pairs")
    parser.add_argument("--test", type=int, default=8, help="demo test pairs")
    parser.add_argument("--size", type=int, default=256, help="demo image long side")
    parser.add_argument("--config", default=str(ROOT / "configs" / "offline.toml"))
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs Ray may use")
    args = parser.parse_args()
    ray = import_ray()
    config = load_settings(args.config)

    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        tmp = Path(tmp)
        make_demo_dataset(tmp / "data", n_train=args.train, n_val=0, n_test=args.test, size=args.size)
        table = load_pairs(tmp / "data")
        n = len(table)

        t0 = time.perf_counter()
        local = FeatureStore(tmp / "local").extract(table, build_extractors(config.extractors), progress=False)
        local_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        init_s = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            remote = extract_with_ray(tmp / "ray", table, build_extractors(config.extractors), progress=False)
            ray_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            resumed = extract_with_ray(tmp / "ray", table, build_extractors(config.extractors), progress=False)
            resume_s = time.perf_counter() - t0
        finally:
            ray.shutdown()

        a, b = store_values(tmp / "local"), store_values(tmp / "ray")
        print(f"{n} pairs of {args.size}px demo photos, extractors: {', '.join(config['extractors'])}; "
              f"Ray on {args.cpus} CPU(s); 1-min load average at the end {os.getloadavg()[0]:.1f}")
        print(f"{'backend':<24}{'seconds':>10}{'pairs/s':>10}")
        print(f"{'local':<24}{local_s:>10.1f}{n / local_s:>10.2f}")
        print(f"{'ray (session running)':<24}{ray_s:>10.1f}{n / ray_s:>10.2f}")
        print(f"{'ray (+ ray.init)':<24}{ray_s + init_s:>10.1f}{n / (ray_s + init_s):>10.2f}")
        print(f"{'ray rerun (all cached)':<24}{resume_s:>10.1f}")
        same = list(a) == list(b) and all(a[f].keys() == b[f].keys() for f in a)
        print(f"same folders and keys: {same}; computed equal: {remote.computed == local.computed}; "
              f"failures equal: {remote.failures == local.failures}; rerun computed nothing: {not resumed.computed}")
        for folder in a:
            if folder in b:
                print(f"  {folder:<36} rows {len(a[folder]):>5}  largest |ray - local| "
                      f"{largest_difference(a[folder], b[folder]):.3g}")
        ok = same and remote.computed == local.computed and not resumed.computed
        return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SiqaError as exc:
        print(f"bench_ray: {exc}", file=sys.stderr)
        sys.exit(2)
