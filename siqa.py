"""Score new (reference, degraded) pairs with a fitted run.

    import siqa
    siqa.score("ref.png", "dist.png", run="runs/latest")            # -> 3.87 (0..5, higher = more meaning kept)
    model = siqa.load("runs/latest")                                # models stay loaded between calls
    model.score(ref_array, dist_array)                              # numpy HxWx3, PIL image, torch CxHxW or path
    model.score([a, b], [a_jpeg, b_crop])                           # many pairs -> numpy array

`load(run)` returns a `Predictor`; `score` and `predict_pairs` (what `siqa predict` calls, for a whole
`PairTable`) are one-call shorthands. The run says which extractors (and settings) it was fit on and which
store it read (`blend.run.run_store`; `store=` overrides); features come through that store, so any image or
pair seen before is not computed again, and new features land in the store for next time. The new pairs are
not added to the store's own pair table, which is the dataset `siqa oof` learns from: they are registered in a
scratch store that shares the real store's feature shards (and its lock, so a concurrent `siqa features`
waits), and read back through the same DuckDB views the run was fit from. Images given as pixels (arrays,
PIL images, tensors) are written once as PNG files into a private temporary folder, so that the store keys
them by content like any file.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from featurestore.errors import SiqaError

DEFAULT_RUN = "runs/latest"
DEFAULT_STORE = "store"


def default_store(store) -> Path:
    """`store`, else $SIQA_STORE, else ./store."""
    return Path(store or os.environ.get("SIQA_STORE") or DEFAULT_STORE)


def reading_store(store) -> Path:
    """The store a reading command (`siqa sql`) uses: as `default_store`, except that when neither `--store`
    nor $SIQA_STORE is given and ./store does not exist, the store of `runs/latest` (the last run)."""
    chosen = default_store(store)
    if store or os.environ.get("SIQA_STORE") or chosen.exists() or not (Path(DEFAULT_RUN) / "run.json").is_file():
        return chosen
    from blend.run import run_store

    try:
        return run_store(DEFAULT_RUN)
    except SiqaError:
        return chosen


def _is_one_image(x) -> bool:
    """One image (a path, a PIL image, an HxW[xC] array, a [C]xHxW tensor) rather than a sequence of them."""
    if isinstance(x, (str, os.PathLike)):
        return True
    if hasattr(x, "getpixel"):  # PIL.Image.Image, without importing PIL for path-only callers
        return True
    ndim = getattr(x, "ndim", None)
    return ndim is not None and ndim <= 3


def _pixels(x, what: str) -> np.ndarray:
    """HxWx3 (or HxW) uint8 pixels of an array, PIL image or torch tensor (CxHxW or HxWxC; floats in 0..1)."""
    if hasattr(x, "getpixel"):
        return np.asarray(x.convert("RGB"))
    if hasattr(x, "detach"):  # torch.Tensor: channels first when the first axis is 1 or 3
        x = x.detach().cpu().numpy()
        if x.ndim == 3 and x.shape[0] in (1, 3) and x.shape[-1] not in (1, 3):
            x = np.moveaxis(x, 0, -1)
    array = np.asarray(x)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise SiqaError(f"score: {what} has shape {array.shape}; expected HxW, HxWx3 or HxWx4 pixels")
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise SiqaError(f"score: {what} holds NaN or infinite values")
        scale = 255.0 if array.max(initial=0.0) <= 1.0 else 1.0  # floats in 0..1, or already 0..255
        return np.clip(np.rint(array * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.min(initial=0) < 0 or array.max(initial=0) > 255:
            raise SiqaError(f"score: {what} has integer values outside 0..255")
        return array.astype(np.uint8)
    raise SiqaError(f"score: {what} has unsupported dtype {array.dtype}")


class Predictor:
    """A fitted run held in memory: pipeline unpickled once, extractors built once (their weights load on
    first use and stay loaded), scoring any number of pairs through the run's store."""

    def __init__(self, run=DEFAULT_RUN, store=None):
        from blend.run import load_run, run_store
        from featurestore.config import build_extractors
        from featurestore.weights import check_weights

        self.run = load_run(run)
        origin = self.run.summary["source"].get("origin") or {}
        if origin.get("kind") != "store":
            raise SiqaError(f"{run}: this run was fit on the feature table {origin.get('path', '?')}, not on "
                            f"image features; only a run fit on a feature store can score images")
        self.store = run_store(run, store)
        self.extractors = build_extractors(self.run.config.get("input") or {})
        if not self.extractors:
            raise SiqaError(f"{run}/config.json: the run's config enables no extractor")
        check_weights(self.extractors)

    def score(self, ref, dist, progress: bool = False):
        """Score of `dist` against `ref` (0..5, higher = better): one image each (a float) or two equally long
        sequences (a numpy array). An image is a path, a PIL image, a numpy array or a torch tensor."""
        single = _is_one_image(ref)
        if single != _is_one_image(dist):
            raise SiqaError("score: give one image for both ref and dist, or a sequence of images for both")
        refs, dists = ([ref], [dist]) if single else (list(ref), list(dist))
        if len(refs) != len(dists):
            raise SiqaError(f"score: {len(refs)} reference image(s) but {len(dists)} degraded image(s)")
        if not refs:
            return np.empty(0)
        with tempfile.TemporaryDirectory(prefix="siqa-pixels-") as tmp:
            paths = [self._as_path(x, Path(tmp), f"{role} {i}") for i, pair in enumerate(zip(refs, dists))
                     for role, x in zip(("ref", "dist"), pair)]
            from featurestore.datasets import PairTable

            table = PairTable.from_paths(list(zip(paths[0::2], paths[1::2])), split="test")
            scores = self.predict_table(table, progress=progress)["score"].to_numpy()
        return float(scores[0]) if single else scores

    @staticmethod
    def _as_path(x, folder: Path, what: str) -> str:
        if isinstance(x, (str, os.PathLike)):
            if not Path(x).is_file():
                raise SiqaError(f"{x}: no such image file")
            return str(x)
        from PIL import Image

        path = folder / f"{what.replace(' ', '_')}.png"
        Image.fromarray(_pixels(x, what)).save(path)
        return str(path)

    def predict_table(self, table, progress: bool = True) -> pd.DataFrame:
        """Scores of every row of `table` (a `PairTable`): columns `name` (the table's) and `score` (0..5).

        The frame's `attrs["extract"]` holds the store's `ExtractSummary` (features computed / reused) and
        `attrs["seconds"]` the wall time, for the command line's summary line.
        """
        from featurestore.datasets import PairTable
        from featurestore.store import FeatureStore
        from tabular.data import TabularData

        started = time.perf_counter()
        # Unique names in the scratch store: the store keys pairs by (split, name), and two degraded files in
        # different folders may share a name. Labels stay out: nothing here is learnt from.
        scratch_df = table.df.assign(split="test", name=[f"{i:08d}" for i in range(len(table))], label=math.nan)
        main = FeatureStore(self.store)
        with tempfile.TemporaryDirectory(prefix="siqa-predict-") as tmp, main.lock():
            (main.root / "features").mkdir(parents=True, exist_ok=True)
            scratch = FeatureStore(tmp)
            os.symlink((main.root / "features").resolve(), scratch.root / "features", target_is_directory=True)
            summary = scratch.extract(PairTable(scratch_df, table.source), self.extractors, progress=progress)
            if summary.failures:
                where, why = sorted(summary.failures.items())[0]
                raise SiqaError(f"{where}: {why}" + (f" (and {len(summary.failures) - 1} more failure(s))"
                                                      if len(summary.failures) > 1 else ""))
            data = TabularData.from_store(scratch.root)
        scores = pd.Series(self.run.pipeline.predict(data), index=data.names)
        out = pd.DataFrame({"name": table.df["name"].to_numpy(), "score": scores.loc[scratch_df["name"]].to_numpy()})
        out.attrs["extract"] = summary
        out.attrs["seconds"] = time.perf_counter() - started
        return out


def load(run=DEFAULT_RUN, store=None) -> Predictor:
    """A `Predictor` for `run` that keeps its models loaded; `store` overrides the run's own store."""
    return Predictor(run, store)


def score(ref, dist, run=DEFAULT_RUN, store=None, progress: bool = False):
    """`load(run, store).score(ref, dist)`: one call, for a one-off score."""
    return load(run, store).score(ref, dist, progress=progress)


def predict_pairs(table, run: Path, store=None, progress: bool = True) -> pd.DataFrame:
    """`load(run, store).predict_table(table)`: every row of a `PairTable`."""
    return load(run, store).predict_table(table, progress=progress)


__all__ = ["DEFAULT_RUN", "DEFAULT_STORE", "Predictor", "default_store", "load", "predict_pairs", "reading_store",
           "score"]
