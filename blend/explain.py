"""`siqa explain`: why a fitted run scored a pair as it did, and where in the image the meaning changed.

Per pair: the score split into baseline + one value per feature group and per feature (`blend.attribution`:
exact Shapley values of the run's headline pipeline over extractor groups), and the semantic difference map
(`featurestore.semantic_map`) with its peak. `write_explanations` puts them in an output folder through the
one output writer:

    DIR/explanations.json   a list, one object per pair: name, score, baseline, attributions {group: value},
                            feature_attributions {feature: value}, peak_x, peak_y, concentration,
                            map (the PNG, relative to DIR), map_array (the .npy), ref, dist
    DIR/maps/<name>.png     reference | degraded | map over the degraded image, the peak marked
    DIR/maps/<name>.npy     the map, H x W float32 in [0, 1], the degraded image's pixels
"""
from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from featurestore.config import build_extractors, extractor_settings
from featurestore.errors import SiqaError
from featurestore.io import DecodedPair
from featurestore.semantic_map import SemanticMap, SemanticMapper, decoded_pair, patch_extractor
from featurestore.weights import check_weights
from tabular.data import TabularData

from .attribution import Attribution, FeatureRows, ShapleyExplainer, feature_groups, spread_background
from .outputs import check_target, write_output
from .run import Run, run_origin

EXPLANATIONS_FILE = "explanations.json"
MAPS_DIR = "maps"
BACKGROUND_ROWS = 8  # labelled rows the attribution averages over: 2^groups x this many scores per pair
TOP_ATTRIBUTIONS = 3


@dataclass
class Explanation:
    name: str
    pair: DecodedPair
    attribution: Attribution
    map: SemanticMap


def _rows(data: TabularData, columns: list[str], blocks: list[str]) -> FeatureRows:
    X = data.X[columns].to_numpy(dtype=np.float64, copy=True)
    X[np.isinf(X)] = np.nan  # as the models see them (`TabularData` and the compiled path)
    return FeatureRows(X, {b: np.asarray(data.dense[b]) for b in blocks})


class RunExplainer:
    """Attributions of a run's scores: of its compiled pipeline (`blend.compiled`), what `siqa predict` scores
    with."""

    def __init__(self, run: Run, store=None, background: int = BACKGROUND_ROWS, seed: int = 0,
                 training: TabularData | None = None, per_feature: bool = True):
        """`training`: the run's data (read from its origin when not given), whose labelled rows give the background."""
        self.pipeline = run.pipeline
        self.columns, self.blocks = list(self.pipeline.columns), list(self.pipeline.blocks)
        training = training if training is not None else TabularData.from_origin(run_origin(run, store))
        labelled = training.subset(training.labelled)
        extractors = list(run.summary.get("extractors") or {})
        self.background = spread_background(_rows(labelled, self.columns, self.blocks), labelled.target, background)
        self.groups = feature_groups(self.columns + self.blocks, extractors)
        self.seed, self.per_feature = seed, per_feature

    def _explainer(self, pairs: pd.DataFrame | None) -> ShapleyExplainer:
        """The explainer of one pair; a member that reads the images is given that pair's images for every hybrid
        (the images are not a feature that can be swapped for a background pair's)."""
        def score(X: np.ndarray, dense: dict[str, np.ndarray]) -> np.ndarray:
            repeated = None if pairs is None else pairs.iloc[np.zeros(len(X), dtype=int)].set_axis(
                pd.Index([f"hybrid{i}" for i in range(len(X))], name="pair_id"))
            return self.pipeline.score(X, dense, repeated)

        return ShapleyExplainer(score, self.columns, self.blocks, self.groups, self.background, seed=self.seed,
                                per_feature=self.per_feature)

    def attributions(self, data: TabularData, progress: bool = True) -> list[Attribution]:
        rows = _rows(data, self.columns, self.blocks)
        images = data.pairs if self.pipeline.needs_pairs else None
        if images is None and self.pipeline.needs_pairs:
            raise SiqaError(f"{data.source}: a pool member of the run reads the pair images, which these rows lack")
        return [self._explainer(None if images is None else images.iloc[[i]]).explain(rows.row(i))
                for i in tqdm(range(len(rows)), desc="attributions", unit="pair", disable=not progress)]


def run_mapper(run: Run) -> SemanticMapper:
    """The maps' networks, plus the patch tokens of the run's own DINO extractor where its weights are here."""
    tables = (run.config.get("input") or {}).get("extractors") or {}
    return SemanticMapper(patches=patch_extractor(build_extractors(extractor_settings(tables,
                                                                                      f"{run.path}/config.json"))))


def explain(run: Run, data: TabularData, store=None, background: int = BACKGROUND_ROWS,
            training: TabularData | None = None, per_feature: bool = True, mapper: SemanticMapper | None = None,
            progress: bool = True) -> Iterator[Explanation]:
    """Attribution and map of every row of `data` (store rows: they carry their images' paths), one pair at a
    time: a split of large images is never held decoded at once."""
    if data.pairs is None:
        raise SiqaError(f"{data.source}: explain needs the pairs' images; only a run fit on a feature store has them")
    mapper = mapper or run_mapper(run)
    check_weights(mapper.extractors())  # before any work: a missing OCR or network file is one line, not a traceback
    explainer = RunExplainer(run, store, background, training=training, per_feature=per_feature)
    attributions = explainer.attributions(data, progress)
    for i in tqdm(range(data.n_rows), desc="maps", unit="pair", disable=not progress):
        pair = decoded_pair(str(data.pairs["ref_path"].iloc[i]), str(data.pairs["dist_path"].iloc[i]))
        yield Explanation(str(data.names[i]), pair, attributions[i], mapper.map(pair))


# --- pictures --------------------------------------------------------------------------------------------
def overlay_png(pair: DecodedPair, semantic: SemanticMap, title: str = "") -> bytes:
    """reference | degraded | the map over the degraded image (peak marked), as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    h, w = semantic.values.shape
    figure = Figure(figsize=(9, 3.3 * h / max(w, 1) + 0.4), dpi=100)
    axes = figure.subplots(1, 3)
    axes[0].imshow(pair.ref.rgb)
    axes[0].set_title("reference", fontsize=9)
    axes[1].imshow(pair.dist.rgb)
    axes[1].set_title("degraded", fontsize=9)
    axes[2].imshow(pair.dist.rgb)
    shown = axes[2].imshow(semantic.values, cmap="inferno", alpha=0.6, vmin=0.0, vmax=max(float(semantic.values.max()), 1e-6))
    x, y = semantic.peak
    axes[2].plot([x], [y], marker="+", color="cyan", markersize=14, markeredgewidth=2)
    axes[2].set_title(f"meaning changed\npeak ({x}, {y}), concentration {semantic.concentration:.2f}", fontsize=8)
    figure.colorbar(shown, ax=axes[2], fraction=0.046, pad=0.04)
    for axis in axes:
        axis.set_axis_off()
    if title:
        figure.suptitle(title, fontsize=9)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def _npy_bytes(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, values, allow_pickle=False)
    return buffer.getvalue()


def _file_stems(names: list[str]) -> list[str]:
    """A file name per pair: its name without extension, odd characters replaced, made unique."""
    stems, seen = [], {}
    for name in names:
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).stem) or "pair"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return stems


def explanation_record(item: Explanation, png: str, npy: str) -> dict:
    a, (x, y) = item.attribution, item.map.peak
    return {"name": item.name, "score": a.score, "baseline": a.baseline, "attributions": a.groups,
            "feature_attributions": a.features, "peak_x": x, "peak_y": y,
            "concentration": item.map.concentration, "map": png, "map_array": npy, "ref": item.pair.ref.path,
            "dist": item.pair.dist.path}


def check_out(out_dir) -> None:
    """Refuse before any work an output folder siqa may not write into (a store, a run, a link)."""
    check_target(Path(out_dir) / EXPLANATIONS_FILE)


def write_explanations(out_dir, names: list[str], explanations: Iterator[Explanation]) -> Path:
    """The folder layout of the module docstring for the pairs `names` (in the order `explanations` come, each
    written as it comes); returns the path of explanations.json."""
    out_dir = Path(out_dir)
    check_out(out_dir)
    records = []
    for item, stem in zip(explanations, _file_stems(names), strict=True):
        png, npy = f"{MAPS_DIR}/{stem}.png", f"{MAPS_DIR}/{stem}.npy"
        top = ", ".join(f"{g} {v:+.2f}" for g, v in item.attribution.top(TOP_ATTRIBUTIONS))
        title = f"{item.name}: score {item.attribution.score:.2f} = {item.attribution.baseline:.2f} (baseline) {top} ..."
        write_output(out_dir / png, overlay_png(item.pair, item.map, title))
        write_output(out_dir / npy, _npy_bytes(item.map.values))
        records.append(explanation_record(item, png, npy))
    return write_output(out_dir / EXPLANATIONS_FILE, json.dumps(records, indent=1).encode())


def top_columns(attributions: list[Attribution], n: int = TOP_ATTRIBUTIONS) -> pd.DataFrame:
    """`siqa predict --explain`'s extra columns: the `n` strongest groups per pair (`attribution_k`, its
    group, and `attribution_k_value`)."""
    columns = {}
    for k in range(n):
        picked = [a.top(n)[k] if len(a.groups) > k else ("", np.nan) for a in attributions]
        columns[f"attribution_{k + 1}"] = [group for group, _ in picked]
        columns[f"attribution_{k + 1}_value"] = [value for _, value in picked]
    return pd.DataFrame(columns)
