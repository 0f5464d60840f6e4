"""How many CPUs this process may use, and how many threads each library may start.

Two `siqa features` runs on one 2-core machine took 4.7x as long each as one alone: torch's intra-op pool,
onnxruntime's pool and OpenCV's each start a thread per core and spin-wait between calls, so two processes
ran eight spinning threads on two cores. A worker of the parallel executor (`featurestore.store.workers`) therefore runs
one thread, set through each library's own setting (`pin_threads`), and there are as many workers as this
process may use CPUs (`usable_cpus`: the affinity mask, bounded by a cgroup CPU quota, as a container sets
it), so the machine is never asked for more threads than it has.

Extractors that create their own thread pools read `thread_budget()`: onnxruntime sessions (`text`), and
`formula`, which scores independent pairs side by side, each on one torch thread. A run in one process
(`LocalExecutor`, when there is a single task to spread) keeps torch at one thread and gives those extractors
the CPUs it was given instead.
"""
from __future__ import annotations

import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, bounded by a cgroup v2 (`cpu.max`) or v1
    (`cpu.cfs_quota_us`) quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_quota()
    return max(1, min(cpus, math.ceil(quota)) if quota else cpus)


def cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup, in CPUs (1.5 = one and a half), or None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # v2: "max 100000" or "150000 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())  # v1: -1 when unlimited
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


_BUDGET: int | None = None  # set by `pin_threads`; None: the libraries' own defaults


def thread_budget() -> int | None:
    """The threads a library may start in this process (None: no limit was set, use the library's default)."""
    return _BUDGET


def pin_threads(n: int) -> None:
    """At most `n` threads per library in this process, for good: torch (intra- and inter-op), the BLAS and
    OpenMP pools numpy and scipy use (threadpoolctl), OpenCV, and what `thread_budget` tells extractors that
    build onnxruntime sessions. Called once at the start of a worker process, before its extractors load."""
    # Pools of libraries loaded later read their size from the environment when they load (OpenMP, OpenBLAS,
    # MKL); those loaded already are resized through threadpoolctl below.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(n)
    import torch
    from threadpoolctl import threadpool_limits

    _set_threads(n, n, n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # only possible before the first inter-op work; a fresh worker has done none
        pass
    threadpool_limits(n)


def side_by_side(n: int) -> ThreadPoolExecutor:
    """A pool of `n` threads for work that computes with torch, each thread's torch at the number of threads it
    has in the thread that makes the pool (one, where `threads_at_most` gave the pool a budget). OpenMP's thread
    count is a setting of each thread and starts at one per core in a fresh thread; torch sets it there on the
    thread's first parallel operation, but an MKL product or FFT before that runs on every core (a 2000x2000
    product as a fresh thread's first operation here: 1.93 CPU-seconds a second). `torch.set_num_threads` in
    each thread sets it from the start."""
    import torch

    return ThreadPoolExecutor(n, initializer=torch.set_num_threads, initargs=(torch.get_num_threads(),))


@contextmanager
def fewer_gil_switches(interval: float = 0.05):
    """The interpreter's switch interval at `interval` seconds (its own default: 5 ms) for the block, then as it
    was. Threads that compute with torch hand the GIL over at every operation; the interval is how long one waits
    before the interpreter makes the other give it up anyway. The formula extractor's pieces on two threads took
    5% less wall and CPU time at 50 ms (0.474 against 0.501 s for the five calibration pairs, median of 12
    alternating runs; one thread unchanged)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@contextmanager
def threads_at_most(n: int, budget: int | None = None):
    """`pin_threads(n)` for the duration of a `with` block in this process, then the settings as they were
    (the process that hands work to the workers keeps only what the workers leave). `budget` (default `n`) is
    what `thread_budget` says meanwhile: the threads extractors may run side by side on independent work."""
    from threadpoolctl import threadpool_limits

    before = _set_threads(budget or n, n, n)
    try:
        with threadpool_limits(n):
            yield
    finally:
        _set_threads(*before)


def _set_threads(budget: int | None, torch_threads: int, cv2_threads: int | None) -> tuple:
    """Set `thread_budget`, torch's intra-op threads and OpenCV's (where installed); returns what they were, in
    this order."""
    global _BUDGET
    import torch
    try:
        import cv2
    except ImportError:
        cv2 = None
    before = (_BUDGET, torch.get_num_threads(), cv2.getNumThreads() if cv2 is not None else None)
    _BUDGET = budget
    torch.set_num_threads(torch_threads)
    if cv2 is not None and cv2_threads is not None:
        cv2.setNumThreads(cv2_threads)
    return before
