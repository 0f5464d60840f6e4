"""What `siqa explain` costs beside `siqa predict`: new pairs scored and explained in one process, models warm.

Each pair is a JPEG of `--ref` with one random pixel nudged, so its features are not in the run's store yet
(they are added to it, as `siqa predict` does). Prints per pair the seconds of scoring, and of explaining
(features + group attributions + map), and what the per-feature split adds.

    python bench/bench_explain_cost.py --run runs/demo --ref demo/data/Test/Ref/000100.png [--pairs 5]
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import siqa  # noqa: E402
from blend.explain import RunExplainer, run_mapper  # noqa: E402
from blend.run import load_run  # noqa: E402
from featurestore.datasets import PairTable  # noqa: E402
from featurestore.semantic_map import decoded_pair  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--ref", required=True, help="a reference image (ideally one the run's store holds)")
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng()
    rgb = np.asarray(Image.open(args.ref).convert("RGB"))
    with tempfile.TemporaryDirectory(prefix="siqa-bench-explain-") as tmp:
        def new_image() -> str:
            buffer = io.BytesIO()
            Image.fromarray(rgb).save(buffer, format="JPEG", quality=int(rng.integers(10, 90)))
            image = np.array(Image.open(buffer).convert("RGB"))
            image[int(rng.integers(image.shape[0])), int(rng.integers(image.shape[1]))] = rng.integers(0, 256, 3)
            path = Path(tmp) / f"{rng.integers(1 << 40):x}.png"
            Image.fromarray(image).save(path)
            return str(path)

        model, run = siqa.load(args.run), load_run(args.run)
        groups_only = RunExplainer(run, model.store, per_feature=False)
        per_feature = RunExplainer(run, model.store, per_feature=True)
        mapper = run_mapper(run)
        rows = []
        for i in range(args.pairs + 1):  # the first pair loads the models: not counted
            started = time.perf_counter()
            model.score_files([(args.ref, new_image())])
            score = time.perf_counter() - started
            started = time.perf_counter()
            data, _ = model.features(PairTable.from_paths([(args.ref, new_image())], split="test"), progress=False)
            features = time.perf_counter() - started
            groups_only.attributions(data, progress=False)
            groups = time.perf_counter() - started - features
            mapper.map(decoded_pair(str(data.pairs["ref_path"].iloc[0]), str(data.pairs["dist_path"].iloc[0])))
            explain = time.perf_counter() - started
            per_feature.attributions(data, progress=False)
            split = time.perf_counter() - started - explain
            if i:
                rows.append((score, explain, features, groups, explain - features - groups, split))
                print(f"score {score:.2f}s | explain {explain:.2f}s = features {features:.2f} + group attributions "
                      f"{groups:.2f} + map {explain - features - groups:.2f} | per-feature split {split:.2f}s", flush=True)
    score, explain, _, groups, _, split = np.median(rows, axis=0)
    print(f"median of {len(rows)} new pairs: score {score:.2f}s, explain {explain:.2f}s ({explain / score:.2f}x), "
          f"with the per-feature split {explain - groups + split:.2f}s ({(explain - groups + split) / score:.2f}x)")


if __name__ == "__main__":
    main()
