"""The runs fit on a store (`runs.json`), and how `siqa store gc` finds each of them again.

An entry is {run id: {"path": absolute run folder, "folders": feature folders it reads}}. `siqa oof` registers
its run before fitting (under the run's own lock, so a `gc` meanwhile sees a run being written and keeps its
folders) and again once the run is written. A run is found by the id in its manifest (`siqa-run.json`, written
by `blend.runfolder`; the store reads only its id): at the registered path, else among the folders beside it
(`mv runs/r runs/best` is followed and the entry updated). A run that is at neither is gone only when the
folder that held it is still there (it was deleted, or replaced by another run); when that folder itself is
gone, where the run went cannot be told and `gc` refuses, unless told to forget such runs.
Entries of a siqa before run ids ({path: folders}) are read as runs without an id, found at their path only.
"""
from __future__ import annotations

import fcntl
import json
from pathlib import Path

from .errors import SiqaError

#: the manifest that makes a folder a siqa run (`blend.runfolder` writes it)
RUN_MARKER = "siqa-run.json"


def run_lock_file(run_dir: Path) -> Path:
    """The file a writer of `run_dir` holds an flock on (beside the folder, which is swapped whole)."""
    return run_dir.with_name(f".{run_dir.name}.siqa-lock")


def manifest_run_id(folder: Path) -> str | None:
    """The run id in a run folder's manifest (unverified: it only decides what gc keeps), or None."""
    marker = folder / RUN_MARKER
    try:
        if marker.is_symlink() or not marker.is_file():
            return None
        return str(json.loads(marker.read_text())["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def being_written(run_dir: Path) -> bool:
    """Whether a siqa holds the lock of `run_dir` now (an oof fitting or writing it)."""
    try:
        with open(run_lock_file(run_dir), "rb") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
    except OSError:
        pass  # no lock file: nobody writes it
    return False


def find_run(run_id: str | None, registered: Path) -> Path | None:
    """Where the run registered at `registered` is now: there, beside it (moved), there being written, or None
    (deleted or replaced). Raises when it cannot tell: the folder that held it is gone."""
    if registered.is_dir() and (run_id is None and (registered / RUN_MARKER).is_file()
                                or run_id is not None and manifest_run_id(registered) == run_id):
        return registered
    cannot_tell = (f"{registered}: a run fit on this store was there, and its folder {registered.parent} is gone "
                   f"or unreadable, so where it went cannot be told; put it back, or pass --forget-missing to "
                   f"delete the features only it used")
    if run_id is not None and registered.parent.is_dir():
        try:
            for sibling in sorted(registered.parent.iterdir()):
                if sibling.is_dir() and not sibling.is_symlink() and manifest_run_id(sibling) == run_id:
                    return sibling
        except OSError:
            raise SiqaError(cannot_tell) from None
    if being_written(registered):
        return registered
    if not registered.parent.is_dir():
        raise SiqaError(cannot_tell)
    return None


def read_runs(path: Path) -> dict[str, dict]:
    """run id (or, for an entry of an older siqa, its path) -> {"path", "folders", "id"}."""
    try:
        raw = json.loads(path.read_text()) if path.exists() else {}
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        runs = {}
        for key, entry in raw.items():
            if isinstance(entry, list):  # older siqa: path -> folders
                runs[key] = {"path": key, "folders": [str(f) for f in entry], "id": None}
            else:
                runs[key] = {"path": str(entry["path"]), "folders": [str(f) for f in entry["folders"]], "id": key}
        return runs
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SiqaError(f"{path}: unreadable ({str(exc).splitlines()[0]}); `store gc` cannot tell which feature "
                        "folders runs still use - fix or delete it") from None


def runs_text(runs: dict[str, dict]) -> bytes:
    """`runs` as runs.json holds them (an entry of an older siqa kept in its own form)."""
    stored = {key: ({"path": e["path"], "folders": sorted(set(e["folders"]))} if e["id"] else sorted(set(e["folders"])))
              for key, e in runs.items()}
    return json.dumps(stored, indent=1, sort_keys=True).encode()


def locate_runs(runs: dict[str, dict], forget_missing: bool) -> dict[str, dict]:
    """The entries of runs still there, each with its path as found now (moved runs followed)."""
    alive = {}
    for key, entry in runs.items():
        try:
            where = find_run(entry["id"], Path(entry["path"]))
        except SiqaError:
            if not forget_missing:
                raise
            where = None
        if where is not None:
            alive[key] = {**entry, "path": str(where)}
    return alive
