"""A worker process that runs the toy extractors on a store, for the store robustness tests.

    python tests/store_worker.py --data DIR --store DIR [--splits train] [--die-{during,before,after} N]

prints the run's summary as one JSON line. `TOY_SLEEP` (seconds per extractor call) slows the work down
so that a SIGKILL from outside lands mid-run. `--die-* N` makes the process SIGKILL itself at the N-th
atomic write of the run (pairs.parquet, views.json, then the shards), to hit each window exactly:
`during` with half of the file's bytes written, `before` with the whole temp file fsynced but not yet
renamed, `after` just after the rename. The sleep is not part of the extractors' config, so it does
not change their folder names.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: make the project importable
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from featurestore.datasets import load_pairs
from featurestore.extractors import Extractor
from featurestore.store import FeatureStore
from toy_extractors import ToyMean, ToyMse


def extractors() -> list[Extractor]:
    """The shared toy extractors (tests/toy_extractors.py) in small batches, so a run writes many shards."""
    return [ToyMean(batch_size=2), ToyMse(batch_size=2)]


def die_at_write(during: int | None, before: int | None, after: int | None) -> None:
    """SIGKILL this process inside the N-th atomic write. Every write fsyncs its temp file, then renames
    it (`os.replace`, the commit point); "during" cuts the temp file to half its bytes at that fsync."""
    real_fsync, real_replace = os.fsync, os.replace
    writes = renames = 0

    def fsync(fd):
        nonlocal writes
        if stat.S_ISREG(os.fstat(fd).st_mode):  # the folder fsync after a rename is not a write
            writes += 1
            if writes == during:
                os.ftruncate(fd, os.fstat(fd).st_size // 2)
                real_fsync(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        real_fsync(fd)

    def replace(src, dst):
        nonlocal renames
        renames += 1
        if renames == before:
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)
        if renames == after:
            os.kill(os.getpid(), signal.SIGKILL)

    os.fsync, os.replace = fsync, replace


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--splits", default=None)
    ap.add_argument("--chunk-pairs", type=int, default=2)
    for when in ("during", "before", "after"):
        ap.add_argument(f"--die-{when}", type=int, default=None)
    args = ap.parse_args(argv)
    die_at_write(args.die_during, args.die_before, args.die_after)
    table = load_pairs(args.data, splits=args.splits.split(",") if args.splits else None)
    summary = FeatureStore(args.store).extract(table, extractors(), progress=False, chunk_pairs=args.chunk_pairs)
    print(json.dumps({"computed": summary.computed, "cached": summary.cached, "failures": summary.failures}))


if __name__ == "__main__":
    main()
