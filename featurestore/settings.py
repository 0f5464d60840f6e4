"""Typed settings: the pydantic base every settings schema derives from, and its errors as one line.

Every setting siqa reads (an extractor's config, `[tabular]`, `[tabular.meta]`, `[tabular.blend]`,
`[tabular.pool.<member>]`) is a field of a `Strict` model, declared next to the code that reads it and
validated once, when the config is loaded (`blend.settings.load_settings`). `Strict` refuses unknown keys
and wrong kinds (no string "false" for a bool, no 3.0 for a whole number; a whole number is accepted
for a float); constraints (`Field(ge=...)`, `Literal[...]`) refuse out-of-range values; `registry_name`
refuses a name no registry knows, with the closest known one. `one_line` turns pydantic's report into
the one line siqa prints: file, the key's full path, what was given and what is allowed.
"""
from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.fields import FieldInfo

from .errors import SiqaError


class Strict(BaseModel):
    """A settings table: unknown keys refused, no coercion between kinds, immutable once validated."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def did_you_mean(value: str, known: Iterable[str]) -> str:
    """`; did you mean 'greedy'?` for the closest of `known`, or nothing."""
    close = difflib.get_close_matches(str(value), list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def registry_name(value: str, known: Iterable[str], what: str) -> str:
    """`value` when it is one of `known`; else a ValueError naming what is known and the closest name."""
    known = list(known)
    if value not in known:
        raise ValueError(f"unknown {what} {value!r} (known: {', '.join(known)}){did_you_mean(value, known)}")
    return value


def _location(where: str, loc: tuple) -> str:
    """`[tabular.blend] method` (or `metrics[1]`) from a section name and pydantic's location inside it: the
    tables on the way are the section, the rest is the key, list positions in brackets."""
    loc = [part for part in loc if not (isinstance(part, str) and (part.startswith("function-") or "[" in part))]
    split = next((max(i - 1, 0) for i, part in enumerate(loc) if isinstance(part, int)), len(loc) - 1)
    tables, key = [str(p) for p in loc[:split]], "".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc[split:])
    section = ".".join(p for p in [where, *tables] if p)
    return f"[{section}] {key}".strip() if section else key


def one_line(error: ValidationError, source: str, where: str, model: type[BaseModel] | None = None,
             kind: type[Exception] = SiqaError) -> Exception:
    """The first problem of `error` as `<source>: [<where>.<table>] <key> = <value>: <what is wrong>`."""
    first = error.errors(include_url=False)[0]
    place = _location(where, tuple(first["loc"]))
    if first["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, tuple(first["loc"])[:-1]) if model is not None else []
        key = str(first["loc"][-1])
        hint = f" (allowed: {', '.join(allowed)}){did_you_mean(key, allowed)}" if allowed else " (it takes no keys)"
        return kind(f"{source}: {place}: unknown key{hint}")
    message = first["msg"].removeprefix("Value error, ")
    given = first.get("input")
    shown = "" if isinstance(given, dict) else f" = {given!r}"
    return kind(f"{source}: {place}{shown}: {message}")


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys the table at `loc` of `model` takes (for the "unknown key" line)."""
    for part in loc:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        if field is None:
            continue
        inner = _model_in(field.annotation)
        if inner is None:
            return []
        model = inner
    return list(model.model_fields)


def _model_in(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def validate(model: type[BaseModel], values: dict, source: str, where: str,
             error: type[Exception] = SiqaError) -> BaseModel:
    """`model` validated from `values`, or the one-line `error` (SiqaError unless said otherwise)."""
    try:
        return model.model_validate(values)
    except ValidationError as problem:
        raise one_line(problem, source, where, model, error) from None


def _settings_type(annotation) -> Any:
    """A constructor annotation as a settings field type: sequences are TOML arrays (lists)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *metadata = typing.get_args(annotation)
        return typing.Annotated[(_settings_type(inner), *metadata)]
    if origin is tuple:
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return list[args[0]] if len(set(args)) == 1 else list
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_settings_type(a) for a in typing.get_args(annotation))]
    return annotation


def nested_model(owner: type, base: type[BaseModel], fields: dict, doc: str) -> type[BaseModel]:
    """`owner.Settings`: a model made from `fields`, named and placed as if declared inside `owner`'s body (so
    pickle finds it where it finds `owner`)."""
    model = create_model("Settings", __base__=base, __module__=owner.__module__, __doc__=doc, **fields)
    model.__qualname__ = f"{owner.__qualname__}.Settings"
    return model


def signature_model(cls: type, skip: Iterable[str], glossary: dict[str, FieldInfo] | None = None) -> type[Strict]:
    """`cls.Settings` made from the annotated keyword parameters of `cls.__init__` less `skip`: a scikit-learn
    style estimator's signature is its settings schema, so a pool model declares its settings once, in
    `__init__`. Fields keep the signature's defaults; a parameter's meaning and constraints come from its
    `Annotated[..., Field(...)]`, else from `glossary[name]`."""
    import inspect

    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    fields = {}
    for parameter in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if parameter.name in skip or parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
            continue
        default = list(parameter.default) if isinstance(parameter.default, tuple) else parameter.default
        annotation = hints.get(parameter.name, Any)
        if typing.get_origin(annotation) is not typing.Annotated and parameter.name in (glossary or {}):
            annotation = typing.Annotated[annotation, glossary[parameter.name]]
        fields[parameter.name] = (_settings_type(annotation), default)
    return nested_model(cls, Strict, fields, f"The `[tabular.pool.<member>]` parameters of {cls.__name__}.")
