"""The feature store: Parquet shards keyed by content hash, one folder per extractor version and config.

Layout under `root`:
    pairs.parquet                       the pair table(s) registered by `siqa features` (merged by split+name;
                                        changed content or label needs --replace)
    views.json                          extractor name -> folder of the configuration last used
    timings.json                        measured compute seconds per item (decode, each extractor folder):
                                        a log for the runtime a submission declares, not feature content
    features/<name>-v<ver>-<hash>/image/part-*.parquet    image-level columns keyed by `sha256`
    features/<name>-v<ver>-<hash>/pair/part-*.parquet     pair columns keyed by `pair_id`
    siqa-store.json                     marks the folder as a store (`layout`): siqa refuses to write into a
                                        folder that is not a store (a user's pairs.parquet is not one)
    runs.json                           run id -> its folder and the feature folders it was fit on (`siqa oof`
                                        registers each run before fitting; `siqa store gc` keeps those folders
                                        while the run exists, following a moved run by its id: `featurestore.run_registry`)
    .lock                               held by the one process writing to the store

Only missing keys are computed, and each batch of work lands as its own shard, so a killed run leaves
whole shards only and the next run resumes from them; a second `siqa features` waits for the lock, then
finds the work done; readers (DuckDB views) need no lock since every file appears whole or not at all.
Two stores are the same when every extractor folder holds the same keys with the same values: a run that
was killed and resumed may cut its shards at other places than an uninterrupted one, never more or fewer
rows, and never one key twice. `siqa features --strict` turns any failure into an error exit.

The parts, by idea: `layout` (folders, shard schema, atomic writes, lock, catalog files), `plan` (which
keys each extractor misses, which chunk computes them), `execute` (decoding, batches, retry, derivation,
and the `Executor` interface a backend implements: `LocalExecutor` here, `featurestore.ray_backend`), `workers`
(`ProcessExecutor`: CPU extractors in worker processes of one thread, GPU extractors in this process).
"""
from __future__ import annotations

import time

from ..allocator import keep_freed_memory
from ..datasets import PairTable
from ..devices import wants_gpu
from ..extractors.base import Extractor, ImageExtractor
from ..threads import usable_cpus
from .execute import Executor, LocalExecutor, derive
from .layout import IMAGE_KEY, PAIR_KEY, Catalog, arrow_schema, column_numpy, is_store, to_arrow
from .plan import Plan, plan
from .summary import ExtractSummary
from .workers import ProcessExecutor

__all__ = ["IMAGE_KEY", "PAIR_KEY", "Catalog", "ExtractSummary", "Executor", "FeatureStore", "LocalExecutor",
           "arrow_schema", "column_numpy", "is_store", "to_arrow"]


class FeatureStore(Catalog):
    def extract(self, table: PairTable, extractors: list[Extractor], progress: bool = True,
                chunk_pairs: int | None = None, decode_workers: int = 2, executor: Executor | None = None, replace: bool = False,
                workers: int | None = 1) -> ExtractSummary:
        """Compute every missing feature of `table` for `extractors` with `executor` (default: `workers` worker
        processes of one thread for the CPU extractors, `ProcessExecutor`, when there is work for more than
        one; None = one per CPU this process may use; 1 = all in this process, `LocalExecutor`), with
        `decode_workers` decoding threads, `chunk_pairs` pairs at a time (default: `CHUNK_PAIRS`); returns what
        was done and adds its measured seconds to timings.json. Pairs registered before under the same split +
        name with other content or label are refused unless `replace`."""
        t0 = time.perf_counter()
        keep_freed_memory()  # each image's tensors reuse the last one's pages (`featurestore.allocator`)
        summary = ExtractSummary(pairs=len(table))
        self.check_store(create=True)
        with self.lock():
            self.check_writable()
            self.register_pairs(table, replace=replace)
            self.register_views(extractors)
            df = table.df.drop_duplicates("pair_id")
            work = plan(self, df, extractors, summary, chunk_pairs or default_chunk_pairs(extractors))
            if work.chunks:
                (executor or default_executor(work, workers, decode_workers)).run(self, work, summary, progress)
            for ex in extractors:
                if isinstance(ex, ImageExtractor):
                    derive(self, df, ex, summary, progress)
            self.record_timings(summary.timing_entries(extractors))
            self.record_pixels(summary.pixels)
        summary.seconds = time.perf_counter() - t0
        return summary


#: pairs per chunk: a chunk is one task of each CPU extractor (small enough to spread over the workers) and bounds the
#: batches of GPU extractors (a GPU network fills its batch from one chunk: a larger chunk on a GPU)
CHUNK_PAIRS = {"cpu": 32, "gpu": 128}


def default_chunk_pairs(extractors: list[Extractor]) -> int:
    return CHUNK_PAIRS["gpu" if any(wants_gpu(ex) for ex in extractors) else "cpu"]


def default_executor(work: Plan, workers: int | None, decode_workers: int) -> Executor:
    """Worker processes when `workers` (None: one per usable CPU) is above one and the plan holds more than one
    task (extractor x chunk) to spread; this process otherwise (a worker's start-up would cost more than it saves),
    where extractors that can split a task run it on `workers` threads."""
    workers = usable_cpus() if workers is None else workers
    tasks = sum(len(chunk.keys) for chunk in work.chunks)
    if workers > 1 and tasks > 1:
        return ProcessExecutor(min(workers, tasks), decode_workers)
    return LocalExecutor(decode_workers, threads=workers)
