"""`CompiledPipeline`: a run's fitted pipeline as plain data, scored with numpy alone.

When every pool member exports a `tabular.inference` program (all but the members that learn from the
images themselves), `blend.run` writes `FittedPipeline.export()` beside the pickled pipeline as
`models/inference.json` + `models/inference.npz` (`tabular.inference.save`: no pickle), and the signed
manifest lists both. `CompiledPipeline.load(folder)` reads them through `RunFolder.read` (hash-checked), or
returns None for a run without them (or with programs of another `tabular.inference.FORMAT`, written by
another siqa: the pickled pipeline still scores it); `predict(X, dense)` then gives the scores `FittedPipeline.predict` gives
for the same features - dense-block Ridges, every member, the blend weights, the calibrator - without
importing scikit-learn, scipy, torch, CatBoost, XGBoost or LightGBM, whose imports alone take seconds.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from featurestore.errors import SiqaError
from tabular.inference import restore, run, save

from .runfolder import RunFolder

log = logging.getLogger(__name__)

INFERENCE_JSON = Path("models") / "inference.json"
INFERENCE_NPZ = Path("models") / "inference.npz"


def write(folder: Path, exported: dict) -> None:
    """The two files of `exported` (a `FittedPipeline.export()`) in the run folder being written."""
    text, npz = save(exported)
    (folder / INFERENCE_JSON).write_text(text)
    (folder / INFERENCE_NPZ).write_bytes(npz)


class CompiledPipeline:
    def __init__(self, exported: dict):
        self.columns: list[str] = exported["columns"]
        self.blocks: dict[str, int] = exported["blocks"]
        self.meta = exported["meta"]
        self.members = exported["members"]
        self.weights = np.asarray(exported["weights"], dtype=np.float64)
        self.calibrator = exported["calibrator"]

    @classmethod
    def load(cls, folder: RunFolder) -> CompiledPipeline | None:
        if not (folder.has(INFERENCE_JSON) and folder.has(INFERENCE_NPZ)):
            return None
        text, npz = folder.read(INFERENCE_JSON).decode(), folder.read(INFERENCE_NPZ)
        try:
            return cls(restore(text, npz))
        except ValueError as error:
            log.debug("%s: compiled pipeline not used: %s", folder.path, error)
            return None

    @property
    def member_names(self) -> list[str]:
        return [name for name, _ in self.members]

    def predict(self, X: np.ndarray, dense: dict[str, np.ndarray]) -> np.ndarray:
        """0..5 scores of rows with scalar features `X` (rows x `columns`, NaN allowed) and `dense` blocks."""
        for block, width in self.blocks.items():
            if dense[block].shape[1] != width:
                raise SiqaError(f"dense feature {block!r} has width {dense[block].shape[1]}, the run was fit on "
                                f"width {width}")
        meta = [run(program, dense[block]) for block, program in self.meta]
        inputs = np.column_stack([np.asarray(X, dtype=np.float64), *meta]) if meta else X
        pool = np.column_stack([run(program, inputs) for _, program in self.members])
        return run(self.calibrator, pool @ self.weights)
