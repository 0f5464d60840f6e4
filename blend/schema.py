"""Every settings key with its type, default and meaning, read from the schema itself (`siqa config schema`):
the documentation cannot drift from what `load_settings` accepts, and a contract test walks the same rows."""
from __future__ import annotations

import json
import types
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from featurestore.extractors import EXTRACTORS
from tabular.models import POOL
from tabular.settings import MetaSettings, PoolMember

from .settings import BlendSettings, StackSettings

#: fields of [tabular] that are tables of their own (listed as their own sections)
TABLES = ("meta", "pool", "blend")


def type_name(annotation) -> str:
    """`int`, `list[str]`, `float | None`, `'auto' | 'fp32'`: the annotation as a reader of a TOML file needs it."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return type_name(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join("none" if a is type(None) else type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]" if args else getattr(origin, "__name__", str(origin))
    if annotation is typing.Any or annotation is object:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _rows(section: str, model: type[BaseModel], skip: tuple[str, ...] = ()) -> list[dict]:
    rows = []
    for key, field in model.model_fields.items():
        if key in skip:
            continue
        default = None if field.default is PydanticUndefined else field.default
        if isinstance(default, BaseModel):
            continue
        rows.append({"section": section, "key": key, "type": type_name(field.annotation),
                     "default": json.loads(json.dumps(default, default=str)), "meaning": field.description or ""})
    return rows


def schema_rows() -> list[dict]:
    """One row per settings key: section, key, type, default, meaning."""
    rows = []
    for name, cls in EXTRACTORS.items():
        rows.append({"section": f"extractors.{name}", "key": "enabled", "type": "bool", "default": True,
                     "meaning": "false: configured but not run"})
        rows += _rows(f"extractors.{name}", cls.Settings)
    rows += _rows("tabular", StackSettings, TABLES)
    rows += _rows("tabular.meta", MetaSettings)
    rows += _rows("tabular.blend", BlendSettings)
    rows += _rows("tabular.pool.<member>", PoolMember, ("params",))
    for name, cls in POOL.items():
        rows += _rows(f"tabular.pool.<member> with model = {name!r}", cls.Settings)
    return rows


def schema_text(rows: list[dict], markdown: bool = False) -> str:
    """The rows as text grouped by section, or as one Markdown table per section."""
    out, section = [], None
    for row in rows:
        if row["section"] != section:
            section = row["section"]
            out += ["", f"[{section}]"] if not markdown else ["", f"`[{section}]`", "",
                                                               "| key | type | default | meaning |", "|---|---|---|---|"]
        default = json.dumps(row["default"])
        if markdown:
            out.append(f"| `{row['key']}` | {row['type']} | `{default}` | {row['meaning']} |")
        else:
            out.append(f"  {row['key']} ({row['type']}, default {default}): {row['meaning']}")
    return "\n".join(out).lstrip("\n")
