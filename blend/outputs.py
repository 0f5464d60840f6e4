"""Where a command may write: every file a command writes on the user's behalf (`--out` of sql, predict and
submit; the report's HTML, figures and data files) goes through `write_output`.

A feature store and a run folder are written by their own code only (`featurestore.store`, `blend.runfolder`),
so a target inside either is refused unless it is one of the command's own `products` (a run's
`submission.zip`, its `report.html` and `report/*` files). Targets are compared by where they really lead
(symbolic links resolved): a link to a store is refused like the store, and a product whose folder was made
a link leading out of its run is refused too. The write itself is `featurestore.outputs.write_file`: atomic,
validated before it replaces the old file, never through a link.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from featurestore.errors import SiqaError
from featurestore.outputs import Content, check_replaceable, write_file
from featurestore.store import is_store

from .runfolder import is_run


def _real(path: Path) -> Path:
    """Where `path` leads: its folder with every link resolved, and its own name (a link there is refused)."""
    return Path(os.path.realpath(path.parent)) / path.name


def _owning_folder(real: Path) -> tuple[str, Path] | None:
    for folder in real.parents:
        if is_store(folder):
            return "feature store", folder
        if is_run(folder):
            return "run folder", folder
    return None


def check_target(path: str | Path, products: Iterable[str | Path] = ()) -> None:
    """`SiqaError` unless a command that owns `products` may write `path` (see the module docstring); a
    command checks its targets this way before its work, and `write_output` again when it writes."""
    path = Path(path)
    check_replaceable(path)
    real = _real(path)
    owner = _owning_folder(real)
    if real in {_real(Path(p)) for p in products}:
        if owner is None:
            raise SiqaError(f"{path}: leads out of its run folder through a symbolic link; siqa does not write "
                            f"there - remove the link")
    elif owner is not None:
        kind, folder = owner
        raise SiqaError(f"{path}: inside the {kind} {folder}; siqa writes there only through that folder's own "
                        f"commands - choose a path outside it")


def write_output(path: str | Path, content: Content, validate: Callable[[Path], None] | None = None,
                 products: Iterable[str | Path] = ()) -> Path:
    """`check_target(path, products)`, then `write_file(path, content, validate)`."""
    check_target(path, products)
    return write_file(path, content, validate)
