"""The `[tabular.blend]` section, owned by the blend layer: which keys it takes and what they build.

Keys: `method` (a registered blend method or `auto`), `cap` (max weight of one model), `folds` (inner
grouped folds of `auto` for the blender and the calibrator), `calibration` (a registered calibrator or
`auto`), `choice` (how `auto` chooses: `one_se`, the simplest within one standard error of the best,
or `max`; `blend.choice`), and every keyword parameter of a registered method (greedy: `rounds`; slsqp: `anchors`,
`temperature`). A method's new parameter is therefore accepted and passed on by adding it to that
method's module alone. `tabular.config` merges the preset and leaves this section to `check`.
"""
from __future__ import annotations

from featurestore.errors import SiqaError
from tabular.config import resolve as resolve_tabular

from .blender import BoundedBlender, all_method_parameters
from .calibration import MonotoneCalibrator

#: keys of the section that are not method parameters
BLENDER_KEYS = ("method", "cap", "folds", "calibration", "choice")


def check(section: dict) -> dict:
    """The section itself, after refusing unknown keys (one-line error naming them)."""
    extra = set(section) - set(BLENDER_KEYS) - all_method_parameters()
    if extra:
        raise SiqaError(f"config: unknown [tabular.blend] key(s) {', '.join(sorted(extra))}")
    return section


def resolve(config: dict | None) -> dict:
    """The effective tabular settings of a run config (`tabular.config.resolve`) with a checked blend section."""
    settings = resolve_tabular(config)
    check(settings.get("blend", {}))
    return settings


def make_blender(settings: dict, seed: int) -> BoundedBlender:
    blend = dict(settings["blend"])
    params = {k: v for k, v in blend.items() if k not in BLENDER_KEYS}
    return BoundedBlender(cap=blend["cap"], method=blend["method"], n_splits=blend["folds"],
                          choice=blend.get("choice", "one_se"), random_state=seed, **params)


def make_calibrator(settings: dict, seed: int) -> MonotoneCalibrator:
    blend = settings["blend"]
    return MonotoneCalibrator(blend["calibration"], n_splits=blend["folds"], choice=blend.get("choice", "one_se"),
                              random_state=seed)
