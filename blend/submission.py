"""Challenge submission: a zip with `prediction.xlsx` (`picture_name, Score`) and `readme.txt`, validated.

`write_submission(run_dir, data, out_zip, runtime_per_image, cpu)` predicts the rows of `data` in the
requested split with the run's fitted pipeline (refit on all labelled rows by `run_oof`), writes the zip
and validates it against those rows:
every picture exactly once, scores finite and within 0..5, readme lines present. The zip is
byte-reproducible (`featurestore.reproducible`): the xlsx is repacked with fixed timestamps (openpyxl stamps
the save time into docProps/core.xml and into its own zip entries), and the outer zip entries carry a fixed date too.

`submit_run(run_dir, split, out, cpu, progress)` (what `siqa submit` calls) reads the run's data again
from where it came (`summary["source"]["origin"]`: the store or the feature table) and does the same.
Unless given, the runtime per image it declares is measured: reading the features and scoring them,
divided by the number of pictures; feature extraction happened earlier, in `siqa features`, and is not
included (the description says so).

readme.txt lines:
    runtime per image [s] : X
    CPU[1] / GPU[0] : X
    Extra Data [1] / No Extra Data [0] : X
    Other description : ...
"""
from __future__ import annotations

import io
import math
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from featurestore.errors import SiqaError
from featurestore.reproducible import deterministic_zip, reproducible_xlsx
from featurestore.store import FeatureStore
from tabular.data import TabularData

from .outputs import check_target, write_output
from .run import check_missing, load_run, run_origin

PREDICTION_FILE = "prediction.xlsx"
#: the zip `siqa submit` writes into the run folder by default: the one file it may write there
SUBMISSION_FILE = "submission.zip"
README_FILE = "readme.txt"
COLUMNS = ("picture_name", "Score")
README_KEYS = ("runtime per image [s]", "CPU[1] / GPU[0]", "Extra Data [1] / No Extra Data [0]", "Other description")
SCORE_RANGE = (0.0, 5.0)


def prediction_xlsx(names, scores) -> bytes:
    """The prediction workbook as bytes, identical for identical input."""
    return reproducible_xlsx([list(COLUMNS), *([str(name), float(score)] for name, score in zip(names, scores))])


def readme_text(runtime_per_image: float, cpu: bool, extra_data: bool, description: str) -> str:
    values = (f"{runtime_per_image:.4f}", int(bool(cpu)), int(bool(extra_data)), " ".join(description.split()))
    return "".join(f"{key} : {value}\n" for key, value in zip(README_KEYS, values))


def write_submission_zip(names, scores, out_zip, runtime_per_image: float, cpu: bool,
                         extra_data: bool = False, description: str = "", expected_names=None,
                         products=()) -> Path:
    """Write the zip through `write_output` (`products`: where this command may write inside a run); given
    `expected_names`, the written zip is validated against them before it replaces whatever `out_zip` held."""
    out_zip = Path(out_zip)
    payload = deterministic_zip({PREDICTION_FILE: prediction_xlsx(names, scores),
                                  README_FILE: readme_text(runtime_per_image, cpu, extra_data, description).encode()})
    validate = None if expected_names is None else \
        (lambda written: validate_submission(written, expected_names, shown_as=out_zip))
    return write_output(out_zip, payload, validate=validate, products=products)


def read_submission(zip_path, shown_as=None) -> tuple[pd.DataFrame, dict[str, str]]:
    """(prediction table, readme key -> value) of a submission zip; messages name it `shown_as` (default
    `zip_path`: the file being checked may be the temp file that is about to replace it)."""
    source, zip_path = zip_path, Path(shown_as if shown_as is not None else zip_path)
    try:
        with zipfile.ZipFile(source) as archive:
            missing = [f for f in (PREDICTION_FILE, README_FILE) if f not in archive.namelist()]
            if missing:
                raise SiqaError(f"{zip_path}: submission lacks {', '.join(missing)}")
            table = pd.read_excel(io.BytesIO(archive.read(PREDICTION_FILE)), engine="openpyxl")
            readme = archive.read(README_FILE).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, FileNotFoundError) as err:
        raise SiqaError(f"{zip_path}: not a readable zip ({err})") from None
    fields = {}
    for line in readme.splitlines():
        key, sep, value = line.partition(" : ")
        if sep:
            fields[key.strip()] = value.strip()
    return table, fields


def validate_submission(zip_path, expected_names, shown_as=None) -> None:
    """Raise `SiqaError` unless the zip predicts every expected picture exactly once, in 0..5 (messages name
    it `shown_as`, as in `read_submission`)."""
    table, fields = read_submission(zip_path, shown_as)
    zip_path = Path(shown_as if shown_as is not None else zip_path)
    if list(table.columns) != list(COLUMNS):
        raise SiqaError(f"{zip_path}: {PREDICTION_FILE} columns are {list(table.columns)}, expected {list(COLUMNS)}")
    names = table["picture_name"].astype(str)
    duplicated = sorted(set(names[names.duplicated()]))
    if duplicated:
        raise SiqaError(f"{zip_path}: picture(s) listed more than once: {', '.join(duplicated[:5])}")
    expected = {str(n) for n in expected_names}
    missing, extra = sorted(expected - set(names)), sorted(set(names) - expected)
    if missing:
        raise SiqaError(f"{zip_path}: {len(missing)} test picture(s) missing, e.g. {', '.join(missing[:5])}")
    if extra:
        raise SiqaError(f"{zip_path}: {len(extra)} picture(s) not in the test split, e.g. {', '.join(extra[:5])}")
    scores = pd.to_numeric(table["Score"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(scores) | (scores < SCORE_RANGE[0]) | (scores > SCORE_RANGE[1])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise SiqaError(f"{zip_path}: {int(bad.sum())} score(s) not finite or outside 0..5, "
                        f"e.g. {names.iloc[row]} = {table['Score'].iloc[row]!r}")
    absent = [key for key in README_KEYS if key not in fields]
    if absent:
        raise SiqaError(f"{zip_path}: {README_FILE} lacks line(s) {', '.join(absent)}")
    for key in README_KEYS[:3]:
        try:
            value = float(fields[key])
        except ValueError:
            raise SiqaError(f"{zip_path}: {README_FILE} value of {key!r} is not a number: {fields[key]!r}") from None
        if not math.isfinite(value) or value < 0 or (key != README_KEYS[0] and value not in (0, 1)):
            raise SiqaError(f"{zip_path}: {README_FILE} value of {key!r} is invalid: {fields[key]!r}")


def describe_run(summary: dict) -> str:
    weights = summary.get("blend", {}).get("weights", {})
    used = ", ".join(f"{m} {w:.2f}" for m, w in sorted(weights.items(), key=lambda kv: -kv[1]) if w > 0)
    return (f"siqa: cached full-reference feature store + tabular AutoML; nested grouped CV Final "
            f"{summary.get('final', float('nan')):.4f}; blend ({summary.get('blend', {}).get('method', '?')}): {used}; "
            f"monotone calibration to 0..5")


def write_submission(run_dir, data, out_zip, runtime_per_image: float, cpu: bool, split: str = "test",
                     extra_data: bool = False, description: str | None = None) -> Path:
    """Predict the `split` rows of `data` with the run in `run_dir`, write `out_zip` and validate it."""
    rows = np.asarray(data.split == split.lower())
    if not rows.any():
        raise SiqaError(f"{data.source}: no rows in split {split!r} to submit")
    subset = data.subset(rows)
    duplicated = pd.Series(subset.names).duplicated()
    if duplicated.any():
        raise SiqaError(f"{data.source}: picture name {subset.names[duplicated.to_numpy()][0]!r} appears twice "
                        f"in split {split!r}")
    run = load_run(run_dir)
    scores = run.pipeline.predict(subset)
    return write_submission_zip(subset.names, scores, out_zip, runtime_per_image, cpu, extra_data,
                                description if description is not None else describe_run(run.summary),
                                expected_names=subset.names, products=[Path(run_dir) / SUBMISSION_FILE])


def _extraction_seconds_per_pair(origin: dict) -> float | None:
    """What computing the features of one new pair costs, from the seconds the store measured while it
    extracted them (`timings.json`); None for a feature table, or features never timed in that store."""
    if origin.get("kind") != "store":
        return None
    store = FeatureStore(origin["root"])
    return store.seconds_per_pair([view["folder"] for view in store.views().values()])


def submit_run(run_dir, split: str = "test", out=None, cpu: bool = True, progress: bool = True,
               runtime_per_image: float | None = None, extra_data: bool = False, store=None,
               allow_missing: bool = False) -> tuple[Path, int]:
    """Predict `split` of the run's own data source (its own store unless `store` says otherwise) and write
    the validated zip (default RUN/submission.zip). Pairs of the split without the features of some extractor
    are refused unless `allow_missing` (then scored with those features missing, counts warned).

    Returns (zip path, number of predictions)."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / SUBMISSION_FILE
    check_target(out, products=[run_dir / SUBMISSION_FILE])  # before the work, not only when writing
    run = load_run(run_dir)
    started = time.perf_counter()
    origin = run_origin(run, store)
    data = TabularData.from_origin(origin)
    rows = np.asarray(data.split == split.lower())
    if not rows.any():
        raise SiqaError(f"{data.source}: no rows in split {split!r} to submit")
    check_missing(data, rows, f"{split} pairs", allow_missing, "score them with those features missing")
    run.pipeline.predict(data.subset(rows))
    measured = (time.perf_counter() - started) / int(rows.sum())
    description = describe_run(run.summary)
    if runtime_per_image is None:
        extraction = _extraction_seconds_per_pair(origin)
        if extraction is None:
            description += "; runtime = reading cached features + scoring (extraction time unknown here)"
        else:
            measured += extraction
            description += "; runtime = feature extraction (decode + every extractor, as measured by the store) + scoring"
    write_submission(run_dir, data, out, runtime_per_image if runtime_per_image is not None else measured, cpu,
                     split=split, extra_data=extra_data, description=description)
    return out, int(rows.sum())
