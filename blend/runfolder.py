"""A run folder on disk: what marks it as a siqa run, how it is written whole or not at all, who may write
it at a time, and how a reader knows the files it loads are the ones the run wrote.

- Marker and manifest: `siqa-run.json` = {"siqa_run": FORMAT, "run_id", "files": {relative path: sha256}}.
  The run id (new for every write) is how a feature store's registry finds a run that was moved. Every file
  below the folder (models/, fits/ with safetensors + JSON, ...) is listed. A reader reads each file it needs
  once, checks its hash and only then uses those bytes (`RunFolder.read`): an integrity check, against a
  damaged or half-copied run and a file changed by hand. It is not a signature, and needs none: a run holds
  data only (JSON, numpy arrays, CSV, Parquet, safetensors; `blend.compiled`), so loading one - from anyone -
  executes no code from it. Runs of an older siqa (FORMAT 1, pickled models) are refused: fit them again.
- Refusal: a non-empty folder without `siqa-run.json` is not a run, whatever file names it holds (a user may
  have a run.json of their own; a run of a siqa older than the manifest is refused too); `write_run` refuses
  to replace it, and refuses a link as its target.
- Atomic writes: the new run is written into a hidden sibling folder, every file and folder fsynced, then
  swapped in with two renames (old -> hidden `.NAME.siqa-old-*`, new -> NAME); the old run is deleted only
  after the new one is in place. Any failure (a full disk, a kill) leaves the old run as it was; a kill
  between the two renames is repaired by the next writer (the old run is renamed back).
- Lock: `run_lock(dir)` takes an flock on the sibling `.NAME.siqa-lock`; a second writer of the same run
  is refused with one line naming the lock, instead of racing.
`run_store(run_dir)` says which feature store a run reads (recorded in its run.json, or a `--store`).
Files added after the run was written (report.html, submission.zip) are not in the manifest: they are
outputs, never loaded as code or data by siqa. `fits/` (adapters as safetensors + JSON, written by pool
members while fitting) is hard-linked into the new run and listed in the manifest like every other file.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from featurestore.errors import SiqaError
from featurestore.io import fsync_path, sha256_file
from featurestore.run_registry import RUN_MARKER, run_lock_file

MARKER = RUN_MARKER
#: 2: data only (1: signed with a per-user key, models pickled)
FORMAT = 2
#: where pool members keep their files while fitting (`blend.run.FITS_DIR`): a folder holding only it is a
#: run in the making
FITS = "fits"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _listing(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MARKER)


def new_run_id() -> str:
    return uuid.uuid4().hex


def sign(folder: Path, run_id: str) -> None:
    """Write `siqa-run.json`: the run's id and the hash of every file below `folder`."""
    files = {p.relative_to(folder).as_posix(): sha256_file(p) for p in _listing(folder)}
    text = json.dumps({"siqa_run": FORMAT, "run_id": run_id, "files": files}, indent=1, sort_keys=True)
    (folder / MARKER).write_text(text + "\n")


def is_run(folder: Path) -> bool:
    return (folder / MARKER).is_file() and not (folder / MARKER).is_symlink()


class RunFolder:
    """Verified reads from a run folder (see the module docstring)."""

    def __init__(self, path):
        self.path = Path(path)
        marker = self.path / MARKER
        if not marker.is_file():
            raise SiqaError(f"{self.path}: not a complete run folder (no {MARKER}); run `siqa oof` first"
                            + ("; a run of an older siqa: run `siqa oof` again" if (self.path / "run.json").is_file()
                               else ""))
        try:
            manifest = json.loads(marker.read_text())
            self.files = {str(k): str(v) for k, v in manifest["files"].items()}
            self.run_id = str(manifest["run_id"]) if manifest.get("run_id") else None
            written = manifest["siqa_run"]
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            raise SiqaError(f"{marker}: damaged run manifest; run `siqa oof` again") from None
        if written != FORMAT:
            raise SiqaError(f"{self.path}: a run of {'an older' if written == 1 else 'another'} siqa (run format "
                            f"{written}, this siqa reads {FORMAT}: data only, no pickled models); fit it again with "
                            f"`siqa oof`")

    def has(self, relative) -> bool:
        return Path(relative).as_posix() in self.files

    def read(self, relative) -> bytes:
        """The bytes of one listed file, after checking them against the signed manifest."""
        name = Path(relative).as_posix()
        if name not in self.files:
            raise SiqaError(f"{self.path}: not a complete run folder (no {name}); run `siqa oof` again")
        try:
            data = (self.path / name).read_bytes()
        except OSError as exc:
            raise SiqaError(f"{self.path / name}: unreadable ({exc.strerror or exc}); run `siqa oof` again") from None
        if _sha256(data) != self.files[name]:
            raise SiqaError(f"{self.path / name}: changed since the run was written (its hash differs from "
                            f"{MARKER}); not loaded; run `siqa oof` again")
        return data


def run_store(run_dir, override=None) -> Path:
    """The feature store of a run: `override` if given, else the one it was fit on (absolute path recorded
    in run.json; runs written before that recorded the path as given, relative to where oof ran)."""
    if override:
        return Path(override)
    run_dir = Path(run_dir)
    try:
        summary = json.loads((run_dir / "run.json").read_text())
    except FileNotFoundError:
        raise SiqaError(f"{run_dir}: not a run folder (no run.json); run `siqa oof` first") from None
    origin = (summary.get("source") or {}).get("origin") or {}
    if origin.get("kind") != "store":
        raise SiqaError(f"{run_dir}: this run was fit on the feature table {origin.get('path', '?')}, "
                        f"not on a feature store")
    return Path(summary.get("store") or origin["root"])


def check_target(run_dir: Path) -> None:
    """A run may be written at `run_dir` only if it is absent, empty, or a siqa run (its manifest says so: file
    names such as run.json do not, a user may have those too). A link is refused: siqa would write elsewhere."""
    if run_dir.is_symlink():
        raise SiqaError(f"{run_dir}: is a link; give the folder itself as --run")
    if run_dir.exists() and not run_dir.is_dir():
        raise SiqaError(f"{run_dir}: exists and is not a folder; choose another --run")
    entries = [p.name for p in run_dir.iterdir()] if run_dir.is_dir() else []
    if entries == [FITS] and (run_dir / FITS).is_dir():
        return  # a run being fit (its members keep their files in fits/ while fitting) or killed while fitting
    if run_dir.is_dir() and not is_run(run_dir) and entries:
        older = " (a run of a siqa older than that manifest: move or delete it)" if "run.json" in entries else ""
        raise SiqaError(f"{run_dir}: not empty and not a siqa run folder (no {MARKER}){older}; siqa does not "
                        f"replace it - choose a new or empty --run folder")


def _hidden(run_dir: Path, kind: str) -> Path:
    return run_dir.with_name(f".{run_dir.name}.siqa-{kind}-{uuid.uuid4().hex}")


def _recover(run_dir: Path) -> None:
    """A writer killed between its two renames left the old run under its hidden name: put it back."""
    if not run_dir.exists():
        old = sorted(run_dir.parent.glob(f".{run_dir.name}.siqa-old-*"))
        if old:
            os.rename(old[-1], run_dir)
    for stale in run_dir.parent.glob(f".{run_dir.name}.siqa-new-*"):  # only under the lock: a dead writer's
        shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def run_lock(run_dir):
    """Exclusive lock of one run folder (on a sibling file, since the folder itself is swapped)."""
    run_dir = Path(run_dir).absolute()
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        lock = run_lock_file(run_dir)
        fh = open(lock, "a+")
    except OSError as exc:
        raise SiqaError(f"{run_dir}: cannot write a run here ({exc.strerror or exc})") from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SiqaError(f"{run_dir}: another siqa is writing this run (lock {lock} is held); wait for it to "
                            f"finish or choose another --run") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_run(run_dir, write: Callable[[Path], None], run_id: str) -> None:
    """`write(folder)` fills a new hidden folder; it is signed with `run_id`, fsynced and swapped in for
    `run_dir`. Call under `run_lock(run_dir)`."""
    run_dir = Path(run_dir).absolute()
    _recover(run_dir)
    check_target(run_dir)
    stage = _hidden(run_dir, "new")
    try:
        stage.mkdir(parents=True)
        write(stage)
        sign(stage, run_id)
        for path in sorted(stage.rglob("*"), key=lambda p: -len(p.parts)):  # files, then their folders
            fsync_path(path)
        fsync_path(stage)
        old = None
        if run_dir.exists():
            old = _hidden(run_dir, "old")
            os.rename(run_dir, old)
        try:
            os.rename(stage, run_dir)
        except BaseException:
            if old is not None:
                os.rename(old, run_dir)
            raise
        fsync_path(run_dir.parent)
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise SiqaError(f"{run_dir}: cannot write the run ({exc.strerror or exc}); the previous run, if any, "
                        f"is unchanged") from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
