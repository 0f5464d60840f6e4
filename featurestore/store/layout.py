"""The store on disk: folder naming, the Arrow schema of shards, atomic writes, the writer lock, and the
catalog files (pairs.parquet, views.json, timings.json).

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

log = logging.getLogger(__name__)

__all__ = ["IMAGE_KEY", "LEVEL_KEYS", "PAIR_KEY", "PAIRS_SCHEMA", "Catalog", "arrow_schema", "column_numpy", "to_arrow"]

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

    def runs(self) -> dict[str, list[str]]:
        """Absolute run folder -> the feature folders it was fit on (what `store gc` keeps)."""
        try:
            return json.loads(self.runs_path.read_text()) if self.runs_path.exists() else {}
        except (OSError, ValueError) as exc:
            raise SiqaError(f"{self.runs_path}: unreadable ({str(exc).splitlines()[0]}); `store gc` cannot tell "
                            "which feature folders runs still use - fix or delete it") from None

    def register_run(self, run_dir: Path, folders: list[str]) -> None:
        """Record that the run at `run_dir` reads `folders`, so `gc` keeps them while the run exists."""
        with self.lock():
            runs = self.runs()
            runs[str(Path(run_dir).absolute())] = sorted(set(folders))
            text = json.dumps(runs, indent=1, sort_keys=True).encode()
            write_atomic(lambda fh: fh.write(text), self.runs_path)

    def stale_folders(self) -> list[Path]:
        """Feature folders that neither a view nor an existing registered run uses."""
        keep = {v["folder"] for v in self.views().values()}
        keep.update(f for run, folders in self.runs().items() if Path(run).is_dir() for f in folders)
        base = self.root / "features"
        return [p for p in sorted(base.iterdir()) if p.is_dir() and p.name not in keep] if base.is_dir() else []

    def gc(self, dry_run: bool = False, echo=print) -> list[Path]:
        """Delete the stale feature folders (under the lock) and forget runs that are gone; returns them."""
        import shutil

        with self.lock():
            stale = self.stale_folders()
            for p in stale:
                echo(("would remove " if dry_run else "removing ") + str(p))
                if not dry_run:
                    shutil.rmtree(p)
            runs = self.runs()
            alive = {run: folders for run, folders in runs.items() if Path(run).is_dir()}
            if not dry_run and alive != runs:
                text = json.dumps(alive, indent=1, sort_keys=True).encode()
                write_atomic(lambda fh: fh.write(text), self.runs_path)
        return stale

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
