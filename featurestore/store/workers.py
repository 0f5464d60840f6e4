"""`ProcessExecutor`: the CPU extractors in worker processes, one thread each, the GPU extractors in this
process, both at once, fed by one decode stage.

Why processes of one thread: torch, onnxruntime and OpenCV each start a thread per core and spin between
calls; one process of many threads used a 2-core machine at 167 %, and two such runs side by side took 4.5x
as long each. Here every worker pins its libraries to one thread (`featurestore.threads.pin_threads`) and
there are as many workers as CPUs this process may use (`usable_cpus`), so the machine is never asked for
more threads than it has, and two runs side by side share it instead of fighting over it.

How a run goes:
- this process decodes each chunk once (a thread decodes the next chunk while this one is handed out);
- each CPU extractor's keys of the chunk become one task: the extractor (as its class and settings), the
  chunk's rows and only the decoded images those keys need. A worker builds each extractor once and keeps
  it (its model stays loaded for the next chunks), computes the keys with the local backend's code
  (`compute_chunk`: same batches, same retry, same atomic shard writer, same shard names) and sends back
  what it computed, measured and failed on;
- the extractors whose device is a GPU compute the chunk here meanwhile (a GPU is not shared between
  processes); so do extractors whose class cannot travel to a worker (one defined inside a function);
- at most `workers + 1` chunks are out at once, so memory holds a few chunks of decoded images, not the
  dataset; the tasks of a chunk start with its most expensive extractor (from the store's timings.json),
  so the last chunk does not end on one long task while the other workers idle.

A worker that dies (killed, out of memory) stops the run with a one-line error; every shard written before
is whole and the next run resumes from it (the store's guarantee, as for the local executor).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import pickle
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import pandas as pd
from tqdm.auto import tqdm

from ..allocator import keep_freed_memory
from ..devices import wants_gpu
from ..errors import SiqaError
from ..extractors.base import Extractor, PairExtractor
from ..threads import pin_threads, threads_at_most
from .execute import ChunkInputs, Executor, compute_chunk, decoded_chunks
from .layout import Catalog
from .plan import Chunk
from .summary import ExtractSummary

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ProcessExecutor(Executor):
    """`workers` processes of one thread for the CPU extractors; GPU extractors in this process."""

    def __init__(self, workers: int, decode_workers: int = 2):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.workers = workers
        self.decode_workers = decode_workers

    def run(self, catalog, plan, summary, progress):
        here = [ex for ex in plan.extractors if wants_gpu(ex) or not travels(ex)]
        away = order_by_cost(catalog, [ex for ex in plan.extractors if ex not in here])
        bar = tqdm(total=sum(len(c.rows) for c in plan.chunks), desc="features", unit="pair", disable=not progress)
        out: list[tuple[Chunk, list[Future]]] = []  # chunks handed out, oldest first
        # a fresh interpreter per worker (no threads or locks inherited), its libraries pinned to one thread
        pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=start_worker, initargs=(os.getpid(),))
        try:
            # This process decodes and runs the GPU extractors; the workers have the CPUs.
            with threads_at_most(1):
                for i, (chunk, decoded) in enumerate(decoded_chunks(plan, summary, self.decode_workers)):
                    tasks = [pool.submit(compute_task, str(catalog.root), type(ex), ex.config, chunk.rows,
                                         needed_images(ex, chunk, decoded), chunk.keys[ex.name])
                             for ex in away if ex.name in chunk.keys]
                    out.append((chunk, tasks))
                    compute_chunk(catalog, ChunkInputs(chunk.rows, decoded), here, chunk.keys, summary)
                    while len(out) > self.workers or (out and i + 1 == len(plan.chunks)):
                        done, tasks = out.pop(0)
                        for task in tasks:
                            summary.add_work(task.result())
                        bar.update(len(done.rows))
            pool.shutdown()
        except BrokenProcessPool as exc:
            raise SiqaError(f"a feature worker process died ({exc}); every shard written so far is kept and the "
                            "next `siqa features` resumes from it (fewer --workers use less memory)") from None
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # after an error: no queued task starts
            bar.close()


def travels(ex: Extractor) -> bool:
    """Can `ex` be rebuilt in a worker process (its class importable by name, its settings plain data)?"""
    try:
        pickle.dumps((type(ex), ex.config))
        return True
    except Exception:  # noqa: BLE001 - pickling fails in many ways (local class, lambda in a setting)
        log.info("%s runs in the main process: its class cannot be sent to a worker", ex.name)
        return False


def order_by_cost(catalog: Catalog, extractors: list[Extractor]) -> list[Extractor]:
    """The most expensive extractor first (seconds per item in the store's timings.json; unmeasured ones
    first, in their configured order)."""
    timings = catalog.timings()

    def per_item(ex):
        entry = timings.get(f"{ex.folder}/{ex.level}", {})
        return entry.get("seconds", 0.0) / entry["items"] if entry.get("items") else float("inf")

    return sorted(extractors, key=per_item, reverse=True)


def needed_images(ex: Extractor, chunk: Chunk, decoded: dict) -> dict:
    """The decoded images `ex`'s keys of `chunk` need (both images of a pair; the image itself)."""
    keys = chunk.keys[ex.name]
    if isinstance(ex, PairExtractor):
        rows = chunk.rows[chunk.rows.pair_id.isin(keys)]
        wanted = set(rows.ref_sha256) | set(rows.dist_sha256)
    else:
        wanted = set(keys)
    return {sha: decoded.get(sha) for sha in wanted}


# --- in the worker ----------------------------------------------------------------------------------

def start_worker(parent: int) -> None:
    """A worker's first steps: end with its parent (a `siqa features` killed with SIGKILL must not leave its
    workers computing, nor holding its output pipes), then one thread per library, and freed memory kept for
    the next image (`featurestore.allocator`)."""
    die_with_parent(parent)
    pin_threads(1)
    keep_freed_memory()


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when its parent ends (Linux `PR_SET_PDEATHSIG`; elsewhere nothing)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent ended before the request took effect
        os._exit(1)


_BUILT: dict = {}  # (class, settings) -> the extractor this worker built, its model loaded on first use


def compute_task(root: str, cls: type[Extractor], config: dict, rows: pd.DataFrame, images: dict,
                 keys: list[str]) -> ExtractSummary:
    """One extractor's `keys` of one chunk, written as shards into the store at `root`; what was done."""
    ident = (cls, repr(sorted(config.items())))
    if ident not in _BUILT:
        _BUILT[ident] = cls(**config)
    ex = _BUILT[ident]
    summary = ExtractSummary()
    compute_chunk(Catalog(root), ChunkInputs(rows, images), [ex], {ex.name: keys}, summary)
    return summary
