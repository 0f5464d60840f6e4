"""The import graph runs one way: configs < featurestore < tabular < blend < cli.py / siqa.py.

Every module of those packages is parsed with `ast` (imports inside functions included), and no module may
import from a layer above its own. Inside featurestore, the extraction side (datasets, io, extractors) never
imports the store or its SQL views, and the store never imports the SQL views.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"configs": 0, "featurestore": 1, "tabular": 2, "blend": 3, "cli": 4, "siqa": 4}
# (importer prefixes, forbidden import prefixes) inside featurestore
STORE_SIDE = [
    (("featurestore.datasets", "featurestore.io", "featurestore.extractors"),
     ("featurestore.store", "featurestore.sql", "featurestore.ray_backend")),
    (("featurestore.store",), ("featurestore.sql",)),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out = {}
    for name in LAYERS:
        if (ROOT / f"{name}.py").is_file():
            out[name] = ROOT / f"{name}.py"
        for path in sorted((ROOT / name).rglob("*.py")) if (ROOT / name).is_dir() else []:
            out[_module_name(path)] = path
    return out


def imported(module: str, source: str, is_package: bool) -> set[str]:
    """Dotted names a module imports (for `from X import a`, both X and X.a: `a` may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            out.add(target)
            out.update(f"{target}.{alias.name}" for alias in node.names)
    return out


def violations(module: str, targets: set[str]) -> list[str]:
    rank = LAYERS[module.split(".")[0]]
    found = [f"{module} imports {t} (layer {t.split('.')[0]} is above {module.split('.')[0]})"
             for t in sorted(targets) if LAYERS.get(t.split(".")[0], -1) > rank]
    for importers, forbidden in STORE_SIDE:
        if module.startswith(importers):
            found += [f"{module} imports {t} (the store side sits above it)" for t in sorted(targets)
                      if any(t == f or t.startswith(f + ".") for f in forbidden)]
    # `from X import a` yields X and X.a: name each offending import once, by its shortest name
    named = {line.split(" imports ")[1].split(" ")[0] for line in found}
    return [line for line in found
            if not any(line.split(" imports ")[1].startswith(other + ".") for other in named)]


def test_the_checker_sees_imports_of_every_form():
    source = ("from blend.report import x\nimport cli\nfrom .. import blender\nfrom ..store import FeatureStore\n"
              "def f():\n    from featurestore import sql\n")
    targets = imported("featurestore.extractors.colour", source, is_package=False)
    assert {"blend.report", "cli", "featurestore.blender", "featurestore.store", "featurestore.sql"} <= targets
    assert len(violations("featurestore.extractors.colour", targets)) == 4  # blend, cli, store, sql
    assert violations("blend.report", imported("blend.report", "from tabular import folds\n", False)) == []
    assert violations("tabular.nested", imported("tabular.nested", "from blend.blender import Blender\n", False))


def test_modules_are_found():
    modules = _modules()
    assert {"cli", "siqa", "configs", "featurestore.store", "featurestore.sql", "tabular.folds",
            "blend.submission"} <= set(modules)
    assert len(modules) > 40


@pytest.mark.parametrize("module", sorted(_modules()))
def test_no_module_imports_from_a_layer_above(module):
    path = _modules()[module]
    assert violations(module, imported(module, path.read_text(), path.name == "__init__.py")) == []
