"""Config values checked against the kind of their default: one clear line instead of a failure per image
(`size = "huge"`) or a traceback (`folds = "three"`). Numbers (int and float) stand for each other; a bool is
not a number here; a default of None accepts anything."""
from __future__ import annotations


def kind(value) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def mismatch(key: str, value, default) -> str | None:
    """None when `value` is of the kind of `default`, else the one-line problem."""
    if default is None or kind(value) == kind(default):
        return None
    return f"{key} = {value!r} should be {kind(default)} (like the default {default!r})"
