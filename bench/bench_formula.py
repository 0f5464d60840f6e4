"""The formula metrics through siqa vs through pyiqa the way its command line runs them, on the five real
TID2013 pairs in ../shared/data/calib (512x384).

    pyiqa path   per metric: `pyiqa.create_metric(name)`, then per pair `metric(dist_path, ref_path)`
                 (what `pyiqa <metric> -t dist -r ref` does: both files decoded again for every metric)
    siqa cold    hash the files, `FeatureStore.extract` into an empty store (decode each image once, one
                 batch per size, shared luma and SSIM pyramid), write the Parquet shards
    siqa warm    `extract` again on the same store (everything cached) + read the values back through
                 `featurestore.sql.connect`; reported for the first such run in the process (it also pays
                 DuckDB's start-up) and as the median of the next ones

Each path runs in a fresh process (imports done before the clock starts, so both pay the same Python/torch
start-up outside the timing); `--repeats` alternates them and reports medians. The values of both paths
are compared metric by metric, then a breakdown shows where each path spends its time.

Both paths run on `--device` (default cpu: the formula extractor's own default, auto, would take a GPU
where there is one and the comparison would no longer be like for like), with the same CPUs: pyiqa with
torch's threads, siqa as `siqa features --workers` runs (one task here: the formula extractor scores pairs
side by side on that many threads, torch on one thread in each). `--threads N` sets both; the default is each
library's own (torch: one thread per core; siqa: one worker per usable CPU).

    python bench/bench_formula.py [--repeats 3] [--threads N] [--calib DIR] [--metrics psnr,ssim,...] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CALIB = ROOT.parent / "shared" / "data" / "calib"
sys.path.insert(0, str(ROOT))
WARM_REPEATS = 5


def calib_pairs(calib: Path) -> list[tuple[str, str]]:
    pairs = [(str(calib / "ref" / p.name), str(p)) for p in sorted((calib / "dist").glob("*.bmp"))]
    if not pairs:
        sys.exit(f"{calib}: no calibration pairs (dist/*.bmp); pass --calib DIR")
    return pairs


def run_pyiqa(pairs, metrics, device) -> dict:
    import pyiqa

    per_metric, values, created = {}, {}, {}
    t0 = time.perf_counter()
    for m in metrics:
        t = time.perf_counter()
        created[m] = pyiqa.create_metric(m, device=device)
        values[m] = [created[m](dist, ref).item() for ref, dist in pairs]
        per_metric[m] = time.perf_counter() - t
    cold = time.perf_counter() - t0
    # the same metric objects once more: pyiqa has no cache, so this is its best repeat
    t0 = time.perf_counter()
    for m in metrics:
        [created[m](dist, ref).item() for ref, dist in pairs]
    return {"cold": cold, "warm": time.perf_counter() - t0, "values": values, "breakdown": per_metric}


def run_siqa(pairs, metrics, device, workers) -> dict:
    from featurestore.datasets import PairTable
    from featurestore.extractors import create
    from featurestore.sql import connect
    from featurestore.store import FeatureStore

    columns = ", ".join(f"formula_{m}" for m in metrics)
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        table = PairTable.from_paths(pairs)
        FeatureStore(root).extract(table, [create("formula", metrics=metrics, device=device)], progress=False,
                                   workers=workers)
        cold = time.perf_counter() - t0

        warm = []
        for _ in range(WARM_REPEATS):  # the first also pays DuckDB's start-up in this process
            t0 = time.perf_counter()
            table = PairTable.from_paths(pairs)
            summary = FeatureStore(root).extract(table, [create("formula", metrics=metrics, device=device)],
                                                 progress=False, workers=workers)
            con = connect(root)
            rows = con.execute(f"SELECT dist_path, {columns} FROM features ORDER BY dist_path").fetchall()
            con.close()
            warm.append(time.perf_counter() - t0)
            if summary.computed:
                sys.exit(f"warm run computed {dict(summary.computed)}: the cache did not hold")
    order = {dist: i for i, (_, dist) in enumerate(pairs)}
    rows.sort(key=lambda r: order[r[0]])
    values = {m: [r[1 + j] for r in rows] for j, m in enumerate(metrics)}
    return {"cold": cold, "warm": warm[0], "warm_again": statistics.median(warm[1:]), "values": values,
            "breakdown": siqa_breakdown(pairs, metrics, device)}


def siqa_breakdown(pairs, metrics, device) -> dict:
    """Where a cold run's time goes: hashing + decoding, building the pyiqa networks, each metric's share
    of the batch, and the store around it (the timers wrap the extractor's per-metric scorers); the pairs one
    after another on one thread, so that the shares add up."""
    from featurestore.datasets import PairTable
    from featurestore.extractors import formula
    from featurestore.io import DecodedPair, decode, match_size
    from featurestore.threads import threads_at_most

    out = {}
    t = time.perf_counter()
    table = PairTable.from_paths(pairs)
    images = {}
    for r in table.df.itertuples():
        images.setdefault(r.ref_sha256, decode(r.ref_path, r.ref_sha256))
        images.setdefault(r.dist_sha256, decode(r.dist_path, r.dist_sha256))
    decoded = [DecodedPair(r.pair_id, images[r.ref_sha256], match_size(images[r.ref_sha256], images[r.dist_sha256])[0])
               for r in table.df.itertuples()]
    out["hash + decode"] = time.perf_counter() - t

    ex = formula.FormulaExtractor(metrics=metrics, device=device)
    t = time.perf_counter()
    len(ex.nets)  # builds them
    out["build networks"] = time.perf_counter() - t
    real = dict(formula._SCORERS)

    def timed(name):
        def score(batch, nets):
            t0 = time.perf_counter()
            try:
                return real[name](batch, nets)
            finally:
                out[name] = out.get(name, 0.0) + time.perf_counter() - t0
        return score

    formula._SCORERS.update({m: timed(m) for m in metrics})
    t = time.perf_counter()
    with threads_at_most(1):
        ex.compute_pairs(decoded)
    out["batch + luma (rest of compute_pairs)"] = time.perf_counter() - t - sum(out.get(m, 0.0) for m in metrics)
    formula._SCORERS.update(real)
    return out


def child(path: str, calib: Path, metrics: list[str], threads: int, device: str, out: Path) -> None:
    import warnings

    import torch

    warnings.simplefilter("ignore")
    if threads:
        torch.set_num_threads(threads)
    # imports both paths share, outside the clock
    import pyiqa  # noqa: F401

    import featurestore.sql
    import featurestore.store  # noqa: F401
    from featurestore.extractors import EXTRACTORS

    EXTRACTORS.names()  # imports every extractor module, as `siqa` does at start-up (`import pyiqa` does the same)

    pairs = calib_pairs(calib)
    if path == "pyiqa":
        result = run_pyiqa(pairs, metrics, device)
    else:
        result = run_siqa(pairs, metrics, device, workers=threads or None)
    out.write_text(json.dumps(result))


def main() -> int:
    from featurestore.extractors.formula import DEFAULT_METRICS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib", type=Path, default=CALIB)
    ap.add_argument("--metrics", default=",".join(DEFAULT_METRICS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0,
                    help="CPUs of both paths: pyiqa's torch threads, siqa's --workers (0: torch's default, one per "
                         "usable CPU; the store's torch computes on one thread in each of its threads)")
    ap.add_argument("--device", default="cpu", help="where both paths run: cpu, cuda, cuda:N")
    ap.add_argument("--child", choices=["siqa", "pyiqa"], help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    metrics = args.metrics.split(",")
    if args.child:
        child(args.child, args.calib, metrics, args.threads, args.device, args.out)
        return 0

    n = len(calib_pairs(args.calib))
    runs = {"siqa": [], "pyiqa": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for path in ("pyiqa", "siqa") if r % 2 == 0 else ("siqa", "pyiqa"):
                out = Path(tmp) / f"{path}{r}.json"
                subprocess.run([sys.executable, __file__, "--child", path, "--calib", str(args.calib),
                                "--metrics", args.metrics, "--threads", str(args.threads), "--device", args.device,
                                "--out", str(out)],
                               check=True)
                runs[path].append(json.loads(out.read_text()))
                print(f"  run {r + 1}/{args.repeats} {path:5s}: cold {runs[path][-1]['cold']:.3f}s  "
                      f"warm {runs[path][-1]['warm']:.4f}s", flush=True)

    med = {p: {k: statistics.median(run[k] for run in runs[p]) for k in runs[p][0] if "warm" in k or k == "cold"}
           for p in runs}
    pyiqa, siqa = med["pyiqa"], med["siqa"]
    import torch

    from featurestore.threads import usable_cpus
    threads = (f"{args.threads} each" if args.threads else
               f"pyiqa {torch.get_num_threads()} (torch's default), siqa {usable_cpus()} (usable CPUs)")
    print(f"\n{n} pairs, metrics {','.join(metrics)}, device {args.device}, threads: {threads}, "
          f"median of {args.repeats} fresh processes")
    print(f"  pyiqa CLI-style  cold {pyiqa['cold']:8.3f}s   same metric objects again {pyiqa['warm']:8.3f}s")
    print(f"  siqa store       cold {siqa['cold']:8.3f}s   warm: cached extract + SQL read {siqa['warm']:.4f}s "
          f"(first in the process), {siqa['warm_again']:.4f}s (again)")
    # a round runs both paths back to back: its ratio shows how far the machine's speed moved between rounds
    rounds = sorted(a["cold"] / b["cold"] for a, b in zip(runs["pyiqa"], runs["siqa"]))
    print(f"  speed-up cold: {pyiqa['cold'] / siqa['cold']:.1f}x (round by round {rounds[0]:.1f}x to {rounds[-1]:.1f}x)   "
          f"warm vs pyiqa cold: {pyiqa['cold'] / siqa['warm']:.0f}x (first), {pyiqa['cold'] / siqa['warm_again']:.0f}x (again)")

    print("\nvalues, max |siqa - pyiqa| over the pairs (first run of each):")
    worst = 0.0
    for m in metrics:
        a, b = runs["siqa"][0]["values"][m], runs["pyiqa"][0]["values"][m]
        diff = max(abs(x - y) for x, y in zip(a, b))
        rel = max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b))
        worst = max(worst, rel)
        print(f"  {m:8s} {diff:.2e}  (relative {rel:.1e})")

    print("\nwhere the time goes (median seconds):")
    for p in ("pyiqa", "siqa"):
        keys = list(runs[p][0]["breakdown"])
        parts = {k: statistics.median(run["breakdown"][k] for run in runs[p]) for k in keys}
        print(f"  {p}: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])))
    # pyiqa itself moves vif by ~2e-5 between batch compositions (float32 GSM fit); beyond 1e-4 is a bug
    if worst > 1e-4:
        print(f"FAIL: siqa and pyiqa disagree by up to {worst:.1e} (relative)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
