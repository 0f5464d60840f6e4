"""The store on disk: what marks a folder as a store, folder naming, the Arrow schema of shards, atomic
writes, the writer lock, and the catalog files (pairs.parquet, views.json, timings.json, runs.json).

A folder is a store when it holds `siqa-store.json`, written when siqa starts a store in a new or empty
folder. A store of a siqa before that marker is one whose every entry is a name a store holds, with features/
and a bookkeeping file of siqa's beside it (a pairs.parquet alone may be the user's own table); the marker is
added to it.
Any other folder is refused as a store before anything is written in it.

Each write goes to a temporary name, is fsynced and renamed, so a reader sees a whole file or none and a
killed writer leaves whole shards only; the temporary files of a killed writer are deleted by the next
one. A shard is named after a hash of the keys it holds, in order: the same work gives the same names,
and two different shards cannot collide. A store-wide lock (flock on `.lock`) serialises writers.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..datasets import COLUMNS, PairTable
from ..errors import SiqaError
from ..extractors.base import IMAGE_KEY, PAIR_KEY, Column, Extractor
from ..outputs import TEMP_NAME, write_file
from .. import run_registry

log = logging.getLogger(__name__)

__all__ = ["IMAGE_KEY", "LEVEL_KEYS", "PAIR_KEY", "PAIRS_SCHEMA", "Catalog", "arrow_schema", "column_numpy", "is_store",
           "to_arrow"]

#: the key column of each level's shards
LEVEL_KEYS = {"image": IMAGE_KEY, "pair": PAIR_KEY}
PAIRS_SCHEMA = pa.schema([pa.field(c, pa.float64() if c == "label" else pa.string()) for c in COLUMNS])


def arrow_schema(key: str, columns: list[Column]) -> pa.Schema:
    fields = [pa.field(key, pa.string(), nullable=False)]
    for c in columns:
        fields.append(pa.field(c.name, pa.float64() if c.dim == 0 else pa.list_(pa.float32(), c.dim)))
    return pa.schema(fields)


def to_arrow(key: str, keys: list[str], columns: list[Column], values: dict[str, np.ndarray]) -> pa.Table:
    arrays = [pa.array(keys, pa.string())]
    for c in columns:
        v = np.asarray(values[c.name])
        if c.dim == 0:
            arrays.append(pa.array(v.astype(np.float64), pa.float64()))
        else:
            flat = pa.array(np.ascontiguousarray(v, dtype=np.float32).reshape(-1), pa.float32())
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, c.dim))
    return pa.Table.from_arrays(arrays, schema=arrow_schema(key, columns))


def column_numpy(column: pa.ChunkedArray, dim: int) -> np.ndarray:
    """Arrow column -> (n,) float64 or (n, dim) float32."""
    arr = column.combine_chunks()
    if dim == 0:
        return arr.to_numpy(zero_copy_only=False).astype(np.float64)
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)


#: the file that makes a folder a feature store, and every name a store holds
STORE_MARKER = "siqa-store.json"
STORE_ENTRIES = {STORE_MARKER, "pairs.parquet", "views.json", "timings.json", "runs.json", "pixels.json", "features",
                 ".lock"}
#: what a store of an older siqa holds beside features/ (`siqa predict` into a new store leaves only .lock)
STORE_BOOKKEEPING = {"views.json", "timings.json", "runs.json", ".lock"}


def _entries(folder: Path) -> list[str]:
    """The names in `folder` but the temp files of killed writers."""
    return sorted(p.name for p in folder.iterdir() if not TEMP_NAME.fullmatch(p.name)) if folder.is_dir() else []


def is_store(folder: Path) -> bool:
    """Whether `folder` is a feature store: it holds the marker, or it is a store of an older siqa (nothing but
    a store's own names, features/ and a bookkeeping file among them). A user's folder that merely holds a
    `pairs.parquet` is not one."""
    if (folder / STORE_MARKER).is_file() and not (folder / STORE_MARKER).is_symlink():
        return True
    held = set(_entries(folder))
    return held <= STORE_ENTRIES and "features" in held and bool(held & STORE_BOOKKEEPING)


def write_atomic(write, path: Path) -> None:
    """`write(file)` into `path` through `featurestore.outputs.write_file`: a reader sees the old file or the
    new one, never a part; a kill leaves at most a temp file named `TEMP_NAME`."""
    write_file(path, write)


def write_parquet(table: pa.Table, path: Path) -> None:
    write_atomic(lambda fh: pq.write_table(table, fh, compression="zstd"), path)


def read_shard(shard: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(shard, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        # Never written by this store (writes are atomic): damaged since, or put there by hand.
        raise SiqaError(f"{shard}: unreadable ({str(exc).splitlines()[0]}); "
                        "delete it and run `siqa features` again to recompute what it held") from None


class Catalog:
    """Paths, shards and catalog files of the store at `root`; everything but computing features."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # --- what makes a folder a store ---------------------------------------------------------------
    def check_store(self, create: bool = False) -> None:
        """Refuse a folder that is not a store (`is_store`); a store of an older siqa gets its marker.
        `create`: a missing or empty folder becomes a store. Called before a command writes into the folder."""
        if (self.root / STORE_MARKER).is_file() and not (self.root / STORE_MARKER).is_symlink():
            return
        if self.root.exists() and not self.root.is_dir():
            raise SiqaError(f"{self.root}: cannot use as a feature store (not a folder); choose another --store")
        if not self.root.exists() and not create:
            raise SiqaError(f"{self.root}: no feature store here; run `siqa features` first")
        held = _entries(self.root)
        if not is_store(self.root) and (set(held) - {".lock"} or not create):
            shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
            raise SiqaError(f"{self.root}: not a siqa feature store (no {STORE_MARKER}"
                            + (f"; it holds {shown}" if held else "") + "); siqa starts a store only in a new or "
                            "empty folder - choose another --store")
        text = json.dumps({"siqa_store": 1}).encode()
        write_atomic(lambda fh: fh.write(text), self.root / STORE_MARKER)

    # --- paths and shards -----------------------------------------------------------------------
    @property
    def pairs_path(self) -> Path:
        return self.root / "pairs.parquet"

    @property
    def timings_path(self) -> Path:
        return self.root / "timings.json"

    def folder(self, extractor: Extractor, level: str) -> Path:
        return self.root / "features" / extractor.folder / level

    @staticmethod
    def shard_name(keys: list[str]) -> str:
        """Named by the keys it holds: the same work gives the same name; different key lists never collide."""
        return f"part-{hashlib.sha256(chr(10).join(keys).encode()).hexdigest()[:32]}.parquet"

    def write_shard(self, folder: Path, table: pa.Table) -> None:
        write_parquet(table, folder / self.shard_name(table.column(0).to_pylist()))

    @staticmethod
    def shards(folder: Path) -> list[Path]:
        return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []

    def keys(self, folder: Path, key: str) -> set[str]:
        out: set[str] = set()
        for shard in self.shards(folder):
            out.update(read_shard(shard, [key]).column(0).to_pylist())
        return out

    def read(self, folder: Path, keys: list[str] | None = None) -> pa.Table | None:
        shards = self.shards(folder)
        if not shards:
            return None
        table = pa.concat_tables(read_shard(s) for s in shards)
        if keys is not None:
            import pyarrow.compute as pc

            table = table.filter(pc.is_in(table.column(0), pa.array(list(keys), pa.string())))
        return table

    # --- the writer lock ------------------------------------------------------------------------
    @contextmanager
    def lock(self):
        """Exclusive writer lock for the whole store; the kernel releases it when its holder dies."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fh = open(self.root / ".lock", "a+")
        except OSError as exc:
            raise SiqaError(f"{self.root}: cannot use as a feature store ({exc.strerror or exc})") from None
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("store %s is in use by another siqa process; waiting", self.root)
                fcntl.flock(fh, fcntl.LOCK_EX)
            except OSError as exc:  # e.g. a network filesystem without flock
                raise SiqaError(f"{self.root / '.lock'}: cannot lock the store ({exc.strerror or exc}); "
                                "put the store on a local filesystem") from None
            try:
                self._remove_stale_temps()
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _remove_stale_temps(self) -> None:
        """Only called under the lock: a temp file of `write_atomic`'s own naming in the store's own places
        (its root, features/) is the remains of a killed writer; nothing else is touched."""
        places = [self.root.glob(".*.tmp")]
        if (self.root / "features").is_dir():
            places.append((self.root / "features").rglob(".*.tmp"))
        for found in places:
            for tmp in found:
                if TEMP_NAME.fullmatch(tmp.name) and tmp.is_file():
                    tmp.unlink(missing_ok=True)

    # --- pairs and views ------------------------------------------------------------------------
    def pairs(self) -> pd.DataFrame:
        if not self.pairs_path.exists():
            return pd.DataFrame(columns=COLUMNS)
        return read_shard(self.pairs_path).to_pandas()

    def check_writable(self) -> None:
        """Before anything is registered: the store's folders must take new files (no half-done update)."""
        for folder in (self.root, self.root / "features"):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SiqaError(f"{folder}: cannot write to the store ({exc.strerror or exc})") from None
            if not os.access(folder, os.W_OK | os.X_OK):
                raise SiqaError(f"{folder}: not writable; the store was left unchanged")

    def register_pairs(self, table: PairTable, replace: bool = False) -> None:
        """Merge `table` into pairs.parquet (a pair is its split + name). A pair already registered under the
        same split + name with other images or another label is refused, naming it, unless `replace` (then
        the new registration wins). Written with a fixed schema and no pandas metadata, so the bytes depend
        on the rows only, not on the order or number of registrations that led to them."""
        existing = read_shard(self.pairs_path) if self.pairs_path.exists() else None
        if existing is not None and not replace:
            self._refuse_changed(existing.to_pandas(), table.df)
        frames = [table.df] if existing is None else [existing.to_pandas(), table.df]
        merged = pd.concat([f for f in frames if len(f)], ignore_index=True).drop_duplicates(subset=["split", "name"], keep="last")
        merged = merged.sort_values(["split", "name"], kind="stable").reset_index(drop=True)
        arrow = pa.Table.from_pandas(merged[COLUMNS], schema=PAIRS_SCHEMA, preserve_index=False)
        arrow = arrow.replace_schema_metadata(None)
        if existing is not None and existing.equals(arrow):
            return  # a warm rerun writes nothing (and pays no fsync)
        write_parquet(arrow, self.pairs_path)

    def _refuse_changed(self, old: pd.DataFrame, new: pd.DataFrame) -> None:
        both = old.merge(new, on=["split", "name"], suffixes=("_old", ""))
        if both.empty:
            return
        same_label = (both.label_old == both.label) | (both.label_old.isna() & both.label.isna())
        changed = (both.ref_sha256_old != both.ref_sha256) | (both.dist_sha256_old != both.dist_sha256) | ~same_label
        if changed.any():
            row = both[changed].iloc[0]
            what = (f"label {row.label_old} -> {row.label}" if row.ref_sha256_old == row.ref_sha256
                    and row.dist_sha256_old == row.dist_sha256 else "other image content")
            raise SiqaError(f"{self.pairs_path}: {int(changed.sum())} pair(s) are already registered under the same "
                            f"split and name with other images or labels (e.g. {row.split}/{row['name']}: {what}); "
                            f"pass --replace to replace them, or use another --store")

    def views(self) -> dict[str, dict]:
        path = self.root / "views.json"
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SiqaError(f"{path}: unreadable ({str(exc).splitlines()[0]}); delete it and run "
                            "`siqa features` again to rewrite it") from None

    def register_views(self, extractors: list[Extractor]) -> None:
        views = self.views()
        for ex in extractors:
            views[ex.name] = {"folder": ex.folder, "level": ex.level, "config": ex.config}
        text = json.dumps(views, indent=2, sort_keys=True, default=str).encode()
        path = self.root / "views.json"
        if path.exists() and path.read_bytes() == text:
            return
        write_atomic(lambda fh: fh.write(text), path)

    # --- runs fit on this store, and garbage collection ------------------------------------------
    @property
    def runs_path(self) -> Path:
        return self.root / "runs.json"

    def runs(self) -> dict[str, dict]:
        """Run id -> {"path", "folders", "id"} of every run registered here (`featurestore.run_registry`)."""
        return run_registry.read_runs(self.runs_path)

    def run_folders(self) -> list[Path]:
        """The folder of every run registered here, where it was registered (`gc` follows moved ones)."""
        return [Path(entry["path"]) for entry in self.runs().values()]

    def register_run(self, run_dir: Path, run_id: str, folders: list[str], written: bool) -> None:
        """Record that the run `run_id` at `run_dir` reads `folders`, so `gc` keeps them while the run exists
        (called before fitting, under the run's lock, and again once it is `written`: then the run it replaced
        at `run_dir` is forgotten). Refuses a folder that is not a store, a store that cannot be written, and
        feature folders that are gone (a gc since they were read)."""
        self.check_store()
        run_dir = Path(run_dir).absolute()
        with self.lock():
            gone = sorted(f for f in folders if not (self.root / "features" / f).is_dir())
            if gone:
                raise SiqaError(f"{self.root / 'features' / gone[0]}: gone since the features were read (a "
                                f"`siqa store gc` meanwhile?); run `siqa oof` again")
            runs = self.runs()
            if written:
                runs = {key: e for key, e in runs.items() if Path(e["path"]) != run_dir
                        or run_registry.find_run(e["id"], run_dir) not in (None, run_dir)}
            runs[run_id] = {"path": str(run_dir), "folders": list(folders), "id": run_id}
            text = run_registry.runs_text(runs)
            write_atomic(lambda fh: fh.write(text), self.runs_path)

    def gc(self, dry_run: bool = False, echo=print, forget_missing: bool = False) -> list[Path]:
        """Delete the feature folders that neither a view nor a registered run (found where it is now, see
        `featurestore.run_registry`) uses, under the lock, and forget runs that are gone; returns the folders."""
        import shutil

        self.check_store()
        with self.lock():
            runs = self.runs()
            alive = run_registry.locate_runs(runs, forget_missing)
            keep = {v["folder"] for v in self.views().values()}
            keep.update(f for entry in alive.values() for f in entry["folders"])
            base = self.root / "features"
            stale = [p for p in sorted(base.iterdir()) if p.is_dir() and p.name not in keep] if base.is_dir() else []
            for p in stale:
                echo(("would remove " if dry_run else "removing ") + str(p))
                if not dry_run:
                    shutil.rmtree(p)
            if not dry_run and alive != runs:
                text = run_registry.runs_text(alive)
                write_atomic(lambda fh: fh.write(text), self.runs_path)
        return stale

    # --- pixels ---------------------------------------------------------------------------------
    @property
    def pixels_path(self) -> Path:
        return self.root / "pixels.json"

    def known_pixels(self) -> dict[str, str]:
        """pixel sha256 -> sha256 of a file decoded here with those pixels (`featurestore.io.pixel_sha256`): how
        `siqa.Predictor` finds the features of an array whose picture was scored before as a file."""
        try:
            return json.loads(self.pixels_path.read_text()) if self.pixels_path.exists() else {}
        except (OSError, ValueError):
            return {}  # a shortcut only; a damaged file is rewritten by the next extraction

    def record_pixels(self, pixels: dict[str, str]) -> None:
        """Add `pixels` (pixel sha256 -> file sha256) to pixels.json; only called under the lock. The first file
        seen with a picture keeps it: its features are the ones in the store."""
        known = self.known_pixels()
        new = {k: v for k, v in pixels.items() if k not in known}
        if new:
            text = json.dumps({**known, **new}, indent=0, sort_keys=True).encode()
            write_atomic(lambda fh: fh.write(text), self.pixels_path)

    # --- timings --------------------------------------------------------------------------------
    def timings(self) -> dict[str, dict]:
        path = self.timings_path
        try:
            return json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError):
            return {}  # timings are informative only; a damaged file is rewritten by the next run

    def record_timings(self, entries: list[tuple[str, float, int]]) -> None:
        """Accumulate measured compute seconds and items under each name (`<folder>/<level>`,
        `decode/image`), so a submission can declare a per-image runtime that includes extraction."""
        timings = self.timings()
        changed = False
        for name, seconds, items in entries:
            if items:
                t = timings.setdefault(name, {"seconds": 0.0, "items": 0})
                t["seconds"] += seconds
                t["items"] += items
                changed = True
        if changed:
            text = json.dumps(timings, indent=1, sort_keys=True).encode()
            write_atomic(lambda fh: fh.write(text), self.timings_path)

    def seconds_per_pair(self, folders: list[str]) -> float | None:
        """Measured extraction cost of one new pair (two decoded images, image-level features of both, pair
        columns) for the given extractor folders; None when some part was never timed here."""
        timings = self.timings()
        total = 0.0
        for name, per_pair in [("decode/image", 2)] + [(f"{f}/{lv}", 2 if lv == "image" else 1)
                                                      for f in folders for lv in ("image", "pair")]:
            t = timings.get(name)
            level_exists = name == "decode/image" or bool(self.shards(self.root / "features" / name))
            if t is None:
                if level_exists:
                    return None
                continue
            total += per_pair * t["seconds"] / max(t["items"], 1)
        return total
