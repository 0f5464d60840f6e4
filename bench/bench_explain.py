"""How right are `siqa explain`'s maps? The pointing game on the demo's known edits, and their spread.

Builds the demo dataset (or reads `--data`, a `siqa demo-data` folder), computes the semantic difference map of
every pair with the real packaged weights, and prints per degradation: how often the map's peak falls inside the
recorded edit box widened by 8 px (localized edits; chance is the box's share of the image) and the map's
concentration (share of its mass in its top 10% of pixels; about 0.1 when the change is spread evenly).

    python bench/bench_explain.py [--data DIR] [--out bench/results/explain_demo.txt]
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featurestore.datasets.demo import BOX_COLUMNS, DEGRADATIONS, META_FILE, make_demo_dataset  # noqa: E402
from featurestore.semantic_map import SemanticMapper, decoded_pair  # noqa: E402


def evaluate(data: Path, progress: bool = True) -> tuple[dict[str, dict], float]:
    """Per degradation: pairs, pointing-game hits (localized ones), chance, mean concentration; and seconds/map."""
    mapper = SemanticMapper()
    rows = list(csv.DictReader(open(data / META_FILE, newline="")))
    table: dict[str, dict] = defaultdict(lambda: {"pairs": 0, "hits": 0, "chance": [], "concentration": []})
    started = time.perf_counter()
    for row in tqdm(rows, desc="maps", unit="pair", disable=not progress):
        folder = data / row["split"].capitalize()
        semantic = mapper.map(decoded_pair(str(folder / "Ref" / row["name"]), str(folder / "Dist" / row["name"])))
        entry = table[row["degradation"]]
        entry["pairs"] += 1
        entry["concentration"].append(semantic.concentration)
        if row["box_x0"]:
            box = tuple(int(row[c]) for c in BOX_COLUMNS)
            entry["hits"] += semantic.points_into(box)
            h, w = semantic.values.shape
            widened = (min(w, box[2] + 8) - max(0, box[0] - 8)) * (min(h, box[3] + 8) - max(0, box[1] - 8))
            entry["chance"].append(widened / (h * w))
    return dict(table), (time.perf_counter() - started) / len(rows)


def summary(table: dict[str, dict], seconds: float) -> str:
    lines = [f"{'degradation':<16} {'pairs':>5} {'hit rate':>9} {'chance':>7} {'concentration':>14}"]
    localized = [name for name in sorted(table) if DEGRADATIONS[name].localized]
    whole = [name for name in sorted(table) if not DEGRADATIONS[name].localized]
    for name in localized + whole:
        e = table[name]
        hit = f"{e['hits'] / e['pairs']:.2f}" if e["chance"] else "-"
        chance = f"{np.mean(e['chance']):.2f}" if e["chance"] else "-"
        lines.append(f"{name:<16} {e['pairs']:>5} {hit:>9} {chance:>7} {np.mean(e['concentration']):>14.3f}")
    hits = sum(table[n]["hits"] for n in localized)
    pairs = sum(table[n]["pairs"] for n in localized)
    conc = lambda names: np.mean([c for n in names for c in table[n]["concentration"]])  # noqa: E731
    photometric = [n for n in whole if DEGRADATIONS[n].kind == "photometric"]
    lines += [f"pointing game, localized edits: {hits}/{pairs} = {hits / pairs:.2f} "
              f"(chance {np.mean([c for n in localized for c in table[n]['chance']]):.2f})",
              f"concentration: localized {conc(localized):.3f}, whole-image blur/noise/JPEG {conc(photometric):.3f}, "
              f"patch_shuffle {conc(['patch_shuffle']) if 'patch_shuffle' in table else float('nan'):.3f}",
              f"{seconds:.2f} s per map on this machine"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="a siqa demo-data folder (default: build one)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="siqa-bench-explain-") as tmp:
        data = args.data or Path(tmp) / "demo"
        if args.data is None:
            make_demo_dataset(data)
        text = summary(*evaluate(data))
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
