"""The feature store: Parquet shards keyed by content hash, one folder per extractor version and config.

Layout under `root`:
    pairs.parquet                       the pair table(s) registered by `siqa features` (merged by split+name)
    views.json                          extractor name -> folder of the configuration last used
    timings.json                        measured compute seconds per item (decode, each extractor folder):
                                        a log for the runtime a submission declares, not feature content
    features/<name>-v<ver>-<hash>/image/part-*.parquet    image-level columns keyed by `sha256`
    features/<name>-v<ver>-<hash>/pair/part-*.parquet     pair columns keyed by `pair_id`
    .lock                               held by the one process writing to the store

Only missing keys are computed. Each batch of work lands as its own shard, written to a temporary name,
fsynced and renamed, so a killed run leaves whole shards only and the next run resumes from them; the
temporary files of a killed writer are deleted by the next one. A shard is named after a hash of the keys
it holds, in order: the same work gives the same names, and two different shards cannot collide. A
store-wide lock (flock on `.lock`) serialises writers: a second `siqa features` waits, then finds the
work done; readers (DuckDB views) need no lock since every file appears whole or not at all.

Two stores are the same when every extractor folder holds the same keys with the same values: a run that
was killed and resumed may cut its shards at other places than an uninterrupted one, never more or fewer
rows, and never one key twice.

Failures never stop the run: an image that does not decode is reported by path (with the reason from
`featurestore.io`), and its pairs are skipped; a batch that raises is retried one key at a time, so
only the keys that fail themselves are skipped and reported, each naming its file. `siqa features
--strict` turns any failure into an error exit. Pairs whose degraded image differs in size from the
reference are handed to pair-level extractors resized to the reference (`featurestore.io.match_size`)
and counted in the summary.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from .datasets import COLUMNS, PairTable
from .errors import SiqaError
from .extractors.base import Column, Extractor, check_columns
from .io import DecodedImage, DecodedPair, decode, match_size

log = logging.getLogger(__name__)

PAIR_KEY, IMAGE_KEY = "pair_id", "sha256"
PAIRS_SCHEMA = pa.schema([pa.field(c, pa.float64() if c == "label" else pa.string()) for c in COLUMNS])


@dataclass
class ExtractSummary:
    pairs: int = 0
    computed: Counter = field(default_factory=Counter)   # "<extractor>/<level>" -> rows computed now
    cached: Counter = field(default_factory=Counter)     # "<extractor>/<level>" -> rows already present
    failures: dict[str, str] = field(default_factory=dict)  # file (and extractor) -> one-line reason
    resized_pairs: int = 0  # pairs decoded in this run whose degraded image differs in size from the reference
    seconds: float = 0.0
    compute_seconds: Counter = field(default_factory=Counter)  # "<extractor>/<level>" -> seconds spent computing
    decode_seconds: float = 0.0
    decoded_images: int = 0

    def lines(self) -> list[str]:
        out = [f"{self.pairs} pairs in {self.seconds:.1f}s"]
        for key in sorted(set(self.computed) | set(self.cached)):
            out.append(f"  {key:<28} computed {self.computed[key]:>6}  cached {self.cached[key]:>6}")
        if self.resized_pairs:
            out.append(f"  {self.resized_pairs} pair(s) with a degraded image of another size than the reference: "
                       "resized to the reference for pair-level extractors")
        if self.failures:
            out.append(f"  {len(self.failures)} failure(s):")
            out.extend(f"    {where}: {why}" for where, why in sorted(self.failures.items()))
        return out


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


class FeatureStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # --- paths --------------------------------------------------------------------------------
    @property
    def pairs_path(self) -> Path:
        return self.root / "pairs.parquet"

    def folder(self, extractor: Extractor, level: str) -> Path:
        return self.root / "features" / extractor.folder / level

    # --- atomic IO ----------------------------------------------------------------------------
    @staticmethod
    def _write_atomic(write, path: Path) -> None:
        """`write(file)` into a hidden temp file beside `path`, fsync, rename over `path`, fsync the folder.
        A reader sees the old file or the new one, never a part; a kill leaves at most the temp file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise SiqaError(f"{path}: cannot write ({exc.strerror or exc})") from None

    @classmethod
    def _write_parquet(cls, table: pa.Table, path: Path) -> None:
        cls._write_atomic(lambda fh: pq.write_table(table, fh, compression="zstd"), path)

    @staticmethod
    def shard_name(keys: list[str]) -> str:
        """Named by the keys it holds: the same work gives the same name; different key lists never collide."""
        return f"part-{hashlib.sha256(chr(10).join(keys).encode()).hexdigest()[:32]}.parquet"

    def _write_shard(self, folder: Path, table: pa.Table) -> None:
        self._write_parquet(table, folder / self.shard_name(table.column(0).to_pylist()))

    @staticmethod
    def shards(folder: Path) -> list[Path]:
        return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []

    @staticmethod
    def _read_shard(shard: Path, columns: list[str] | None = None) -> pa.Table:
        try:
            return pq.read_table(shard, columns=columns)
        except (OSError, pa.ArrowException) as exc:
            # Never written by this store (writes are atomic): damaged since, or put there by hand.
            raise SiqaError(f"{shard}: unreadable ({str(exc).splitlines()[0]}); "
                            "delete it and run `siqa features` again to recompute what it held") from None

    def keys(self, folder: Path, key: str) -> set[str]:
        out: set[str] = set()
        for shard in self.shards(folder):
            out.update(self._read_shard(shard, [key]).column(0).to_pylist())
        return out

    def read(self, folder: Path, keys: list[str] | None = None) -> pa.Table | None:
        shards = self.shards(folder)
        if not shards:
            return None
        table = pa.concat_tables(self._read_shard(s) for s in shards)
        if keys is not None:
            import pyarrow.compute as pc

            table = table.filter(pc.is_in(table.column(0), pa.array(list(keys), pa.string())))
        return table

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
        # Only called under the lock: any temp file now is the remains of a killed writer.
        for tmp in self.root.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    # --- pairs and views ----------------------------------------------------------------------
    def pairs(self) -> pd.DataFrame:
        if not self.pairs_path.exists():
            return pd.DataFrame(columns=COLUMNS)
        return self._read_shard(self.pairs_path).to_pandas()

    def register_pairs(self, table: PairTable) -> None:
        """Merge `table` into pairs.parquet (a pair is its split + name; the newest registration wins).
        Written with a fixed schema and no pandas metadata, so the bytes depend on the rows only, not on
        the order or number of registrations that led to them."""
        existing = self._read_shard(self.pairs_path) if self.pairs_path.exists() else None
        frames = [table.df] if existing is None else [existing.to_pandas(), table.df]
        merged = pd.concat([f for f in frames if len(f)], ignore_index=True).drop_duplicates(subset=["split", "name"], keep="last")
        merged = merged.sort_values(["split", "name"], kind="stable").reset_index(drop=True)
        arrow = pa.Table.from_pandas(merged[COLUMNS], schema=PAIRS_SCHEMA, preserve_index=False)
        arrow = arrow.replace_schema_metadata(None)
        if existing is not None and existing.equals(arrow):
            return  # a warm rerun writes nothing (and pays no fsync)
        self._write_parquet(arrow, self.pairs_path)

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
        self._write_atomic(lambda fh: fh.write(text), path)

    # --- extraction ---------------------------------------------------------------------------
    def extract(self, table: PairTable, extractors: list[Extractor], progress: bool = True,
                chunk_pairs: int = 32, decode_workers: int = 2) -> ExtractSummary:
        """Compute every missing feature of `table` for `extractors`; returns what was done."""
        t0 = time.perf_counter()
        summary = ExtractSummary(pairs=len(table))
        with self.lock():
            self.register_pairs(table)
            self.register_views(extractors)
            df = table.df.drop_duplicates("pair_id")
            todo = self._plan(df, extractors, summary)
            self._compute_chunks(df, extractors, todo, summary, progress, chunk_pairs, decode_workers)
            for ex in extractors:
                if ex.level == "image":
                    self._derive(df, ex, summary, progress)
            self.record_timings(extractors, summary)
        summary.seconds = time.perf_counter() - t0
        return summary

    # --- timings ------------------------------------------------------------------------------
    @property
    def timings_path(self) -> Path:
        return self.root / "timings.json"

    def timings(self) -> dict[str, dict]:
        path = self.timings_path
        try:
            return json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError):
            return {}  # timings are informative only; a damaged file is rewritten by the next run

    def record_timings(self, extractors: list[Extractor], summary: ExtractSummary) -> None:
        """Accumulate measured compute seconds per item (by extractor folder and level, and for decoding),
        so a submission can declare a per-image runtime that includes feature extraction."""
        timings = self.timings()
        entries = [("decode/image", summary.decode_seconds, summary.decoded_images)]
        for ex in extractors:
            for level in ("image", "pair"):
                k = f"{ex.name}/{level}"
                entries.append((f"{ex.folder}/{level}", summary.compute_seconds[k], summary.computed[k]))
        changed = False
        for name, seconds, items in entries:
            if items:
                t = timings.setdefault(name, {"seconds": 0.0, "items": 0})
                t["seconds"] += seconds
                t["items"] += items
                changed = True
        if changed:
            text = json.dumps(timings, indent=1, sort_keys=True).encode()
            self._write_atomic(lambda fh: fh.write(text), self.timings_path)

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

    def _plan(self, df, extractors, summary) -> dict[str, set[str]]:
        """Per extractor: the keys (image sha256 or pair_id) still missing."""
        todo = {}
        images = set(df.ref_sha256) | set(df.dist_sha256)
        for ex in extractors:
            if ex.level == "image":
                have = self.keys(self.folder(ex, "image"), IMAGE_KEY)
                todo[ex.name] = images - have
                summary.cached[f"{ex.name}/image"] += len(images & have)
            else:
                have = self.keys(self.folder(ex, "pair"), PAIR_KEY)
                todo[ex.name] = set(df.pair_id) - have
                summary.cached[f"{ex.name}/pair"] += len(set(df.pair_id) & have)
        return todo

    def _compute_chunks(self, df, extractors, todo, summary, progress, chunk_pairs, decode_workers):
        need = df[[any(todo_hit(todo, ex, r) for ex in extractors) for r in df.itertuples()]]
        if need.empty:
            return
        chunks = [need.iloc[i:i + chunk_pairs] for i in range(0, len(need), chunk_pairs)]
        decoded: dict[str, DecodedImage | None] = {}  # owned by this thread; workers only return results
        bar = tqdm(total=len(need), desc="features", unit="pair", disable=not progress)
        with ThreadPoolExecutor(max_workers=1) as prefetch, ThreadPoolExecutor(max_workers=decode_workers) as pool:
            # Decode the next chunk in the background while the extractors work on this one.
            future = prefetch.submit(self._decode_chunk, chunks[0], frozenset(), pool)
            for i, chunk in enumerate(chunks):
                new, failures = future.result()
                fresh = [im for im in new.values() if im is not None]
                summary.decode_seconds += sum(im.decode_seconds for im in fresh)
                summary.decoded_images += len(fresh)
                decoded.update(new)
                summary.failures.update(failures)
                pair_todo = [todo[ex.name] for ex in extractors if ex.level == "pair"]
                summary.resized_pairs += self.count_resized(
                    chunk[[any(r.pair_id in t for t in pair_todo) for r in chunk.itertuples()]], decoded)
                if i + 1 < len(chunks):
                    future = prefetch.submit(self._decode_chunk, chunks[i + 1], frozenset(decoded), pool)
                self._run_extractors(chunk, decoded, extractors, todo, summary)
                bar.update(len(chunk))
                # Keep only images the next chunks still need (a shared reference is decoded once).
                later = set()
                for c in chunks[i + 1:i + 3]:
                    later.update(c.ref_sha256)
                    later.update(c.dist_sha256)
                for sha in [s for s in decoded if s not in later]:
                    del decoded[sha]
        bar.close()

    @staticmethod
    def _decode_chunk(chunk, known: frozenset, pool) -> tuple[dict, dict]:
        wanted = {}
        for r in chunk.itertuples():
            wanted.setdefault(r.ref_sha256, r.ref_path)
            wanted.setdefault(r.dist_sha256, r.dist_path)
        items = [(s, p) for s, p in wanted.items() if s not in known]

        def one(item):
            sha, path = item
            try:
                return sha, decode(path, sha), None
            except SiqaError as exc:
                return sha, None, (path, str(exc).split(": ", 1)[-1])

        out, failures = {}, {}
        for sha, img, failure in pool.map(one, items):
            out[sha] = img
            if failure:
                failures[failure[0]] = failure[1]
        return out, failures

    def _run_extractors(self, chunk, images, extractors, todo, summary) -> None:
        """Compute, batch by batch, the keys of `chunk` that `todo` still lacks, and store each batch."""
        paths = dict(zip(chunk.ref_sha256, chunk.ref_path)) | dict(zip(chunk.dist_sha256, chunk.dist_path))
        matched: dict[str, DecodedPair] = {}  # one size-matched pair shared by every pair-level extractor

        def pair(r) -> DecodedPair:
            if r.pair_id not in matched:
                dist, resized = match_size(images[r.ref_sha256], images[r.dist_sha256])
                matched[r.pair_id] = DecodedPair(r.pair_id, images[r.ref_sha256], dist, resized)
            return matched[r.pair_id]

        for ex in extractors:
            missing = todo[ex.name]
            if ex.level == "image":
                shas = [s for s in dict.fromkeys(list(chunk.ref_sha256) + list(chunk.dist_sha256))
                        if s in missing and images.get(s) is not None]
                for i in range(0, len(shas), ex.batch_size):
                    batch = shas[i:i + ex.batch_size]
                    self._compute_and_store(ex, "image", IMAGE_KEY, batch, [f"{paths[s]} [{ex.name}]" for s in batch],
                                            lambda idx, b=batch, ex=ex: ex.compute_images([images[b[j]] for j in idx]),
                                            ex.image_columns(), summary)
                    missing.difference_update(batch)
            else:
                rows = [r for r in chunk.itertuples() if r.pair_id in missing
                        and images.get(r.ref_sha256) is not None and images.get(r.dist_sha256) is not None]
                for i in range(0, len(rows), ex.batch_size):
                    batch = rows[i:i + ex.batch_size]
                    pairs = [pair(r) for r in batch]
                    self._compute_and_store(ex, "pair", PAIR_KEY, [p.pair_id for p in pairs], pair_labels(ex, batch),
                                            lambda idx, b=pairs, ex=ex: ex.compute_pairs([b[j] for j in idx]),
                                            ex.pair_columns(), summary)
                    missing.difference_update(p.pair_id for p in pairs)

    @staticmethod
    def count_resized(chunk, images) -> int:
        """Pairs of `chunk` (both images decoded) whose degraded image differs in size from the reference;
        `chunk` holds the pairs some pair-level extractor is about to compute."""
        return sum(1 for r in chunk.itertuples()
                   if images.get(r.ref_sha256) is not None and images.get(r.dist_sha256) is not None
                   and images[r.ref_sha256].rgb.shape != images[r.dist_sha256].rgb.shape)

    def _compute_and_store(self, ex, level, key, keys, where, compute, columns, summary) -> None:
        """Compute `keys` (`compute(positions)` gives the columns of `keys[positions]`) and store them as one
        shard. A batch that raises is retried one key at a time, so one bad image or pair costs only
        itself; each key that fails alone is reported under `where[position]` (its file and extractor)."""
        if not keys:
            return
        t0 = time.perf_counter()
        try:
            self._compute_and_store_timed(ex, level, key, keys, where, compute, columns, summary)
        finally:
            summary.compute_seconds[f"{ex.name}/{level}"] += time.perf_counter() - t0

    def _compute_and_store_timed(self, ex, level, key, keys, where, compute, columns, summary) -> None:
        positions = list(range(len(keys)))
        try:
            values = checked(ex, columns, compute, positions)
        except SiqaError:
            raise
        except Exception as exc:
            if len(keys) == 1:
                summary.failures[where[0]] = one_line(exc)
                return
            log.warning("%s failed on a batch of %d %ss (%s); retrying them one at a time",
                        ex.name, len(keys), level, one_line(exc))
            ok, parts = [], []
            for i in positions:
                try:
                    parts.append(checked(ex, columns, compute, [i]))
                    ok.append(i)
                except SiqaError:
                    raise
                except Exception as exc_one:
                    summary.failures[where[i]] = one_line(exc_one)
            if not ok:
                return
            positions = ok
            values = {c.name: np.concatenate([np.asarray(p[c.name]) for p in parts]) for c in columns}
        kept = [keys[i] for i in positions]
        self._write_shard(self.folder(ex, level), to_arrow(key, kept, columns, values))
        summary.computed[f"{ex.name}/{level}"] += len(kept)

    def _derive(self, df, ex, summary, progress) -> None:
        """Pair columns of an image-level extractor, from its cached per-image columns."""
        pair_folder = self.folder(ex, "pair")
        have = self.keys(pair_folder, PAIR_KEY)
        summary.cached[f"{ex.name}/pair"] += len(set(df.pair_id) & have)
        rows = df[~df.pair_id.isin(have)]
        if rows.empty:
            return
        image_table = self.read(self.folder(ex, "image"), set(rows.ref_sha256) | set(rows.dist_sha256))
        if image_table is None:
            return
        index = {k: i for i, k in enumerate(image_table.column(0).to_pylist())}
        # Pairs with an image that failed to decode or compute are already reported under that image.
        rows = rows[rows.ref_sha256.isin(index) & rows.dist_sha256.isin(index)]
        cols = {c.name: column_numpy(image_table.column(c.name), c.dim) for c in ex.image_columns()}
        step = 4096
        for i in tqdm(range(0, len(rows), step), desc=f"{ex.name} pairs", disable=not progress or len(rows) <= step):
            part = rows.iloc[i:i + step]
            ri = np.array([index[s] for s in part.ref_sha256])
            di = np.array([index[s] for s in part.dist_sha256])
            self._compute_and_store(ex, "pair", PAIR_KEY, list(part.pair_id), pair_labels(ex, part.itertuples()),
                                    lambda idx, ri=ri, di=di: ex.derive_pairs({k: v[ri[idx]] for k, v in cols.items()},
                                                                              {k: v[di[idx]] for k, v in cols.items()}),
                                    ex.pair_columns(), summary)


def checked(ex: Extractor, columns: list[Column], compute, positions: list[int]) -> dict[str, np.ndarray]:
    values = compute(positions)
    check_columns(ex, columns, values, len(positions))
    return values


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def pair_labels(ex: Extractor, rows) -> list[str]:
    """How a failure of each pair is reported: its degraded file, the extractor and the reference."""
    return [f"{r.dist_path} [{ex.name}, reference {r.ref_path}]" for r in rows]


def column_numpy(column: pa.ChunkedArray, dim: int) -> np.ndarray:
    """Arrow column -> (n,) float64 or (n, dim) float32."""
    arr = column.combine_chunks()
    if dim == 0:
        return arr.to_numpy(zero_copy_only=False).astype(np.float64)
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)


def todo_hit(todo, ex, row) -> bool:
    missing = todo[ex.name]
    if ex.level == "image":
        return row.ref_sha256 in missing or row.dist_sha256 in missing
    return row.pair_id in missing
