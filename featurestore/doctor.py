"""Known answers a user can check on a machine with real weights: `siqa doctor`.

1. Calibration: each enabled learned metric with a published value runs on the five calibration pairs
   (TID2013 I03..I19, pyiqa's ResultsCalibra set) and is compared with `official_values.csv`, the values of
   the authors' own implementations. Checked: `lpips` (alex; the table's `lpips` row is LPIPS v0.1 AlexNet) and
   `dists`. Tolerance 2e-4: the table has four decimals (1e-4 from rounding) and pyiqa, whose networks siqa
   runs unchanged (tests/test_reference_equivalence.py: |siqa - pyiqa| < 1e-7), reproduces these rows to those
   four decimals, so 1e-4 more leaves room only for float32 summation order. The images run at their native
   512 x 384, as the authors' scripts do by default (no resize); siqa's own downscaling of larger images (the
   extractors' `size`) is lifted for this check, so what is checked is the weights and the network.
   The formula metrics (no weights) are checked too, with the tolerances tests/test_calibration.py derives.
   Enabled extractors without a published value (TOPIQ-FR, LPIPS-vgg, CLIP, DINO, ...) are listed as such.
2. With `--seiqa DIR`: CLIP ViT-L/14-336 (openai) cosine of every training pair with CLIP's own preprocessing
   (`resize = "crop"`), against the published one-feature baseline's `cos_sim` column (SROCC 0.767):
   Pearson >= 0.999 and max |Δ| <= 5e-3 (the baseline's exact precision is not published: fp16 on a GPU, as
   OpenAI's `clip` package loads it there, moves cosines by ~1e-3).

Any miss — a value outside its tolerance, or missing weights for a check that should run — makes
`siqa doctor` exit non-zero.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SiqaError
from .extractors.base import Extractor
from .io import DecodedPair, decode

#: formula metrics: as close to the original as pyiqa documents itself to be, plus the table's rounding
#: (the derivation, metric by metric, is in tests/test_calibration.py, which asserts these same numbers)
FORMULA_TOLERANCE = {
    "psnr": 0.0040, "ssim": 0.0005, "ms_ssim": 0.0045, "cw_ssim": 0.0001, "fsim": 0.0002,
    "vif": 0.0006, "vsi": 0.0124, "gmsd": 0.0001, "nlpd": 0.0057,
}
#: extractor -> [(output column, row of official_values.csv, tolerance)]
CALIBRATED = {"lpips": [("alex", "lpips", 2e-4)], "dists": [("score", "dists", 2e-4)],
              "formula": [(m, m, tol) for m, tol in FORMULA_TOLERANCE.items()]}
NATIVE_SIZE = 1 << 16   # a `size` no calibration image exceeds: no downscaling
SEIQA_MODEL = {"arch": "ViT-L-14-336", "pretrained": "openai"}
SEIQA_PEARSON, SEIQA_MAX_DELTA = 0.999, 5e-3


@dataclass(frozen=True)
class Check:
    what: str            # "lpips alex vs official lpips"
    detail: str = ""     # worst pair, number of pairs, a hint
    ours: float = float("nan")
    published: float = float("nan")
    delta: float = float("nan")
    tolerance: str = ""
    status: str = "ok"   # ok | MISS | MISSING WEIGHTS | not checked

    @property
    def failed(self) -> bool:
        return self.status in ("MISS", "MISSING WEIGHTS")


def read_official(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Pair names and rows of an `official_values.csv` (`Method, <pair>.bmp, ...`)."""
    if not path.is_file():
        raise SiqaError(f"{path}: not found (the calibration table; pass --calib DIR or --official FILE)")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as exc:
        raise SiqaError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise SiqaError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not rows or not rows[0] or rows[0][0] != "Method" or len(rows[0]) < 2:
        raise SiqaError(f"{path}: expected a header `Method,<image>,...`")
    names, table = rows[0][1:], {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(rows[0]):  # a short row would be compared with the wrong images
            raise SiqaError(f"{path}: line {line}: {len(row)} value(s), the header has {len(rows[0])}")
        try:
            table[row[0]] = np.array(row[1:], dtype=np.float64)
        except ValueError as exc:
            raise SiqaError(f"{path}: line {line}: {exc}") from None
    return names, table


def calibration_checks(extractors: list[Extractor], calib: Path, official: Path | None = None) -> list[Check]:
    names, table = read_official(official or calib / "official_values.csv")
    pairs = None
    checks = []
    for ex in extractors:
        wanted = [c for c in CALIBRATED.get(ex.name, []) if c[0] in _columns(ex)]
        if not wanted:
            checks.append(Check(ex.name, "no published value for this extractor", status="not checked"))
            continue
        unchecked = sorted(_columns(ex) - {c[0] for c in wanted})
        if unchecked:
            checks.append(Check(f"{ex.name} {', '.join(unchecked)}", "no published value", status="not checked"))
        missing = [s for s in ex.weight_sources() if s.found is None]
        if missing:
            checks.append(Check(f"{ex.name} {', '.join(c[0] for c in wanted)}", "; ".join(m.hint for m in missing),
                                status="MISSING WEIGHTS"))
            continue
        if pairs is None:
            pairs = [DecodedPair(Path(n).stem, decode(calib / "ref" / n), decode(calib / "dist" / n)) for n in names]
        native = type(ex)(**{**ex.config, "size": NATIVE_SIZE}) if "size" in ex.config else ex
        values = native.compute_pairs(pairs)
        native.close()
        for col, row, tol in wanted:
            if row not in table:
                checks.append(Check(f"{ex.name} {col}", f"no row {row!r} in the table", status="not checked"))
                continue
            delta = np.abs(values[col] - table[row])
            worst = int(np.argmax(delta))
            checks.append(Check(f"{ex.name} {col} vs official {row}", f"worst of {len(names)}: {pairs[worst].pair_id}",
                                float(values[col][worst]), float(table[row][worst]), float(delta[worst]),
                                f"<= {tol:g}", "ok" if delta[worst] <= tol else "MISS"))
    return checks


def _columns(ex: Extractor) -> set[str]:
    return {c.name for c in ex.pair_columns()}


def seiqa_cosine_check(seiqa: Path, published: Path, model: dict = SEIQA_MODEL, device: str = "auto",
                       progress: bool = True) -> list[Check]:
    """CLIP cosine on the SeIQA training pairs vs the published `cos_sim` (CSV: img_name, ..., cos_sim)."""
    import pandas as pd
    from tqdm import tqdm

    from .datasets import load_pairs
    from .extractors import create
    from .extractors.deep import cosine

    if not published.is_file():
        raise SiqaError(f"{published}: not found (the published cos_sim table; pass --seiqa-labels FILE)")
    try:
        labels = pd.read_csv(published, encoding="utf-8")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SiqaError(f"{published}: unreadable CSV ({str(exc).strip().splitlines()[0]})") from None
    if not {"img_name", "cos_sim"} <= set(labels.columns):
        raise SiqaError(f"{published}: needs columns img_name and cos_sim, has {list(labels.columns)}")
    values = pd.to_numeric(labels["cos_sim"], errors="coerce")
    if values.isna().any():  # a short row, or a cell that is not a number
        line = int(np.flatnonzero(values.isna().to_numpy())[0]) + 2
        raise SiqaError(f"{published}: line {line}: cos_sim is missing or not a number")
    labels["cos_sim"] = values
    extractor = create("clip", models=[model], resize="crop", prompts=[], device=device)
    missing = [s for s in extractor.weight_sources() if s.found is None]
    what = f"clip {model['arch']} {model['pretrained']} cosine vs published cos_sim"
    if missing:
        return [Check(what, missing[0].hint, status="MISSING WEIGHTS")]
    table = load_pairs(seiqa, splits=["train"]).df
    table = table[table["name"].isin(set(labels.img_name))]
    if table.empty:
        raise SiqaError(f"{published}: no img_name matches a training pair of {seiqa}")
    key = f"{extractor.specs[0]['key']}_embedding"
    ours = []
    rows = list(table.itertuples())
    for start in tqdm(range(0, len(rows), 16), desc="seiqa cosine", unit="batch", disable=not progress):
        chunk = rows[start:start + 16]
        images = [decode(r.ref_path) for r in chunk] + [decode(r.dist_path) for r in chunk]
        emb = extractor.compute_images(images)[key]
        ours += list(cosine(emb[:len(chunk)], emb[len(chunk):]))
    extractor.close()
    ours = np.asarray(ours)
    reference = labels.set_index("img_name").loc[[r.name for r in rows], "cos_sim"].to_numpy(np.float64)
    pearson = float(np.corrcoef(ours, reference)[0, 1])
    delta = np.abs(ours - reference)
    worst = int(np.argmax(delta))
    return [Check(f"{what} (Pearson)", f"{len(rows)} train pairs", pearson, 1.0, 1.0 - pearson,
                  f">= {SEIQA_PEARSON}", "ok" if pearson >= SEIQA_PEARSON else "MISS"),
            Check(f"{what} (max |Δ|)", f"worst: {rows[worst].name}", float(ours[worst]), float(reference[worst]),
                  float(delta[worst]), f"<= {SEIQA_MAX_DELTA:g}", "ok" if delta[worst] <= SEIQA_MAX_DELTA else "MISS")]


def format_checks(checks: list[Check]) -> str:
    """One row per check; the full hints of missing weights follow the table, numbered."""
    def num(x: float) -> str:
        return "" if np.isnan(x) else f"{x:.6g}"

    notes = []
    rows = [("check", "detail", "siqa", "published", "|Δ|", "tolerance", "status")]
    for c in checks:
        detail = c.detail
        if c.status == "MISSING WEIGHTS":
            notes.append(f"  [{len(notes) + 1}] {c.what}: {c.detail}")
            detail = f"see [{len(notes)}] below, or `siqa weights`"
        rows.append((c.what, detail, num(c.ours), num(c.published), num(c.delta), c.tolerance, c.status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    failed = sum(c.failed for c in checks)
    lines.append(f"{failed} miss(es)" if failed else "all checks passed")
    return "\n".join(lines + notes)
