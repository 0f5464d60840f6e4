"""`CompiledPipeline`: a run's fitted pipeline as plain data, the only model format a run folder holds.

`blend.run` writes `FittedPipeline.export()` as `models/inference.json` + `models/inference.npz`
(`tabular.inference.save`: JSON and numpy arrays, no pickle) and the run's manifest lists both.
`CompiledPipeline.load(folder)` reads them through `RunFolder.read` (hash-checked): loading a run builds
numbers and registry classes from data and never executes code it holds. It scores what `FittedPipeline`
scores for the same features - dense-block Ridges, every member, the blend weights, the calibrator:
- every member that a `tabular.inference` program expresses runs with numpy alone (`score` of cached
  features imports no scikit-learn, scipy, torch, CatBoost, XGBoost or LightGBM, whose imports take seconds);
- a member that reads the pair images (fine-tuned vision-language members) is rebuilt from its `state`
  (registry name, constructor parameters, fitted numbers; its adapter and head are safetensors and JSON under
  the run's `fits/`) and predicts from the pairs' image paths.
A run written by a siqa whose programs differ (`tabular.inference.FORMAT`) or by one that pickled its models
is refused with one line: fit it again with `siqa oof`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from featurestore.errors import SiqaError
from tabular.inference import restore, run, save

from .calibrators import LOW
from .runfolder import FITS, RunFolder

INFERENCE_JSON = Path("models") / "inference.json"
INFERENCE_NPZ = Path("models") / "inference.npz"


def write(folder: Path, exported: dict) -> None:
    """The two files of `exported` (a `FittedPipeline.export()`) in the run folder being written."""
    text, npz = save(exported)
    (folder / INFERENCE_JSON).write_text(text)
    (folder / INFERENCE_NPZ).write_bytes(npz)


class CompiledPipeline:
    def __init__(self, exported: dict, root: Path, higher_better: bool = True):
        self.columns: list[str] = exported["columns"]
        self.blocks: dict[str, int] = exported["blocks"]
        self.meta = exported["meta"]
        self.members = exported["members"]
        self.weights = np.asarray(exported["weights"], dtype=np.float64)
        self.calibrator = exported["calibrator"]
        self.label_offset, self.label_factor = exported["label_scale"]
        #: the labels' orientation (False for a DMOS): scores map back to the labels' own units with it
        self.higher_better = higher_better
        self.root = Path(root)
        self._native: dict[str, object] = {}

    @classmethod
    def load(cls, folder: RunFolder) -> CompiledPipeline:
        if not (folder.has(INFERENCE_JSON) and folder.has(INFERENCE_NPZ)):
            raise SiqaError(f"{folder.path}: no {INFERENCE_JSON} (a run of an older siqa, which pickled its models); "
                            f"fit it again with `siqa oof`")
        text, npz = folder.read(INFERENCE_JSON).decode(), folder.read(INFERENCE_NPZ)
        higher_better = bool(json.loads(folder.read("run.json"))["source"].get("higher_better", True))
        try:
            return cls(restore(text, npz), folder.path, higher_better)
        except (ValueError, KeyError) as error:
            raise SiqaError(f"{folder.path / INFERENCE_JSON}: written by another siqa ({error}); fit the run again "
                            f"with `siqa oof`") from None

    @property
    def member_names(self) -> list[str]:
        return [name for name, _ in self.members]

    @property
    def needs_pairs(self) -> bool:
        """Whether a member reads the pair images (then scoring needs the pairs' paths, not features alone)."""
        return any(isinstance(member, dict) for _, member in self.members)

    def label_scale(self, target: np.ndarray) -> np.ndarray:
        """The run's labels (target orientation) on the 0..5 scale of its scores (`blend.calibration.LabelScale`)."""
        return LOW + (np.asarray(target, dtype=np.float64) - self.label_offset) * self.label_factor

    def to_label(self, scores: np.ndarray) -> np.ndarray:
        """0..5 scores in the labels' own units and orientation (a DMOS again, lower = better): the label scale
        undone, and the sign where the labels were negated into the target. The calibrator's 0..5 clip maps
        back to the range of the training labels; labels on 0..5 (higher = better) come back unchanged."""
        target = self.label_offset + (np.asarray(scores, dtype=np.float64) - LOW) / self.label_factor
        return target if self.higher_better else -target

    def member_scores(self, X: np.ndarray, dense: dict[str, np.ndarray], pairs=None) -> np.ndarray:
        """Rows x members: every member's prediction (target scale) of rows with scalar features `X` (rows x
        `columns`, NaN allowed), `dense` blocks and, for members that read images, `pairs` (a frame indexed by
        pair id with the image paths and hashes, in row order)."""
        for block, width in self.blocks.items():
            if dense[block].shape[1] != width:
                raise SiqaError(f"dense feature {block!r} has width {dense[block].shape[1]}, the run was fit on "
                                f"width {width}")
        meta = [run(program, dense[block]) for block, program in self.meta]
        inputs = np.column_stack([np.asarray(X, dtype=np.float64), *meta]) if meta else np.asarray(X, dtype=np.float64)
        return np.column_stack([run(member, inputs) if isinstance(member, list) else
                                self._native_scores(name, member, inputs, pairs) for name, member in self.members])

    def score(self, X: np.ndarray, dense: dict[str, np.ndarray], pairs=None) -> np.ndarray:
        """0..5 scores of the rows (`member_scores` blended by the run's weights, then calibrated)."""
        return run(self.calibrator, self.member_scores(X, dense, pairs) @ self.weights)

    def _native_scores(self, name: str, state: dict, inputs: np.ndarray, pairs) -> np.ndarray:
        if pairs is None:
            raise SiqaError(f"pool member {name} reads the pair images: score pairs of a feature store")
        if name not in self._native:
            from tabular.models import POOL

            self._native[name] = POOL.get(state["model"]).from_state(state, str(self.root / FITS))
        import pandas as pd

        X = pd.DataFrame(inputs, index=pairs.index)
        return np.asarray(self._native[name].predict(X, pairs=pairs), dtype=np.float64)

    # --- what a run predicts for a feature table ------------------------------------------------------
    def check(self, data) -> None:
        """`data` (a `tabular.data.TabularData`) must carry every feature the pipeline was fit on."""
        missing = [c for c in self.columns if c not in data.X.columns]
        missing += [b for b in self.blocks if b not in data.dense]
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise SiqaError(f"{data.source}: missing {len(missing)} feature(s) the run was fit on: {shown}")

    def arrays(self, data):
        """(X, dense, pairs) of `data` as `score` takes them; a feature the run was fit on that `data` lacks is
        refused by name."""
        import pandas as pd

        self.check(data)
        X = data.X[self.columns].to_numpy(dtype=np.float64) if self.columns else np.empty((data.n_rows, 0))
        pairs = None if data.pairs is None else data.pairs.set_axis(pd.Index(data.ids, name="pair_id"))
        return X, {b: data.dense[b] for b in self.blocks}, pairs

    def predict_frame(self, data):
        """Per-member predictions (target scale), `blend` (target scale), `score` (0..5, higher = better) and
        `prediction` (`score` in the labels' units, `to_label`)."""
        import pandas as pd

        members = self.member_scores(*self.arrays(data))
        frame = pd.DataFrame(members, columns=self.member_names)
        frame["blend"] = members @ self.weights
        frame["score"] = run(self.calibrator, frame["blend"].to_numpy())
        frame["prediction"] = self.to_label(frame["score"].to_numpy())
        return frame

    def predict(self, data) -> np.ndarray:
        """0..5 scores (higher = better) of every row of `data`."""
        return self.score(*self.arrays(data))
