"""`siqa features` on the demo data (configs/offline.toml): one run alone, then two runs at once on the same
machine (separate stores), and the ratio of their times: what a shared lab server, two users, or CI beside a
benchmark do to it. Each run is a fresh `siqa features` process into an empty store.

    python bench/bench_workers.py [--workers N] [--config FILE] [--tree DIR] [--out FILE.json]

`--workers` is passed on (default: siqa's, one worker per usable CPU); `--tree` runs another checkout's siqa
(its `cli` module first on PYTHONPATH), to time the same data before and after a change. Prints wall seconds,
CPU seconds (user + system of the run and its workers), the per-extractor seconds of timings.json, and
`concurrent/alone: N×`. Run it on a quiet machine: anything else running is counted in.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def features(tree: Path, data: Path, store: Path, config: Path, workers: int | None) -> subprocess.Popen:
    args = [sys.executable, "-m", "cli", "features", "--data", str(data), "--store", str(store), "--config",
            str(config), "--quiet"] + (["--workers", str(workers)] if workers else [])
    return subprocess.Popen(args, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def timed(procs: list[subprocess.Popen]) -> list[float]:
    """Wall seconds of each process, from now until it ends."""
    t0, ends = time.perf_counter(), {}
    while len(ends) < len(procs):
        for i, p in enumerate(procs):
            if i not in ends and p.poll() is not None:
                ends[i] = time.perf_counter() - t0
                if p.returncode:
                    sys.exit(f"siqa features failed: {p.stderr.read()[-2000:]}")
        time.sleep(0.05)
    return [ends[i] for i in range(len(procs))]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def per_extractor(store: Path) -> dict[str, float]:
    timings = json.loads((store / "timings.json").read_text())
    out: dict[str, float] = {}
    for name, entry in timings.items():
        key = name.split("-v")[0] if "-v" in name else name.split("/")[0]
        out[key] = round(out.get(key, 0.0) + entry["seconds"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "offline.toml")
    parser.add_argument("--tree", type=Path, default=ROOT)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="siqa-bench-workers-") as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "cli", "demo-data", "--out", str(tmp / "data")], cwd=ROOT, check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
        print(f"machine: {os.cpu_count()} CPUs, load average before: {os.getloadavg()[0]:.2f}")
        cpu0 = cpu_seconds()
        [alone] = timed([features(args.tree, tmp / "data", tmp / "alone", args.config, args.workers)])
        cpu_alone = cpu_seconds() - cpu0
        cpu0 = cpu_seconds()
        both = timed([features(args.tree, tmp / "data", tmp / f"both{i}", args.config, args.workers) for i in (1, 2)])
        cpu_both = (cpu_seconds() - cpu0) / 2
        result = {"tree": str(args.tree), "workers": args.workers, "alone_s": round(alone, 1),
                  "alone_cpu_s": round(cpu_alone, 1), "concurrent_s": [round(t, 1) for t in both],
                  "concurrent_cpu_s_each": round(cpu_both, 1), "ratio": round(max(both) / alone, 2),
                  "per_extractor_alone": per_extractor(tmp / "alone"),
                  "per_extractor_concurrent": per_extractor(tmp / "both1")}
    print(f"alone:      {alone:6.1f} s wall, {cpu_alone:6.1f} CPU-s  per extractor {result['per_extractor_alone']}")
    print(f"concurrent: {max(both):6.1f} s wall each (two at once), {cpu_both:6.1f} CPU-s each  "
          f"per extractor {result['per_extractor_concurrent']}")
    print(f"concurrent/alone: {result['ratio']}×")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
