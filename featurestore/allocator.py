"""Keep freed memory in the process while features are computed, instead of handing it back to the kernel.

glibc's malloc serves a block above its mmap threshold (128 KB at first, rising to the largest block freed,
32 MB at most) with a fresh mapping and unmaps it when it is freed; the top of its heap goes back to the
kernel beyond a trim threshold. An extractor works image by image on tensors of a few MB, so each image's
tensors fault the same pages in again, and the kernel zeroes each one: on this 2-core VM the formula
extractor took 15,000-26,000 page faults a 512x384 pair, and a pair took 0.27-0.30 s against 0.21-0.25 s with
the memory kept; `siqa features` with the formula extractor alone on the 108 demo pairs took 17.6-18.5 s (system
time 1.8-2.0 s) against 19.1-19.7 s (2.7-3.0 s) without, three runs each. Threads have heaps of their own
(64 MB each at most, more added as needed), and malloc unmaps an added heap as soon as it is empty: the formula
extractor's pieces on two threads (`featurestore.threads.side_by_side`) took 48,000-131,000 page faults in a cold
run of the five calibration pairs (system time 0.17-0.30 s), against ~50,000 (0.13-0.16 s) with a top pad that
keeps them. `keep_freed_memory()` sets the three for good (`mallopt`): blocks up to `MMAP_THRESHOLD` come from the
heap and stay there, up to `TRIM_THRESHOLD` of free heap stays mapped, and a heap grows by `TOP_PAD` more than it
is asked for and keeps that much when it shrinks. The process's resident memory therefore stays near its peak
until it exits (a feature run, a worker process), which is the trade.

Linux with glibc only; elsewhere, or when the user configured glibc's malloc (`MALLOC_*_` variables or
`glibc.malloc` tunables: theirs win), nothing is changed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
#: blocks up to this size come from the heap (glibc's upper limit for the threshold on 64-bit systems)
MMAP_THRESHOLD = 32 * 1024 * 1024
#: free memory at the top of the heap kept mapped
TRIM_THRESHOLD = 1024 * 1024 * 1024
#: extra memory a heap grows by, and keeps when it shrinks
TOP_PAD = 64 * 1024 * 1024

_done = False


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds and its top pad once per process; True when they are set (now or before)."""
    global _done
    if _done:
        return True
    if user_configured():
        log.debug("glibc's malloc configured by the environment: left as it is")
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = all(mallopt(option, value) for option, value in
                ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))
    return _done


def user_configured() -> bool:
    """Did the environment set glibc's malloc thresholds (`MALLOC_TRIM_THRESHOLD_` and kin, `GLIBC_TUNABLES`)?"""
    return (any(name.startswith("MALLOC_") and name.endswith("_") for name in os.environ)
            or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""))
