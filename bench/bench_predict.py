"""What scoring one pair costs with a fitted run: `siqa.load` once, then a cached pair (every feature already
in the store), a new pair (features computed), many pairs; and `siqa predict` from the shell against the
start-up of the command line itself (`siqa --version`).

    python bench/bench_predict.py [RUN]      # default: builds a small run (demo data, colour + frequency)

The goal (issue 13): a cached single-pair predict well under a second beyond Python start-up. A cached pair
is scored by the run's compiled pipeline (numpy programs, `blend.compiled`) when the run has one; the table
says which path scored it. The new pair pays for building the extractors and loading the pickled pipeline.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = """
[extractors.colour]
[extractors.frequency]
[tabular]
preset = "fast"
"""


def build_run(tmp: Path) -> Path:
    from blend.run import run_oof
    from blend.settings import load_settings
    from featurestore.config import build_extractors
    from featurestore.datasets import load_pairs
    from featurestore.datasets.demo import make_demo_dataset
    from featurestore.store import FeatureStore
    from tabular.data import TabularData

    make_demo_dataset(tmp / "data", progress=False)
    (tmp / "bench.toml").write_text(CONFIG)
    config = load_settings(tmp / "bench.toml")
    FeatureStore(tmp / "store").extract(load_pairs(tmp / "data"), build_extractors(config.extractors), progress=False)
    run_oof(TabularData.from_store(tmp / "store"), config, tmp / "run", progress=False)
    return tmp / "run"


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def shell(*args) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], check=True, capture_output=True,
                   env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - t0


def main() -> None:
    import siqa
    from featurestore.store import FeatureStore

    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        run = Path(sys.argv[1]) if len(sys.argv) > 1 else build_run(tmp)
        built = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = siqa.load(run)
        loaded = time.perf_counter() - t0
        pairs = FeatureStore(model.store).pairs()
        test = pairs[pairs.split == "test"].head(8)
        ref, dist = test.ref_path.iloc[0], test.dist_path.iloc[0]
        path = model.score_files([(ref, dist)]).path
        cached, _ = timed(lambda: model.score(ref, dist), 5)
        pixels = np.asarray(Image.open(ref).convert("RGB")), np.asarray(Image.open(dist).convert("RGB"))
        cached_pixels, _ = timed(lambda: model.score(*pixels), 5)
        many, _ = timed(lambda: model.score(list(test.ref_path), list(test.dist_path)), 3)
        rng = np.random.default_rng(int(time.time()))  # new pixels every run: never in the store
        fresh = np.clip(pixels[0] + rng.normal(0, 20, pixels[0].shape), 0, 255).astype(np.uint8)
        new, _ = timed(lambda: model.score(pixels[0], fresh), 1)
        startup = statistics.median(shell("--version") for _ in range(3))
        cli = statistics.median(shell("predict", "--run", run, "--ref", ref, "--dist", dist, "--quiet") for _ in range(3))
    print(f"run: {run} ({'given' if len(sys.argv) > 1 else f'built in {built:.1f}s'}); extractors: "
          f"{', '.join(model.folders)}; {len(model.summary['members'])} pool members; cached pairs scored by "
          f"the {'compiled pipeline' if path == 'compiled' else 'full pipeline'}")
    rows = [("siqa.load(run)", loaded), ("cached pair, paths", cached), ("cached pair, numpy arrays", cached_pixels),
            (f"{len(test)} cached pairs, one call", many), ("new pair (features computed)", new),
            ("`siqa --version` (start-up)", startup), ("`siqa predict` cached pair", cli),
            ("  beyond start-up", cli - startup)]
    for what, seconds in rows:
        print(f"{what:34s} {seconds:8.3f} s")


if __name__ == "__main__":
    main()
