"""Same behaviour before and after a refactor: fingerprint the demo pipeline, compare two fingerprints.

    python bench/compare_demo.py --out FINGERPRINT.json [--tree DIR] [--work DIR] [--preset fast]
    python bench/compare_demo.py --compare A.json B.json

The first form runs, in `--work` (default: a temporary folder), the command line of the source tree `--tree`
(default: this checkout) exactly as a user would:

    siqa demo-data --out WORK/data
    siqa features  --data WORK/data --store WORK/store --config configs/offline.toml
    siqa oof       --store WORK/store --run WORK/run --config configs/offline.toml --preset PRESET
    siqa submit    --run WORK/run

and writes a JSON fingerprint of what came out:
- `demo`: sha256 of every file of the demo dataset (images, score workbooks, metadata);
- `features`: per extractor folder name (`<name>-v<version>-<confighash>`), per level, the row count, the
  column names and types, and a sha256 of its rows sorted by key (every value, exactly);
- `folds`: sha256 of the (repeat, id, fold) assignment of oof.parquet;
- `oof`: per model column of oof.parquet, a sha256 of its predictions rounded to 1e-9;
- `blend`: the final blend of run.json (method, weights, calibration), floats rounded to 1e-9;
- `submission`: sha256 of prediction.xlsx inside the zip, and of readme.txt without its runtime line (the
  runtime is measured, so it differs from run to run).

The second form prints every difference between two fingerprints and exits 1 if there is any.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESET_DEFAULT = "fast"
ROUND = 9


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(value):
    """JSON-able, exact: floats as their repr (NaN, inf included), arrays as lists."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    return value


def _rounded(value):
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float):
        return value if not math.isfinite(value) else round(value, ROUND) + 0.0
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _rounded(v) for k, v in sorted(value.items())}
    return value


def _siqa(tree: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    command = [sys.executable, str(tree / "cli.py"), *args]
    print("$ siqa " + " ".join(args), file=sys.stderr, flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=tree, env=env, check=True)
    print(f"  ({time.perf_counter() - start:.1f}s)", file=sys.stderr, flush=True)


def _feature_fingerprint(store: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = {}
    for folder in sorted(p for p in (store / "features").iterdir() if p.is_dir()):
        levels = {}
        for level_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            shards = sorted(level_dir.glob("*.parquet"))
            if not shards:
                continue
            table = pa.concat_tables([pq.read_table(s) for s in shards], promote_options="default")
            key = "sha256" if "sha256" in table.column_names else "pair_id"
            columns = sorted(table.column_names)
            rows = table.select(columns).to_pylist()
            rows.sort(key=lambda r: r[key])
            digest = hashlib.sha256()
            for row in rows:
                digest.update(json.dumps([[c, _canonical(row[c])] for c in columns]).encode())
                digest.update(b"\n")
            levels[level_dir.name] = {"rows": len(rows), "key": key,
                                      "columns": {c: str(table.schema.field(c).type) for c in columns},
                                      "sha256": digest.hexdigest()}
        out[folder.name] = levels
    return out


def _run_fingerprint(run: Path) -> dict:
    import pandas as pd

    oof = pd.read_parquet(run / "oof.parquet")
    folds = oof[["repeat", "id", "fold"]].astype(str).to_csv(index=False).encode()
    skip = {"id", "group", "label", "target", "repeat", "fold"}
    models = {c: _sha(json.dumps(_rounded(oof[c].astype(float).tolist())).encode())
              for c in oof.columns if c not in skip}
    summary = json.loads((run / "run.json").read_text())
    blend = _rounded(summary.get("blend"))
    return {"oof_rows": len(oof), "folds": _sha(folds), "oof": models, "blend": blend,
            "headline": _rounded(summary.get("headline"))}


def _submission_fingerprint(zip_path: Path) -> dict:
    with zipfile.ZipFile(zip_path) as archive:
        xlsx = archive.read("prediction.xlsx")
        readme = archive.read("readme.txt").decode()
    kept = "".join(line for line in io.StringIO(readme) if not line.startswith("runtime per image"))
    return {"prediction.xlsx": _sha(xlsx), "readme.txt (without runtime)": _sha(kept.encode()),
            "members": sorted(zipfile.ZipFile(zip_path).namelist())}


def fingerprint(tree: Path, work: Path, preset: str) -> dict:
    data, store, run = work / "data", work / "store", work / "run"
    config = str(tree / "configs" / "offline.toml")
    _siqa(tree, "demo-data", "--out", str(data), "--quiet")
    _siqa(tree, "features", "--data", str(data), "--store", str(store), "--config", config, "--quiet")
    _siqa(tree, "oof", "--store", str(store), "--run", str(run), "--config", config, "--preset", preset, "--quiet")
    _siqa(tree, "submit", "--run", str(run), "--quiet")
    demo = {str(p.relative_to(data)): _sha(p.read_bytes()) for p in sorted(data.rglob("*")) if p.is_file()}
    return {"preset": preset, "demo": demo, "features": _feature_fingerprint(store),
            **_run_fingerprint(run), "submission": _submission_fingerprint(run / "submission.zip")}


def _differences(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            where = f"{path}/{key}"
            if key not in a:
                out.append(f"{where}: only in B")
            elif key not in b:
                out.append(f"{where}: only in A")
            else:
                out.extend(_differences(a[key], b[key], where))
        return out
    if a != b:
        return [f"{path}: {json.dumps(a)[:200]} != {json.dumps(b)[:200]}"]
    return []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the fingerprint here")
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree whose cli.py runs (default: this one)")
    parser.add_argument("--work", type=Path, default=None, help="folder for data, store and run (default: temporary)")
    parser.add_argument("--preset", default=PRESET_DEFAULT, help="tabular preset of `siqa oof` (default fast)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="compare two fingerprints")
    args = parser.parse_args(argv)
    if args.compare:
        missing = [str(p) for p in args.compare if not p.is_file()]
        if missing:
            sys.exit(f"compare_demo: no fingerprint file {', '.join(missing)}")
        a, b = (json.loads(p.read_text()) for p in args.compare)
        diffs = _differences(a, b)
        for line in diffs:
            print(line)
        print(f"{len(diffs)} difference(s) between {args.compare[0]} and {args.compare[1]}")
        return 1 if diffs else 0
    if not args.out:
        parser.error("give --out FILE (or --compare A B)")
    tree = args.tree.resolve()
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        result = fingerprint(tree, args.work.resolve(), args.preset)
    else:
        with tempfile.TemporaryDirectory(prefix="siqa-compare-") as tmp:
            result = fingerprint(tree, Path(tmp), args.preset)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"fingerprint -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
