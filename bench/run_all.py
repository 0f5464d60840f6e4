"""`make bench`: run every CPU benchmark script in bench/ (the bench_gpu*.py scripts excluded: `make bench-gpu`,
`make bench-gpu-models`, `make bench-gpu-lora`).

Each script prints its own table; this runner adds wall times. `python bench/run_all.py formula tabular`
runs a subset by name."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(names: list[str]) -> int:
    scripts = sorted(p for p in HERE.glob("bench_*.py") if p.stem != "bench_gpu" and not p.stem.startswith("bench_gpu_"))
    if names:
        scripts = [p for p in scripts if p.stem.removeprefix("bench_") in names]
    failed = []
    for script in scripts:
        print(f"\n=== {script.stem} ===", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"--- {script.stem}: {time.perf_counter() - t0:.1f}s, exit {rc}", flush=True)
        if rc:
            failed.append(script.stem)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
