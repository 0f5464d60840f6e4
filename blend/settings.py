"""The settings of a run config, validated once: `load_settings` is the one function every command loads them with.

A config file holds `[extractors.<name>]` tables (`featurestore.config`), and `[tabular]` with its
`meta`, `pool.<member>` and `blend` tables (`tabular.settings`, and `BlendSettings` here). Everything is
checked before any work: unknown sections and keys, wrong kinds, out-of-range values and unknown registry
names (with the closest known one) are one `SiqaError` line naming the file and the key. What comes out is
typed and frozen: code below reads `settings.tabular.blend.method`, never a dict, and never checks again.

`[tabular.blend]`: `method` (a registered blend method or `auto`), `cap`, `folds`, `calibration` (a registered
calibrator or `auto`), `choice`, and the keyword parameters of the registered methods (their signatures are
their schema, `blend.methods`): a method's new parameter is accepted by adding it to that method's module alone.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, create_model, field_validator
from pydantic.fields import FieldInfo

from featurestore.config import DEFAULT_CONFIG, ExtractorEntry, extractor_settings, extractor_tables, read_toml
from featurestore.errors import SiqaError
from featurestore.settings import Strict, did_you_mean, registry_name
from tabular.settings import TabularSettings, validate_tabular

from .blender import COMMON_ARGUMENTS, BoundedBlender
from .calibration import MonotoneCalibrator
from .calibrators import CALIBRATORS
from .choice import CHOICES
from .methods import METHODS

#: the sections a config file may have
SECTIONS = ("extractors", "tabular")


class BlendBase(Strict):
    method: str = Field("top", description="a registered blend method (top, best, greedy, slsqp) or auto (chosen "
                                           "by inner grouped CV)")
    cap: float = Field(1.0, gt=0, le=1, description="max weight of one model; 1.0 lets the blend fall back to one "
                                                    "model")
    folds: int = Field(5, ge=2, description="inner grouped folds of `auto` for the blender and the calibrator")
    calibration: str = Field("auto", description="a registered calibrator (identity, linear, pchip, isotonic) or auto "
                                                 "(chosen by inner CV)")
    choice: Literal[CHOICES] = Field("one_se", description="how auto chooses: one_se (the simplest within one "
                                                           "standard error of the best) or max")

    @field_validator("method")
    @classmethod
    def _method(cls, method: str) -> str:
        return registry_name(method, [*METHODS.names(), "auto"], "blend method")

    @field_validator("calibration")
    @classmethod
    def _calibration(cls, calibration: str) -> str:
        return registry_name(calibration, [*CALIBRATORS.names(), "auto"], "calibrator")

    def method_parameters(self) -> dict:
        """The methods' own parameters that are set (each method's own default stands for the others)."""
        return {k: v for k, v in self.model_dump(exclude=set(BlendBase.model_fields)).items() if v is not None}


def _method_fields() -> dict:
    """Every registered method's own keyword parameters, as optional fields (unset = the method's default)."""
    import inspect

    fields = {}
    for name in METHODS.names():
        function = METHODS.get(name)
        hints = typing.get_type_hints(function, include_extras=True)
        for parameter in inspect.signature(function).parameters.values():
            if parameter.name in COMMON_ARGUMENTS or parameter.name in fields:
                continue
            annotation = hints.get(parameter.name, typing.Any)
            info = next((m for m in getattr(annotation, "__metadata__", ()) if isinstance(m, FieldInfo)), None)
            described = info.description if info is not None and info.description else f"{name}: {parameter.name}"
            fields[parameter.name] = (Optional[annotation], Field(None, description=f"{described} (default "
                                                                                   f"{parameter.default!r})"))
    return fields


BlendSettings = create_model("BlendSettings", __base__=BlendBase, __module__=__name__, __doc__="`[tabular.blend]`.",
                             **_method_fields())


class StackSettings(TabularSettings):
    """`[tabular]` with its `[tabular.blend]` typed: everything the nested CV, the pool and the blend read."""

    blend: BlendSettings = Field(BlendSettings(), description="[tabular.blend]")

    def make_blender(self, seed: int) -> BoundedBlender:
        blend = self.blend
        return BoundedBlender(cap=blend.cap, method=blend.method, n_splits=blend.folds, choice=blend.choice,
                              random_state=seed, **blend.method_parameters())

    def make_calibrator(self, seed: int) -> MonotoneCalibrator:
        blend = self.blend
        return MonotoneCalibrator(blend.calibration, n_splits=blend.folds, choice=blend.choice, random_state=seed)


@dataclass(frozen=True)
class Settings:
    """A run config, validated: where it came from, its extractors and its `[tabular]` settings."""

    source: str
    extractors: dict[str, ExtractorEntry]
    tabular: StackSettings

    def as_tables(self) -> dict:
        """The resolved settings as TOML-shaped tables (what `siqa config show` prints and a run records)."""
        return {"extractors": extractor_tables(self.extractors), "tabular": self.tabular.model_dump(mode="json")}


def settings_from(config: dict | None, source: str = "config", tabular: dict | None = None) -> Settings:
    """Settings from a parsed config (`None`: no extractors, the default preset); `tabular` overrides keys of
    its `[tabular]` section (the command line's --preset, --seed, --time-limit)."""
    config = dict(config or {})
    unknown = [section for section in config if section not in SECTIONS]
    if unknown:
        raise SiqaError(f"{source}: [{unknown[0]}]: unknown section (allowed: {', '.join(SECTIONS)})"
                        f"{did_you_mean(unknown[0], SECTIONS)}")
    for section in SECTIONS:
        if not isinstance(config.get(section, {}), dict):
            raise SiqaError(f"{source}: {section} must be a table ([{section}] ...), not {config[section]!r}")
    extractors = extractor_settings(config.get("extractors", {}), source)
    section = {**config.get("tabular", {}), **(tabular or {})}
    return Settings(source, extractors, validate_tabular(StackSettings, section, source))


def load_settings(path: str | Path | None = None, tabular: dict | None = None) -> Settings:
    """The settings of the config file at `path` (default configs/default.toml), validated; `tabular` as in
    `settings_from`."""
    path = Path(path) if path else DEFAULT_CONFIG
    return settings_from(read_toml(path), str(path), tabular)
