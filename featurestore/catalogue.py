"""What `siqa extractors` prints: every registered extractor with its columns, config keys and defaults, and
what one new pair costs on this machine.

The cost comes from a store's `timings.json` (seconds measured while `siqa features` ran there, decode
included) when that store has timed the extractor's default-config folder; otherwise, with `measure`, from
extracting two small demo pairs into a throw-away store and timing the second (the first loads the model).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from .errors import SiqaError
from .extractors import EXTRACTORS, Extractor


def _columns(ex: Extractor) -> str:
    def one(c):
        return f"{c.name}[{c.dim}]" if c.dim else c.name

    pair = [one(c) for c in ex.pair_columns()]
    image = [one(c) for c in ex.image_columns()]
    return ", ".join(pair) + (f"  (image level: {', '.join(image)})" if image else "")


def _demo_pairs(folder: Path) -> list[tuple[str, str]]:
    """Two 256x256 (reference, noisy copy) pairs from photos that ship with scikit-image."""
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(0)
    pairs = []
    for i, photo in enumerate((data.astronaut(), data.coffee())):
        ref = np.asarray(Image.fromarray(photo).resize((256, 256)))
        dist = np.clip(ref + rng.normal(0, 12, ref.shape), 0, 255).astype(np.uint8)
        paths = [folder / f"ref{i}.png", folder / f"dist{i}.png"]
        Image.fromarray(ref).save(paths[0])
        Image.fromarray(dist).save(paths[1])
        pairs.append((str(paths[0]), str(paths[1])))
    return pairs


def measure_seconds_per_pair(ex: Extractor) -> float:
    """Wall seconds of decoding and extracting one new demo pair, after a first pair has warmed it up."""
    from .datasets import PairTable
    from .store import FeatureStore

    with tempfile.TemporaryDirectory(prefix="siqa-measure-") as tmp:
        first, second = _demo_pairs(Path(tmp))
        store = FeatureStore(Path(tmp) / "store")
        store.extract(PairTable.from_paths([first]), [ex], progress=False)
        started = time.perf_counter()
        summary = store.extract(PairTable.from_paths([second]), [ex], progress=False)
        seconds = time.perf_counter() - started
    if summary.failures:
        raise SiqaError(f"{ex.name}: {sorted(summary.failures.values())[0]}")
    return seconds


def describe_extractors(store_root=None, measure: bool = False) -> list[dict]:
    """One dict per registered extractor: name, version, level, columns, config (defaults), runtime keys,
    weights (ok / missing), seconds_per_pair and where that figure comes from."""
    from .store import FeatureStore
    from .weights import check_weights

    store = FeatureStore(store_root) if store_root and Path(store_root).is_dir() else None
    rows = []
    for name in EXTRACTORS.names():
        ex = EXTRACTORS.get(name)()
        sources = check_weights([ex], strict=False)
        missing = [s.what for s in sources if s.found is None]
        seconds, origin = None, "not measured (pass --measure, or run `siqa features` into --store)"
        timed = store.seconds_per_pair([ex.folder]) if store is not None else None
        if timed is not None and (store.timings().get(f"{ex.folder}/pair") or store.timings().get(f"{ex.folder}/image")):
            seconds, origin = timed, f"{store.timings_path}"
        elif measure and missing:
            origin = "not measured: weights missing"
        elif measure:
            try:
                seconds, origin = measure_seconds_per_pair(ex), "measured now on a 256x256 demo pair"
            except SiqaError as exc:
                origin = f"measurement failed: {exc}"
        try:
            columns = _columns(ex)
        except SiqaError as exc:  # an extractor whose columns depend on its model (the VLM's tokenizer)
            columns = f"known once its weights load ({str(exc).splitlines()[0]})"
        rows.append({"name": name, "version": ex.version, "level": ex.level, "columns": columns,
                     "config": dict(ex.default_config), "runtime_keys": list(ex.runtime_keys),
                     "weights": "missing: " + "; ".join(missing) if missing else "ok",
                     "seconds_per_pair": seconds, "cost_source": origin})
    return rows


def format_extractors(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        cost = f"{r['seconds_per_pair']:.3f} s/pair" if r["seconds_per_pair"] is not None else "?"
        lines.append(f"{r['name']} (v{r['version']}, {r['level']} level) - {cost} [{r['cost_source']}]")
        lines.append(f"  columns: {r['columns']}")
        config = ", ".join(f"{k} = {v!r}" + (" (runtime)" if k in r["runtime_keys"] else "")
                           for k, v in r["config"].items()) or "-"
        lines.append(f"  config keys (defaults): {config}")
        lines.append(f"  weights: {r['weights']}")
    return "\n".join(lines)
