"""`siqa features --backend ray`: the store's chunks computed on a Ray cluster, same results.

`RayExecutor` is an `Executor` (featurestore.store.execute): `FeatureStore.extract` holds the lock,
registers pairs and views, plans the chunks (each missing key in exactly one chunk, so an image shared by
many pairs is computed once on the whole cluster), derives the pair columns of image-level extractors and
records the timings, exactly as for a local run. In between, the cluster works:

- one decode task per chunk reads that chunk's images (paths + sha256s); the decoded batch stays in Ray's
  object store and feeds every extractor's worker (zero-copy for workers on the same node);
- one pool of actors per extractor holds its model: when the extractor's `device` is cuda (or `auto` on a
  cluster with GPUs) each GPU hosts one replica of every such extractor (a GPU share each), otherwise
  the actors split the CPUs left after decoding;
- an actor computes its keys of a chunk with the local backend's code (`compute_chunk`), which writes
  the shards with the same atomic writer, so batches, shard names and values are those of a local run,
  and a killed run leaves whole shards that the next run (either backend) resumes from; what it computed,
  measured and failed on comes back to the driver's summary, so timings.json is kept as locally.

Values match to the bit where the thread count matches; torch's CPU kernels split reductions by thread
count and Ray gives each worker its CPU share of threads, so float32 CPU models may differ by ~1e-6.

Workers write straight into the store: on a multi-node cluster the store and the images must be on a
filesystem that every node mounts at the same path. Ray is an optional extra (`pip install .[ray]`).
"""
from __future__ import annotations

import logging
import math
import os
import socket
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from .datasets import PairTable
from .devices import wants_gpu
from .errors import SiqaError
from .extractors.base import Extractor
from .store import Catalog, ExtractSummary, FeatureStore
from .store.execute import ChunkInputs, Executor, compute_chunk, count_resized, decode_chunk, note_decoded
from .store.plan import Chunk, Plan

WORK_COLUMNS = ["pair_id", "ref_path", "dist_path", "ref_sha256", "dist_sha256"]
#: where extractors look for weights (featurestore.weights); passed on to the workers of an existing cluster
WEIGHT_ENV = ("SIQA_WEIGHTS_DIR", "HF_HOME", "HF_HUB_CACHE", "TORCH_HOME")


def import_ray():
    try:
        import ray
    except ImportError:
        raise SiqaError("--backend ray: Ray is not installed; install the extra with `pip install '.[ray]'` "
                        "(or `pip install 'ray[data]>=2.9'`)") from None
    return ray


# --- resources (driver, no Ray needed) ---------------------------------------------------------

@dataclass(frozen=True)
class WorkerPlan:
    replicas: int
    options: dict  # Ray actor options: num_cpus, num_gpus


def _floor4(x: float) -> float:
    # Ray keeps resource amounts to 4 decimals; rounding down keeps the shares' sum within the total.
    return math.floor(x * 10_000) / 10_000


def plan_resources(extractors: list[Extractor], resources: dict) -> tuple[dict[str, WorkerPlan], float]:
    """Actor pool per extractor and the CPU share of one decode task, from the cluster's resources.

    A quarter of the CPUs (half on a machine of fewer than 4) is left to decode tasks, so actors that
    hold CPUs for their lifetime can never starve the decoding they wait on."""
    cpus, gpus = float(resources.get("CPU", 1.0)), int(resources.get("GPU", 0))
    on_gpu = [ex for ex in extractors if wants_gpu(ex, gpus)]
    if on_gpu and not gpus:
        raise SiqaError(f"--backend ray: {', '.join(ex.name for ex in on_gpu)} run(s) on cuda but the Ray cluster "
                        "has no GPU; set device = \"cpu\" for it in the config or add GPU nodes")
    on_cpu = [ex for ex in extractors if ex not in on_gpu]
    decode_cpus = cpus / 4 if cpus >= 4 else cpus / 2
    plans = {}
    for ex in on_gpu:
        # Every GPU holds one replica of each GPU extractor: a chunk decoded once feeds them all.
        plans[ex.name] = WorkerPlan(gpus, {"num_gpus": _floor4(1 / len(on_gpu)), "num_cpus": 0})
    if on_cpu:
        budget = cpus - decode_cpus
        replicas = max(1, int(budget // len(on_cpu)))
        share = _floor4(budget / (len(on_cpu) * replicas))
        for ex in on_cpu:
            plans[ex.name] = WorkerPlan(replicas, {"num_cpus": share})
    return plans, _floor4(min(1.0, decode_cpus))


# --- work on the cluster --------------------------------------------------------------------------

def decode_task(chunk: Chunk, extractors: list[Extractor]) -> tuple[dict, ExtractSummary]:
    """Every image of a chunk, decoded once. Two results: the images (sha256 -> DecodedImage or None),
    which only the workers fetch, and the driver's small report: decode failures by path and seconds, and
    how many of the pairs that pair-level extractors compute here get a resized degraded image."""
    report = ExtractSummary()
    with ThreadPoolExecutor(max_workers=1) as pool:
        images, failures = decode_chunk(chunk.rows, frozenset(), pool)
    note_decoded(report, images, failures)
    report.resized_pairs = count_resized(chunk, extractors, images)
    return images, report


class ExtractorWorker:
    """One extractor (and its loaded model) on its own resources; computes its keys of a chunk and writes
    the shards into the store with the local store's code."""

    def __init__(self, extractor: Extractor, root: str):
        if not Path(root).is_dir():
            raise SiqaError(f"{root}: the store is not visible on Ray node {socket.gethostname()}; "
                            "put it on a filesystem every node mounts at the same path")
        self.extractor = extractor
        self.catalog = Catalog(root)

    def run(self, rows: pd.DataFrame, images: dict, keys: list[str]) -> ExtractSummary:
        summary = ExtractSummary()
        compute_chunk(self.catalog, ChunkInputs(rows, images), [self.extractor], {self.extractor.name: keys}, summary)
        return summary


@contextmanager
def ray_session(ray, address: str | None):
    """Use the Ray session already open in this process (notebook, test, benchmark) if any; else connect
    to `address` or $RAY_ADDRESS (shipping this package, so workers run the driver's code, and the
    driver's weight locations) or start Ray on this machine (its workers inherit this environment)."""
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        env = {name: os.environ[name] for name in WEIGHT_ENV if os.environ.get(name)}
        kwargs = {"address": address,
                  "runtime_env": {"py_modules": [str(Path(__file__).resolve().parent)], "env_vars": env}}
    else:
        kwargs = {"include_dashboard": False, "log_to_driver": False}
    try:
        ray.init(logging_level=logging.WARNING, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"--address {address}" if address else "--backend ray"
        raise SiqaError(f"{where}: cannot start or reach Ray ({str(exc).splitlines()[0]})") from None
    try:
        yield
    finally:
        ray.shutdown()


def _reraise(ray, exc: Exception, what: str):
    """A SiqaError raised on a worker comes back as itself; anything else as one line."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, SiqaError):
        raise cause from None
    if isinstance(exc, ray.exceptions.RayActorError) and "SiqaError: " in str(exc):
        raise SiqaError(str(exc).split("SiqaError: ", 1)[1].splitlines()[0]) from None
    lines = str(cause or exc).strip().splitlines()
    detail = lines[-1].split(". ")[0] if lines else ""  # Ray's last line holds the reason, then advice
    raise SiqaError(f"--backend ray: {what} failed ({type(cause or exc).__name__}: {detail}); "
                    "finished shards are kept, run again to resume") from None


class RayExecutor(Executor):
    """Decode every chunk once on the cluster and let each extractor's actors compute and store its keys;
    `address` None uses the Ray session open in this process, or $RAY_ADDRESS, or starts Ray here."""

    def __init__(self, address: str | None = None):
        self.ray = import_ray()
        self.address = address

    def run(self, catalog, plan, summary, progress):
        with ray_session(self.ray, self.address):
            run_chunks(self.ray, catalog.root.resolve(), plan, summary, progress)  # workers write to this path


def run_chunks(ray, root: Path, plan: Plan, summary: ExtractSummary, progress: bool) -> None:
    busy = plan.busy()
    # Workers may run elsewhere: they read the images by absolute path.
    chunks = [Chunk(c.rows[WORK_COLUMNS].assign(ref_path=c.rows.ref_path.map(os.path.abspath),
                                                dist_path=c.rows.dist_path.map(os.path.abspath)).reset_index(drop=True),
                    c.keys) for c in plan.chunks]
    plans, decode_cpus = plan_resources(busy, ray.cluster_resources())
    decode = ray.remote(num_cpus=decode_cpus, num_returns=2)(decode_task)
    worker_class = ray.remote(ExtractorWorker)
    pools = {ex.name: [worker_class.options(**plans[ex.name].options).remote(ex, str(root))
                       for _ in range(plans[ex.name].replicas)] for ex in busy}
    load = Counter()  # actor -> calls queued on it
    # Enough chunks in flight to keep every replica fed, few enough to bound decoded images in memory.
    max_chunks = 2 * max(p.replicas for p in plans.values()) + 1
    waiting: dict = {}  # result ref -> (chunk index, actor or None for the decode report, extractor name)
    open_calls: Counter = Counter()  # chunk index -> results not yet back
    bar = tqdm(total=sum(len(c.rows) for c in chunks), desc="features (ray)", unit="pair", disable=not progress)
    next_chunk = 0
    try:
        while next_chunk < len(chunks) or waiting:
            while next_chunk < len(chunks) and len(open_calls) < max_chunks:
                chunk = chunks[next_chunk]
                images, report = decode.remote(chunk, busy)
                waiting[report] = (next_chunk, None, "decoding")
                for name, keys in chunk.keys.items():
                    actor = min(pools[name], key=lambda a: load[a])
                    load[actor] += 1
                    waiting[actor.run.remote(chunk.rows, images, keys)] = (next_chunk, actor, name)
                open_calls[next_chunk] = 1 + len(chunk.keys)
                next_chunk += 1
            (ref,), _ = ray.wait(list(waiting), num_returns=1)
            index, actor, name = waiting.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as exc:
                _reraise(ray, exc, f"{name} on chunk {index + 1}/{len(chunks)}")
            if actor is not None:
                load[actor] -= 1
            summary.add_work(result)
            open_calls[index] -= 1
            if not open_calls[index]:
                del open_calls[index]
                bar.update(len(chunks[index].rows))
    finally:
        bar.close()
        for pool in pools.values():
            for actor in pool:
                ray.kill(actor)


def extract_with_ray(store_root: str | Path, table: PairTable, extractors: list[Extractor], address: str | None = None,
                     progress: bool = True, chunk_pairs: int = 32, replace: bool = False) -> ExtractSummary:
    """`FeatureStore(store_root).extract(table, extractors)` with the chunks computed on a Ray cluster:
    the same keys, shards, values and timings; `address` None starts Ray on this machine."""
    executor = RayExecutor(address)
    store = FeatureStore(Path(store_root).resolve())  # workers write to the path the driver sees
    return store.extract(table, extractors, progress=progress, chunk_pairs=chunk_pairs, executor=executor,
                         replace=replace)
