"""How siqa puts a file on disk: whole or not at all, never through a symbolic link.

`write_file(path, content, validate)` writes `content` (bytes, or a function given the open binary file)
into a new hidden temp file beside `path` (`.<name>.<32 hex>.tmp`), created with O_CREAT|O_EXCL|O_NOFOLLOW so
a link or file planted at that name is never followed nor reused; fsyncs it; lets `validate` look at the
finished temp file; then renames it over `path` and fsyncs the folder. Until the rename the old file is
untouched, so a full disk, a failed validation or a kill leaves the old file as it was (and no temp file,
except after a kill). A `path` that is itself a symbolic link is refused: siqa replaces files, it does not
write wherever a link points.

Every file siqa writes goes through here: the store's shards and catalog files (`store.layout`) and every
`--out` (`blend.outputs.write_output` adds the rule about which folders a command may write into).
"""
from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import SiqaError
from .io import fsync_path

#: the temp files `write_file` makes: `.<name>.<32 hex>.tmp` (a store deletes its killed writers' ones by this)
TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")

Content = bytes | Callable[[BinaryIO], None]


def _create_temp(path: Path) -> tuple[Path, int]:
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return temp, os.open(temp, flags, 0o666)


def check_replaceable(path: Path) -> None:
    """`SiqaError` unless `path` is absent or a regular file (a link there is refused, not followed)."""
    if path.is_symlink():
        raise SiqaError(f"{path}: is a symbolic link; siqa does not write through links - remove it or "
                        f"choose another path")
    if path.exists() and not path.is_file():
        raise SiqaError(f"{path}: exists and is not a regular file; choose another path")


def write_file(path: str | Path, content: Content, validate: Callable[[Path], None] | None = None) -> Path:
    """Write `content` to `path` atomically (see the module docstring); `validate(temp_path)` may raise
    `SiqaError` to keep the old file. Returns `path`."""
    path = Path(path)
    check_replaceable(path)
    kept = "the old file is unchanged" if path.exists() else "nothing was written"
    temp, replaced = None, False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp, fd = _create_temp(path)
        with os.fdopen(fd, "wb") as fh:
            if isinstance(content, bytes):
                fh.write(content)
            else:
                content(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if validate is not None:
            validate(temp)
        os.replace(temp, path)
        replaced = True
        fsync_path(path.parent)
    except OSError as exc:
        if replaced:  # only flushing the folder failed: the new file is in place
            kept = "it was written, but its folder could not be flushed to disk"
        raise SiqaError(f"{path}: cannot write ({exc.strerror or exc}); {kept}") from None
    finally:
        if temp is not None and not replaced:
            temp.unlink(missing_ok=True)
    return path
