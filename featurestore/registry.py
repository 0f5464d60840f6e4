"""One registry mechanism for every pluggable part: extractors, pool models, blend methods, calibrators.

Adding a component is one file in the registry's package plus one decorator line:

    METHODS = Registry("blend method", package="blend.methods")

    @METHODS.register("greedy")          # in blend/methods/greedy.py
    class GreedyBlend: ...

The registry imports every module of its package the first time it is read (`names()`, `get()`, iteration,
`in`), so no hand-kept module list can fall out of date, and contract tests iterate `names()` to cover every
component. Registration order is the order names are returned in; where that order matters (breaking ties),
the registry says so through `priority`, never through the order modules happen to be imported.
"""
from __future__ import annotations

import pkgutil
from contextlib import contextmanager
from importlib import import_module
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str | None = None):
        self.kind = kind            # "extractor", "pool model", ...: used in error messages
        self.package = package      # modules of this package are imported on first read
        self._entries: dict[str, T] = {}
        self._priority: dict[str, int] = {}
        self._aliases: dict[str, str] = {}  # old name -> current name, accepted by get() and `in`
        self._loaded = package is None

    def register(self, name: str | None = None, *, priority: int = 0) -> Callable[[T], T]:
        """Decorator: register a class (or function) under `name` (default: its `name` attribute).

        `priority` orders `names()` (lower first, then name): a stable, explicit tie-break for callers
        that pick the first best entry.
        """
        def decorate(obj: T) -> T:
            key = name if name is not None else getattr(obj, "name")
            if key in self._entries and self._entries[key] is not obj:
                raise ValueError(f"{self.kind} {key!r} registered twice")
            if name is not None and isinstance(obj, type):
                obj.name = key
            self._entries[key] = obj
            self._priority[key] = priority
            return obj
        return decorate

    def alias(self, old: str, new: str) -> None:
        """Accept `old` (a former name, e.g. from an older config) as `new`; `names()` lists only `new`."""
        self._aliases[old] = new

    def canonical(self, name: str) -> str:
        """The current name of `name` (itself unless it is a former name)."""
        return self._aliases.get(name, name)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        package = import_module(self.package)
        for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if not module.name.startswith("_"):
                import_module(f"{self.package}.{module.name}")

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries, key=lambda k: (self._priority[k], k))

    def get(self, name: str) -> T:
        """The entry, or a KeyError whose message lists what is known (callers turn it into a SiqaError)."""
        self._load()
        try:
            return self._entries[self.canonical(name)]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r} (known: {', '.join(self.names())})") from None

    def __contains__(self, name: object) -> bool:
        self._load()
        return isinstance(name, str) and self.canonical(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._entries[n]) for n in self.names()]

    @contextmanager
    def registered(self, *objs: T):
        """Register `objs` (by their `name`) for the duration of a `with` block, then forget them: test-only
        components that must not leak into the registry other tests iterate."""
        self._load()
        names = [getattr(obj, "name") for obj in objs]
        for obj in objs:
            self.register()(obj)
        try:
            yield
        finally:
            for key in names:
                self._entries.pop(key, None)
                self._priority.pop(key, None)
