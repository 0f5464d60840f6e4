"""Score new (reference, degraded) pairs with a fitted run.

    import siqa
    siqa.score("ref.png", "dist.png", run="runs/latest")            # -> 3.87 (0..5, higher = more meaning kept)
    model = siqa.load("runs/latest")                                # models stay loaded between calls
    model.score(ref_array, dist_array)                              # numpy HxWx3, PIL image, torch CxHxW or path
    model.score([a, b], [a_jpeg, b_crop])                           # many pairs -> numpy array
    siqa.load("runs/csiq").predict(frame)                           # a run fit on a feature table: rows of features

`load(run)` returns a `Predictor`; `score` and `predict_pairs` (what `siqa predict` calls, for a whole
`PairTable`) are one-call shorthands. Scores are in the run's label units and orientation (`CompiledPipeline.to_label`:
0..5 for SeIQA, a DMOS for a DMOS table). A run fit on a feature table (`siqa oof --table`) scores no images:
`Predictor.predict(frame)` (what `siqa predict --table` calls) predicts rows holding its feature columns. Table
outputs keep the user's columns and add flags (`blend.checks`); a pair of two image sizes is refused unless
`allow_size_mismatch`. The run says which extractors (and settings) it was fit on and which
store it read (`blend.runfolder.run_store`; `store=` overrides); features come through that store, so any image or
pair seen before is not computed again, and new features land in the store for next time.

The run's pipeline is its compiled pipeline (`blend.compiled`: plain data, written by `siqa oof`). Two paths.
A pair whose features the run's feature folders already hold (`featurestore.cached`) is scored with numpy
alone, no model library imported and no extractor built: well under a second beyond Python's start-up. Any
other pair, and every pair of a run with a member that reads the pair images (a fine-tuned vision-language
model), goes through the full path: the extractors are built and their weights checked on first need, and
stay loaded.
The debug log says which path a call took. The new pairs are
not added to the store's own pair table, which is the dataset `siqa oof` learns from: they are registered in a
scratch store that shares the real store's feature shards (and its lock, so a concurrent `siqa features`
waits), and read back through the same DuckDB views the run was fit from. Images given as pixels (arrays,
PIL images, tensors) are written once as PNG files into a private temporary folder, so that the store keys
them by content like any file.
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from featurestore.errors import SiqaError

log = logging.getLogger("siqa")

DEFAULT_RUN = "runs/latest"
DEFAULT_STORE = "store"


def default_store(store) -> Path:
    """`store`, else $SIQA_STORE, else ./store."""
    return Path(store or os.environ.get("SIQA_STORE") or DEFAULT_STORE)


def reading_store(store) -> Path:
    """The store a reading command (`siqa sql`) uses: as `default_store`, except that when neither `--store`
    nor $SIQA_STORE is given and ./store does not exist, the store of `runs/latest` (the last run)."""
    from blend.runfolder import is_run, run_store

    chosen = default_store(store)
    if store or os.environ.get("SIQA_STORE") or chosen.exists() or not is_run(Path(DEFAULT_RUN)):
        return chosen

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


@dataclass
class Scored:
    """What one scoring call did: the scores, how many feature rows were computed and reused, its wall time,
    and which path scored it (`compiled` or `pipeline`)."""

    scores: np.ndarray
    computed: int
    reused: int
    seconds: float
    path: str


class Predictor:
    """A fitted run held in memory: its compiled pipeline, and, built on first need and kept, the extractors
    (their weights load on first use and stay loaded)."""

    def __init__(self, run=DEFAULT_RUN, store=None, allow_missing: bool = False, allow_size_mismatch: bool = False):
        from blend.compiled import CompiledPipeline
        from blend.runfolder import RunFolder, run_store

        self.path = Path(run)
        #: score pairs some extractor failed on with those features missing (warned), instead of refusing them
        self.allow_missing = allow_missing
        #: score a pair of two image sizes (the degraded image resized to the reference, flagged) instead of refusing it
        self.allow_size_mismatch = allow_size_mismatch
        folder = RunFolder(run)
        self.summary = json.loads(folder.read("run.json"))
        self.config = json.loads(folder.read("config.json"))
        self.origin = self.summary["source"].get("origin") or {}
        self.compiled = CompiledPipeline.load(folder)
        #: the feature store images are scored through; None for a run fit on a feature table (`predict` only)
        self.store = None
        if self.from_images:
            self.store = run_store(run, store)
            enabled = [name for name, table in ((self.config.get("input") or {}).get("extractors") or {}).items()
                       if (table or {}).get("enabled", True)]
            if not enabled:
                raise SiqaError(f"{run}/config.json: the run's config enables no extractor")
        #: extractor -> the feature folder the run was fit on (what a cached pair is read from)
        self.folders = {name: entry["folder"] for name, entry in (self.summary.get("extractors") or {}).items()}

    @property
    def from_images(self) -> bool:
        """Whether the run was fit on a feature store (it scores images) rather than on a feature table."""
        return self.origin.get("kind") == "store"

    def basis(self) -> str:
        """What the run's predictions rest on, in one line: rows, label source, CV Final with its interval."""
        summary, origin = self.summary, self.origin
        label = origin.get("label") or "the store's pair labels"
        orientation = "higher" if self.compiled.higher_better else "lower"
        source = origin.get("path") or origin.get("root") or summary["source"].get("source", "?")
        sizes = summary.get("image_sizes")
        shown = f"; images {sizes['text']}" if sizes else ""
        return (f"basis: {self.path} was fit on {summary['n_rows']} labelled rows in {summary['n_groups']} reference "
                f"groups of {source} (label {label}, {orientation} = better; predictions in its units{shown}); "
                f"CV Final {summary['final']:.4f}, 95% group-bootstrap interval [{summary['final_low']:.4f}, "
                f"{summary['final_high']:.4f}]")

    @property
    def prediction_column(self) -> str:
        """The column that holds the run's prediction: `score` for a store run, `predicted_<label>` for a run
        fit on a feature table (in that label's units and orientation)."""
        return "score" if self.from_images else f"predicted_{self.origin.get('label', 'label')}"

    def require_images(self) -> None:
        """Refuse images for a run fit on a feature table, pointing to what it does predict."""
        if not self.from_images:
            raise SiqaError(f"{self.path}: this run was fit on the feature table {self.origin.get('path', '?')}, not "
                            f"on image features, so it scores rows of features, not images: `siqa predict --table "
                            f"FILE` or `siqa.load(run).predict(frame)`")

    def predict(self, frame, with_features: bool = False, source: str = "predict"):
        """Every row of `frame` (a pandas DataFrame holding the run's feature columns, by name) with the run's
        prediction in the label's units and orientation (`prediction_column`) and the range flags (`flagged`).
        A feature the run was fit on that `frame` lacks is refused by name; other columns are kept as they are.
        `source` names the frame in errors (`siqa predict --table` passes the file)."""
        from tabular.data import feature_matrix

        compiled = self.compiled
        if compiled.blocks or compiled.needs_pairs:
            raise SiqaError(f"{self.path}: the run reads dense features or the pair images, which a table of "
                            f"scalars does not hold: score image pairs (`score`, `predict_table`)")
        X = feature_matrix(frame, compiled.columns, source)
        return self._flagged(frame.reset_index(drop=True), compiled.to_label(compiled.score(X, {})), X, with_features)

    def _flagged(self, frame, predictions: np.ndarray, X: np.ndarray, with_features: bool,
                 image_flags: dict[str, np.ndarray] | None = None):
        """`frame` (the user's rows) + the prediction, the flags (`image_flags`, the range flags, `unrelated`
        where the run has an embedding cosine; `flagged`: any) and, `with_features`, the features used."""
        import pandas as pd

        from blend.checks import outside_range, unrelated_content

        columns, ranges = self.compiled.columns, self.summary.get("feature_ranges") or {}
        distance, names = outside_range(X, columns, ranges)
        added = {self.prediction_column: predictions, **(image_flags or {}), "outside_range": distance,
                 "outside_features": names}
        unrelated = unrelated_content(X, columns, ranges)
        if unrelated is not None:
            added["unrelated"] = unrelated
        if with_features:
            added.update({c: X[:, j] for j, c in enumerate(columns) if c not in frame.columns})
        clash = [c for c in [*added, "flagged"] if c in frame.columns]
        if clash:
            raise SiqaError(f"predict: the input already has column(s) {', '.join(clash)}, which the prediction "
                            f"adds; rename them")
        added["flagged"] = (distance > 0) | np.logical_or.reduce(
            [np.asarray(added[k], dtype=bool) for k in ("resized", "size_unusual", "unrelated") if k in added],
            initial=False)
        # one concat, not a column at a time: hundreds of feature columns would fragment the frame
        return pd.concat([frame, pd.DataFrame(added, index=frame.index)], axis=1)

    @cached_property
    def extractors(self):
        """The run's extractors, built (and their weights checked) when a pair first needs computing."""
        from featurestore.config import build_extractors, extractor_settings
        from featurestore.weights import check_weights

        # the settings the run's features were computed with (validated here: building them imports the models)
        tables = (self.config.get("input") or {}).get("extractors") or {}
        extractors = build_extractors(extractor_settings(tables, f"{self.path}/config.json"))
        check_weights(extractors)
        return extractors

    def score(self, ref, dist, progress: bool = False):
        """Score of `dist` against `ref` in the run's label units (0..5, higher = better, for SeIQA labels): one
        image each (a float) or two equally long sequences (a numpy array). An image is a path, a PIL image, a
        numpy array or a torch tensor."""
        self.require_images()
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
            pairs = list(zip(paths[0::2], paths[1::2]))
            scores = self._seen_pixels(pairs, Path(tmp))
            if scores is None:
                scores = self.score_files(pairs, progress=progress).scores
        return float(scores[0]) if single else scores

    def _seen_pixels(self, pairs: list[tuple[str, str]], pixel_folder: Path) -> np.ndarray | None:
        """Scores of `pairs` when each image given as pixels (a PNG written into `pixel_folder`) has the picture
        of a file the store decoded before and every feature is cached under those files' keys; None otherwise.
        The store keys files by their bytes, so a JPEG's decoded array would otherwise compute again."""
        if not any(Path(p).parent == pixel_folder for pair in pairs for p in pair):
            return None  # paths only: the fast path, which imports no table library
        from featurestore.io import decode, pixel_sha256, sha256_file
        from featurestore.store import FeatureStore

        known = FeatureStore(self.store).known_pixels()
        shas = {}
        for path in {p for pair in pairs for p in pair}:
            shas[path] = known.get(pixel_sha256(decode(path).rgb)) if Path(path).parent == pixel_folder else \
                sha256_file(path)
            if shas[path] is None:
                return None
        self.image_flags(pairs)
        cached = self._cached_arrays([(shas[r], shas[d]) for r, d in pairs])
        if cached is None:
            return None
        log.debug("%s: every picture seen before as a file: scored from its cached features", self.path)
        return self.compiled.to_label(self.compiled.score(*cached))

    def score_files(self, pairs: list[tuple[str, str]], progress: bool = False) -> Scored:
        """Scores of (reference path, degraded path) pairs, with what it took (`Scored`)."""
        self.require_images()
        from featurestore.io import sha256_file

        started = time.perf_counter()
        self.image_flags(pairs)  # a pair of two sizes is refused here unless allow_size_mismatch
        if all(Path(p).is_file() for pair in pairs for p in pair):
            shas = {p: sha256_file(p) for pair in pairs for p in pair}
            cached = self._cached_arrays([(shas[r], shas[d]) for r, d in pairs])
            if cached is not None:
                return Scored(self.compiled.to_label(self.compiled.score(*cached)), 0, len(pairs) * len(self.folders),
                              time.perf_counter() - started, "compiled")
        from featurestore.datasets import PairTable

        X, dense, images, done = self._through_store(PairTable.from_paths(pairs, split="test"), progress)
        return Scored(self.compiled.to_label(self.compiled.score(X, dense, images)), sum(done.computed.values()),
                      sum(done.cached.values()), time.perf_counter() - started, "pipeline")

    def image_flags(self, pairs: list[tuple[str, str]]) -> dict[str, np.ndarray]:
        """Per pair of (reference, degraded) paths: `resized` (the two differ in size: refused unless
        `allow_size_mismatch`, then the degraded image is resized to the reference) and, where the run recorded
        its training image sizes, `size_unusual` (the reference has under half or over twice the pixels of
        every training image: sides about 1.4 times beyond, where features of scale shift)."""
        from featurestore.io import image_size

        sizes = {p: image_size(p) for pair in pairs for p in pair}
        resized = np.array([sizes[r] != sizes[d] for r, d in pairs], dtype=bool)
        if resized.any() and not self.allow_size_mismatch:
            i = int(np.flatnonzero(resized)[0])
            (ref, dist), more = pairs[i], int(resized.sum()) - 1
            raise SiqaError(f"{dist}: {'x'.join(map(str, sizes[dist]))} pixels, its reference {ref} is "
                            f"{'x'.join(map(str, sizes[ref]))}" + (f" (and {more} more pair(s) of two sizes)" if more
                                                                    else "")
                            + ": a full-reference score compares the same pixels; pass --allow-size-mismatch "
                              "(allow_size_mismatch=True) to resize the degraded image to the reference, flagged "
                              "`resized`")
        flags = {"resized": resized}
        trained = self.summary.get("image_sizes")
        if trained:
            low, high = trained["pixels"]
            pixels = np.array([sizes[r][0] * sizes[r][1] for r, _ in pairs], dtype=np.float64)
            flags["size_unusual"] = (pixels < low / 2) | (pixels > high * 2)
        return flags

    def _cached_arrays(self, pairs: list[tuple[str, str]]):
        """(X, dense) of pairs given as (reference, degraded) sha256, when the compiled pipeline can score them
        alone and the run's feature folders hold every pair; None otherwise (the full path then scores them)."""
        from featurestore.cached import cached_features
        from featurestore.io import pair_key

        if self.compiled.needs_pairs:
            log.debug("%s: a pool member reads the pair images: scoring with the full path", self.path)
            return None
        features = cached_features(self.store, self.folders, [pair_key(r, d) for r, d in pairs])
        if features is None or any(c not in features for c in [*self.compiled.columns, *self.compiled.blocks]):
            log.debug("%s: features to compute: scoring with the full pipeline", self.path)
            return None
        dense = {block: features[block] for block in self.compiled.blocks}
        if not all(np.isfinite(values).all() for values in dense.values()):
            return None  # the full path names the block
        X = np.column_stack([features[c] for c in self.compiled.columns]) if self.compiled.columns else \
            np.empty((len(pairs), 0))
        log.debug("%s: every feature cached: scoring with the compiled pipeline", self.path)
        return np.where(np.isinf(X), np.nan, X), dense

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

    def predict_table(self, table, progress: bool = True, rows=None, with_features: bool = False):
        """Every row of `table` (a `PairTable`) scored: `rows` (the user's own columns, one row per pair; default
        the table's `name`) plus `score` (the labels' units: 0..5 for SeIQA), the flags (`resized`,
        `size_unusual`, `outside_range`, `outside_features`, `unrelated` where an embedding cosine is a feature;
        `flagged`: any of them) and, `with_features`, the features used.

        The frame's `attrs["extract"]` holds the store's `ExtractSummary` (features computed / reused) and
        `attrs["seconds"]` the wall time, for the command line's summary line.
        """
        import pandas as pd

        from featurestore.store import ExtractSummary

        self.require_images()
        started = time.perf_counter()
        flags = self.image_flags(list(zip(table.df["ref_path"], table.df["dist_path"])))
        cached = self._cached_arrays(list(zip(table.df["ref_sha256"], table.df["dist_sha256"])))
        if cached is None:
            X, dense, images, summary = self._through_store(table, progress)
        else:
            (X, dense), images = cached, None
            summary = ExtractSummary(pairs=len(table))
            for name in self.folders:
                summary.cached[f"{name}/pair"] += len(table)
        rows = pd.DataFrame({"name": table.df["name"].to_numpy()}) if rows is None else rows.reset_index(drop=True)
        out = self._flagged(rows, self.compiled.to_label(self.compiled.score(X, dense, images)), X, with_features,
                            flags)
        out.attrs["extract"] = summary
        out.attrs["seconds"] = time.perf_counter() - started
        return out

    def _through_store(self, table, progress: bool):
        """(X, dense, pairs, extract summary) of every row of `table`, in its order, by the full path."""
        data, summary = self.features(table, progress)
        return (*self.compiled.arrays(data), summary)

    def features(self, table, progress: bool = True):
        """(`TabularData` of every row of `table`, in its order and with its names, the store's `ExtractSummary`):
        the run's features of each pair, the missing ones computed through a scratch store (the extractors built
        on first need)."""
        from blend.run import check_missing
        from featurestore.datasets import PairTable
        from featurestore.store import FeatureStore
        from tabular.data import TabularData

        # Unique names in the scratch store: the store keys pairs by (split, name), and two degraded files in
        # different folders may share a name. Labels stay out: nothing here is learnt from.
        scratch_df = table.df.assign(split="test", name=[f"{i:08d}" for i in range(len(table))], label=math.nan)
        main = FeatureStore(self.store)
        main.check_store(create=True)  # new features land in it: never in a folder that is not a store
        with tempfile.TemporaryDirectory(prefix="siqa-predict-") as tmp, main.lock():
            (main.root / "features").mkdir(parents=True, exist_ok=True)
            scratch = FeatureStore(tmp)
            scratch.check_store(create=True)
            os.symlink((main.root / "features").resolve(), scratch.root / "features", target_is_directory=True)
            summary = scratch.extract(PairTable(scratch_df, table.source), self.extractors, progress=progress)
            main.record_pixels(summary.pixels)  # the scratch store's own pixels.json goes with it
            if summary.failures and not self.allow_missing:
                where, why = sorted(summary.failures.items())[0]
                raise SiqaError(f"{where}: {why}" + (f" (and {len(summary.failures) - 1} more failure(s))"
                                                      if len(summary.failures) > 1 else "")
                                + "; pass --allow-missing to score with those features missing")
            data = TabularData.from_store(scratch.root)
        check_missing(data, np.ones(data.n_rows, dtype=bool), "pairs to score", self.allow_missing,
                      "score them with those features missing")
        order = {name: i for i, name in enumerate(data.names)}
        data = data.subset(np.array([order[name] for name in scratch_df["name"]], dtype=int))
        data.names = table.df["name"].to_numpy()
        return data, summary


def load(run=DEFAULT_RUN, store=None, allow_missing: bool = False, allow_size_mismatch: bool = False) -> Predictor:
    """A `Predictor` for `run` that keeps its models loaded; `store` overrides the run's own store."""
    return Predictor(run, store, allow_missing, allow_size_mismatch)


def score(ref, dist, run=DEFAULT_RUN, store=None, progress: bool = False):
    """`load(run, store).score(ref, dist)`: one call, for a one-off score."""
    return load(run, store).score(ref, dist, progress=progress)


def predict_pairs(table, run: Path, store=None, progress: bool = True):
    """`load(run, store).predict_table(table)`: every row of a `PairTable`."""
    return load(run, store).predict_table(table, progress=progress)


__all__ = ["DEFAULT_RUN", "DEFAULT_STORE", "Predictor", "Scored", "default_store", "load", "predict_pairs", "reading_store",
           "score"]
