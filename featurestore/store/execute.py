"""Computing a plan: decode each chunk's images, compute each extractor's keys batch by batch (a batch
that raises is retried one key at a time), write each batch as one shard, and derive the pair columns of
image-level extractors from their cached image columns.

`Executor` is what a backend implements: it runs the chunks of a `Plan` (with `compute_chunk`, which
writes the shards) and adds what its workers did to the summary. Planning before, derivation and the
timings after, and the catalog files stay with the store, the same for every backend.

Failures never stop the run: an image that does not decode is reported by path (with the reason from
`featurestore.io`), and its pairs are skipped; only keys that fail alone are skipped and reported, each
naming its file. Pairs whose degraded image differs in size from the reference are handed to pair-level
extractors resized to the reference (`featurestore.io.match_size`) and counted in the summary.
"""
from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..errors import SiqaError
from ..extractors.base import PAIR_KEY, Column, Extractor, ImageExtractor, PairExtractor, check_columns
from ..io import DecodedImage, DecodedPair, decode, match_size
from ..threads import threads_at_most
from .layout import LEVEL_KEYS, Catalog, column_numpy, to_arrow
from .plan import Chunk, Plan
from .summary import ExtractSummary

log = logging.getLogger(__name__)


class Executor(ABC):
    """A backend: computes and stores every key of `plan` and adds its work to `summary`."""

    @abstractmethod
    def run(self, catalog: Catalog, plan: Plan, summary: ExtractSummary, progress: bool) -> None: ...


class LocalExecutor(Executor):
    """This process: the next chunk decodes in the background while the extractors work on this one, torch on
    one CPU thread, as in a worker of `workers.ProcessExecutor` (the same bytes either way: torch's float32
    CPU kernels split their sums by thread count, so two threads and one differ by about 1e-6). `threads` is
    the `thread_budget` of extractors that run independent work side by side (`formula`'s batch x metric pieces,
    each on one torch thread: the same bytes for any budget)."""

    def __init__(self, decode_workers: int = 2, threads: int = 1):
        self.decode_workers = decode_workers
        self.threads = threads

    def run(self, catalog, plan, summary, progress):
        with threads_at_most(1, budget=self.threads):
            self._run(catalog, plan, summary, progress)

    def _run(self, catalog, plan, summary, progress):
        bar = tqdm(total=sum(len(c.rows) for c in plan.chunks), desc="features", unit="pair", disable=not progress)
        for chunk, decoded in decoded_chunks(plan, summary, self.decode_workers):
            compute_chunk(catalog, ChunkInputs(chunk.rows, decoded), plan.extractors, chunk.keys, summary)
            bar.update(len(chunk.rows))
        bar.close()


# --- decoding -------------------------------------------------------------------------------------

def decoded_chunks(plan: Plan, summary: ExtractSummary, decode_workers: int):
    """The one decode stage of every local executor: each chunk of `plan` with the decoded images (sha256 ->
    DecodedImage or None) it needs, while the next chunk decodes in the background on `decode_workers` threads.
    The dict is one for all chunks: an image the next two chunks still need stays (a shared reference is decoded
    once), the others are dropped when the caller asks for the next chunk."""
    chunks, decoded = plan.chunks, {}
    with ThreadPoolExecutor(max_workers=1) as prefetch, ThreadPoolExecutor(max_workers=decode_workers) as pool:
        future = prefetch.submit(decode_chunk, chunks[0].rows, frozenset(), pool)
        for i, chunk in enumerate(chunks):
            new, failures = future.result()
            note_decoded(summary, new, failures)
            decoded.update(new)
            summary.resized_pairs += count_resized(chunk, plan.extractors, decoded)
            if i + 1 < len(chunks):
                future = prefetch.submit(decode_chunk, chunks[i + 1].rows, frozenset(decoded), pool)
            yield chunk, decoded
            later = set()
            for c in chunks[i + 1:i + 3]:
                later.update(c.rows.ref_sha256)
                later.update(c.rows.dist_sha256)
            for sha in [s for s in decoded if s not in later]:
                del decoded[sha]


def decode_chunk(rows: pd.DataFrame, known: frozenset, pool) -> tuple[dict, dict]:
    """Every image of `rows` not in `known`, decoded on `pool`: (sha256 -> DecodedImage or None, failures
    by path)."""
    wanted = {}
    for r in rows.itertuples():
        wanted.setdefault(r.ref_sha256, r.ref_path)
        wanted.setdefault(r.dist_sha256, r.dist_path)
    items = [(s, p) for s, p in wanted.items() if s not in known]

    def one(item):
        sha, path = item
        try:
            image = decode(path, sha)
            image.pixel_sha256  # hashed here, on the decoding threads, for `note_decoded`
            return sha, image, None
        except SiqaError as exc:
            return sha, None, (path, str(exc).split(": ", 1)[-1])

    out, failures = {}, {}
    for sha, img, failure in pool.map(one, items):
        out[sha] = img
        if failure:
            failures[failure[0]] = failure[1]
    return out, failures


def note_decoded(summary: ExtractSummary, images: dict, failures: dict) -> None:
    fresh = [im for im in images.values() if im is not None]
    summary.decode_seconds += sum(im.decode_seconds for im in fresh)
    summary.decoded_images += len(fresh)
    summary.pixels.update({im.pixel_sha256: im.sha256 for im in fresh})
    summary.failures.update(failures)


def count_resized(chunk: Chunk, extractors: list[Extractor], images: dict) -> int:
    """Pairs that pair-level extractors compute in `chunk` (both images decoded) whose degraded image differs
    in size from the reference."""
    pair_ids = {k for ex in extractors if isinstance(ex, PairExtractor) for k in chunk.keys.get(ex.name, ())}
    return sum(1 for r in chunk.rows.itertuples()
               if r.pair_id in pair_ids and images.get(r.ref_sha256) is not None
               and images.get(r.dist_sha256) is not None
               and images[r.ref_sha256].rgb.shape != images[r.dist_sha256].rgb.shape)


def pair_label(row, extractor: str) -> str:
    """How a failure of a pair is reported: its degraded file, the extractor and the reference."""
    return f"{row.dist_path} [{extractor}, reference {row.ref_path}]"


class ChunkInputs:
    """The decoded images of one chunk, as extractors ask for them (`extractors.base.DecodedInputs`)."""

    def __init__(self, rows: pd.DataFrame, images: dict[str, DecodedImage | None]):
        self.images = images
        self.paths = dict(zip(rows.ref_sha256, rows.ref_path)) | dict(zip(rows.dist_sha256, rows.dist_path))
        self.rows = {r.pair_id: r for r in rows.itertuples()}
        self._pairs: dict[str, DecodedPair] = {}  # one size-matched pair shared by every pair-level extractor

    def image(self, sha256):
        return self.images.get(sha256)

    def pair(self, pair_id):
        if pair_id not in self._pairs:
            r = self.rows[pair_id]
            ref, dist = self.images.get(r.ref_sha256), self.images.get(r.dist_sha256)
            if ref is None or dist is None:
                return None
            matched, resized = match_size(ref, dist)
            self._pairs[pair_id] = DecodedPair(pair_id, ref, matched, resized)
        return self._pairs[pair_id]

    def image_label(self, sha256, extractor):
        return f"{self.paths[sha256]} [{extractor}]"

    def pair_label(self, pair_id, extractor):
        return pair_label(self.rows[pair_id], extractor)


# --- computing ------------------------------------------------------------------------------------

def compute_chunk(catalog: Catalog, inputs: ChunkInputs, extractors: list[Extractor], keys: dict[str, list[str]],
                  summary: ExtractSummary) -> None:
    """Compute, batch by batch, each extractor's `keys` of one chunk, and store each batch as a shard."""
    for ex in extractors:
        ready = ex.batch_order([k for k in keys.get(ex.name, ()) if ex.ready(k, inputs)], inputs)
        for i in range(0, len(ready), ex.batch_size):
            batch = ready[i:i + ex.batch_size]
            compute_and_store(catalog, ex, ex.level, batch, [ex.label(k, inputs) for k in batch],
                              lambda idx, b=batch, ex=ex: ex.compute_keys([b[j] for j in idx], inputs), summary)


def compute_and_store(catalog: Catalog, ex: Extractor, level: str, keys: list[str], where: list[str], compute,
                      summary: ExtractSummary) -> None:
    """Compute `keys` (`compute(positions)` gives the `level` columns of `keys[positions]`) and store them as
    one shard. A batch that raises is retried one key at a time, so one bad image or pair costs only
    itself; each key that fails alone is reported under `where[position]` (its file and extractor)."""
    if not keys:
        return
    t0 = time.perf_counter()
    try:
        _compute_and_store(catalog, ex, level, keys, where, compute, summary)
    finally:
        summary.compute_seconds[f"{ex.name}/{level}"] += time.perf_counter() - t0


def _compute_and_store(catalog, ex, level, keys, where, compute, summary) -> None:
    columns = ex.columns(level)
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
    catalog.write_shard(catalog.folder(ex, level), to_arrow(LEVEL_KEYS[level], kept, columns, values))
    summary.computed[f"{ex.name}/{level}"] += len(kept)


def checked(ex: Extractor, columns: list[Column], compute, positions: list[int]) -> dict[str, np.ndarray]:
    values = compute(positions)
    check_columns(ex, columns, values, len(positions))
    return values


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# --- deriving -------------------------------------------------------------------------------------

def derive(catalog: Catalog, df: pd.DataFrame, ex: ImageExtractor, summary: ExtractSummary, progress: bool) -> None:
    """Pair columns of an image-level extractor, from its cached per-image columns."""
    pair_folder = catalog.folder(ex, "pair")
    have = catalog.keys(pair_folder, PAIR_KEY)
    summary.cached[f"{ex.name}/pair"] += len(set(df.pair_id) & have)
    rows = df[~df.pair_id.isin(have)]
    if rows.empty:
        return
    image_table = catalog.read(catalog.folder(ex, "image"), set(rows.ref_sha256) | set(rows.dist_sha256))
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
        compute_and_store(catalog, ex, "pair", list(part.pair_id), [pair_label(r, ex.name) for r in part.itertuples()],
                          lambda idx, ri=ri, di=di: ex.derive_pairs({k: v[ri[idx]] for k, v in cols.items()},
                                                                    {k: v[di[idx]] for k, v in cols.items()}),
                          summary)
