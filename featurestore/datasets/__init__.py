"""Datasets -> one `PairTable`: pair_id, split, name, ref/dist path + sha256, label.

Two input shapes:
- SeIQA layout: `Train|Val|Test/Ref/*.png` and `…/Dist/*.png` with the same names (matched by stem,
  case-insensitively, so `0001.png` pairs with `0001.JPG`; a pair is named by its degraded file),
  `Train/Train_scores.xlsx` (header row, then `name, score`, integers 0..5; names with or without
  extension, any case). `Val_scores.xlsx` / `Test_scores.xlsx` are read when present (means of raters,
  real numbers 0..5). Hidden files and files without an image extension are ignored.
- Pairs table (CSV or Parquet, pyiqa meta-info style): `ref_name, dist_name[, mos][, split]`, paths relative
  to a root folder (default: the table's folder). Names are taken verbatim; labels may be on any finite
  scale there, and an empty cell (or nan/NA/null) means unlabelled.

Image paths are made absolute. Keys are content hashes: `pair_id` = sha256 of the two image hashes, so renaming files changes nothing.
Every problem raises `SiqaError` naming the file and what is wrong.
"""
from __future__ import annotations

import io
import logging
import math
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import SiqaError
from ..io import IMAGE_SUFFIXES, open_regular, pair_key, read_bytes, sha256_file

log = logging.getLogger(__name__)

COLUMNS = ["pair_id", "split", "name", "ref_path", "dist_path", "ref_sha256", "dist_sha256", "label"]
SPLITS = ("train", "val", "test")
SEIQA_DIRS = {"train": "Train", "val": "Val", "test": "Test"}
LABEL_RANGE = (0.0, 5.0)


@dataclass
class PairTable:
    """All pairs of a dataset, one row each; `df` has exactly `COLUMNS`."""

    df: pd.DataFrame
    source: str = ""

    def __post_init__(self):
        missing = [c for c in COLUMNS if c not in self.df.columns]
        if missing:
            raise ValueError(f"PairTable lacks columns {missing}")
        self.df = self.df[COLUMNS].reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.df)

    def select_splits(self, splits) -> "PairTable":
        if not splits:
            return self
        return PairTable(self.df[self.df.split.isin(list(splits))], self.source)

    @classmethod
    def from_paths(cls, rows, split: str = "test", labels=None, source: str = "") -> "PairTable":
        """Build from `[(ref_path, dist_path), ...]`; names are the degraded file names."""
        rows = [(str(Path(r).absolute()), str(Path(d).absolute())) for r, d in rows]
        labels = [math.nan] * len(rows) if labels is None else [float(x) for x in labels]
        hashes = _hash_all([p for pair in rows for p in pair])
        records = [
            {
                "split": split, "name": Path(d).name, "ref_path": r, "dist_path": d,
                "ref_sha256": hashes[r], "dist_sha256": hashes[d], "label": y,
            }
            for (r, d), y in zip(rows, labels)
        ]
        return cls(_with_keys(pd.DataFrame(records, columns=COLUMNS[1:])), source)


def load_pairs(path: str | Path, splits=None, root: str | Path | None = None,
               allow_outside_root: bool = False) -> PairTable:
    """Load a SeIQA-layout folder or a pairs table, keeping only `splits` (default: all). Image paths are
    absolute, so a store records where its images are whatever folder `siqa features` ran in. Every image
    must lie inside the dataset root (the SeIQA folder, or `root` of a table) once `..`, absolute names and
    symlinks are resolved, unless `allow_outside_root`."""
    path = Path(path).absolute()
    if splits:
        bad = set(splits) - set(SPLITS)
        if bad:
            raise SiqaError(f"--splits: unknown split(s) {sorted(bad)}; use {', '.join(SPLITS)}")
    if not path.exists():
        raise SiqaError(f"{path}: no such file or folder")
    if path.is_dir():
        table = _load_seiqa(path, splits)
        base = path
    else:
        base = Path(root).absolute() if root else path.parent
        table = _load_table(path, base)
    table = table.select_splits(splits)
    if not allow_outside_root:
        _confine(path, table, base)
    if len(table) == 0:
        raise SiqaError(f"{path}: no pairs found" + (f" for splits {','.join(splits)}" if splits else ""))
    return table


def _confine(source: Path, table: PairTable, root: Path) -> None:
    inside = root.resolve()
    for row in table.df.itertuples():
        for image in (row.ref_path, row.dist_path):
            real = Path(image).resolve()
            if real != inside and inside not in real.parents:
                raise SiqaError(f"{source}: pair {row.name!r}: image {image} is outside the dataset root {root}"
                                + (f" (it resolves to {real})" if str(real) != image else "")
                                + "; pass --allow-outside-root if that is intended")


# --- SeIQA layout -------------------------------------------------------------------------------------

def _find_child(folder: Path, name: str) -> Path | None:
    """Case-insensitive child lookup (SeIQA archives differ in capitalisation across platforms)."""
    if not folder.is_dir():
        return None
    hits = [p for p in folder.iterdir() if p.name.casefold() == name.casefold()]
    return hits[0] if hits else None


def _image_names(folder: Path) -> dict[str, Path]:
    """Images of a Ref/ or Dist/ folder by case-folded stem: a reference and its degraded image pair up
    by name whatever their extensions or capitalisation (`0001.png` with `0001.JPG`)."""
    stems: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if not p.is_file():  # a FIFO, a device, a folder or a dangling link named as an image: refused, not skipped
            open_regular(p).close()
        stem = p.stem.casefold()
        if stem in stems:
            raise SiqaError(f"{p}: duplicate image name (also {stems[stem].name})")
        stems[stem] = p
    return stems


def folder_images(folder) -> list[str]:
    """The image files of `folder` (not its subfolders) by file name: what one reference is scored against."""
    return [str(p) for p in sorted(_image_names(Path(folder)).values(), key=lambda p: p.name)]


def folder_pairs(ref_dir, dist_dir) -> list[tuple[str, str]]:
    """(reference, degraded) paths of two folders, paired by file name (stem, any case or extension),
    in the degraded files' order; an image without its partner is a one-line error naming it."""
    ref_dir, dist_dir = Path(ref_dir), Path(dist_dir)
    refs, dists = _image_names(ref_dir), _image_names(dist_dir)
    for stem in sorted(set(dists) - set(refs)):
        raise SiqaError(f"{dists[stem]}: degraded image has no reference {ref_dir / dists[stem].name}")
    for stem in sorted(set(refs) - set(dists)):
        raise SiqaError(f"{refs[stem]}: reference has no degraded image {dist_dir / refs[stem].name}")
    return [(str(refs[k]), str(dists[k])) for k in sorted(dists, key=lambda k: dists[k].name)]


def _load_seiqa(root: Path, splits) -> PairTable:
    split_dirs = {s: _find_child(root, d) for s, d in SEIQA_DIRS.items()}
    if not any(split_dirs.values()):
        raise SiqaError(f"{root}: not a SeIQA folder (no Train/, Val/ or Test/) and not a pairs table")
    frames = []
    for split, folder in split_dirs.items():
        if folder is None or (splits and split not in splits):
            continue
        ref_dir, dist_dir = _find_child(folder, "Ref"), _find_child(folder, "Dist")
        if ref_dir is None or dist_dir is None:
            raise SiqaError(f"{folder}: needs both Ref/ and Dist/ folders")
        pairs = folder_pairs(ref_dir, dist_dir)
        names = [Path(d).name for _, d in pairs]  # a pair is named by its degraded file
        labels = _seiqa_labels(folder, split, names)
        frames.append(pd.DataFrame({
            "split": split, "name": names,
            "ref_path": [r for r, _ in pairs], "dist_path": [d for _, d in pairs],
            "label": [labels.get(n, math.nan) for n in names],
        }))
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS[1:])
    hashes = _hash_all(list(df.ref_path) + list(df.dist_path))
    df["ref_sha256"] = df.ref_path.map(hashes)
    df["dist_sha256"] = df.dist_path.map(hashes)
    return PairTable(_with_keys(df), str(root))


def _seiqa_labels(folder: Path, split: str, names: list[str]) -> dict[str, float]:
    xlsx = _find_child(folder, f"{SEIQA_DIRS[split]}_scores.xlsx")
    if xlsx is None:
        if split == "train":
            raise SiqaError(f"{folder}: missing {SEIQA_DIRS[split]}_scores.xlsx (train images need labels)")
        return {}
    labels = read_scores_xlsx(xlsx, integer=(split == "train"))
    # A score file names an image with or without its extension, in any case (stems are unique per folder).
    lookup = {Path(n).stem.casefold(): n for n in names} | {n.casefold(): n for n in names}
    out = {}
    for label_name, y in labels.items():
        key = label_name.casefold()
        if key not in lookup:
            raise SiqaError(f"{xlsx}: label for {label_name!r} but no such image in {folder}/Dist")
        if lookup[key] in out:
            raise SiqaError(f"{xlsx}: image {lookup[key]} has two labels")
        out[lookup[key]] = y
    if split == "train":
        unlabelled = [n for n in names if n not in out]
        if unlabelled:
            raise SiqaError(f"{xlsx}: {len(unlabelled)} train image(s) without a label, e.g. {unlabelled[0]}")
    return out


def read_scores_xlsx(path: Path, integer: bool) -> dict[str, float]:
    """Read `name, score` rows after a header row; validate names and scores."""
    if path.stat().st_size == 0:
        raise SiqaError(f"{path}: unreadable xlsx: empty file (0 bytes)")
    try:
        # Cells verbatim (an image may be called `None` or `NA`); only blank cells are missing.
        raw = pd.read_excel(path, header=None, dtype=object, engine="openpyxl", keep_default_na=False)
    except Exception as exc:
        raise SiqaError(f"{path}: unreadable xlsx ({type(exc).__name__}: {str(exc).strip().splitlines()[0]})") from None
    raw = raw.replace(r"^\s*$", np.nan, regex=True).dropna(how="all").dropna(axis=1, how="all")
    if raw.shape[1] != 2 or len(raw) < 2:
        raise SiqaError(f"{path}: expected a header row then two columns `name, score`, got {raw.shape[1]} column(s), {len(raw)} row(s)")
    sheet = _first_sheet_alone(path)
    score_column = int(raw.columns[1]) + 1
    out: dict[str, float] = {}
    for index, name, score in raw.iloc[1:].itertuples(index=True):
        i = int(index) + 1  # the spreadsheet's row number, blank rows included
        if name is None or (isinstance(name, float) and math.isnan(name)) or not str(name).strip():
            raise SiqaError(f"{path}: row {i}: empty image name")
        name = str(name).strip()
        if isinstance(score, (bool, np.bool_)):
            raise SiqaError(f"{path}: row {i} ({name}): score is the logical value {str(score).upper()}, not a number")
        try:
            y = float(score)
        except (TypeError, ValueError):
            raise SiqaError(f"{path}: row {i} ({name}): score {score!r} is not a number") from None
        if math.isnan(y):
            raise SiqaError(f"{path}: row {i} ({name}): no score{_why_empty(sheet, i, score_column)}")
        if not math.isfinite(y) or not LABEL_RANGE[0] <= y <= LABEL_RANGE[1]:
            raise SiqaError(f"{path}: row {i} ({name}): score {score!r} outside 0..5")
        if integer and y != round(y):
            raise SiqaError(f"{path}: row {i} ({name}): train score {score!r} is not an integer 0..5")
        if name in out:
            raise SiqaError(f"{path}: row {i}: duplicate name {name!r}")
        out[name] = y
    return out


def _first_sheet_alone(path: Path):
    """The first worksheet, with formulas (openpyxl); `SiqaError` when another sheet holds data too, since
    only the first is read."""
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, data_only=False)
    except Exception as exc:
        raise SiqaError(f"{path}: unreadable xlsx ({type(exc).__name__}: {str(exc).strip().splitlines()[0]})") from None
    others = [ws.title for ws in book.worksheets[1:]
              if any(c.value not in (None, "") for row in ws.iter_rows() for c in row)]
    if others:
        raise SiqaError(f"{path}: scores are read from the first sheet {book.worksheets[0].title!r} only, but "
                        f"sheet(s) {', '.join(map(repr, others))} hold data too; keep the scores on one sheet")
    return book.worksheets[0]


def _why_empty(sheet, row: int, column: int) -> str:
    """What an empty score cell really is: part of a merged range, or a formula whose value was never saved."""
    cell = sheet.cell(row=row, column=column)
    for merged in sheet.merged_cells.ranges:
        if cell.coordinate in merged:
            return (f" (cell {cell.coordinate} is inside the merged cells {merged.coord}: only {merged.start_cell.coordinate}"
                    f" holds a value; unmerge and fill every row)")
    if isinstance(cell.value, str) and cell.value.startswith("="):
        return (f" (cell {cell.coordinate} is the formula {cell.value} with no saved value: open and save the file "
                f"in Excel or LibreOffice so the value is stored, or type the number)")
    return ""


# --- pairs table ------------------------------------------------------------------------------------

MISSING_LABELS = {"", "nan", "na", "n/a", "null", "none"}
#: words that, in a label column's name, say the label grows with distortion (lower = better quality)
LOWER_BETTER_WORDS = {"dmos", "distortion", "degradation", "difference", "diff", "error", "loss", "mse", "rmse",
                      "artifacts", "artefacts", "impairment"}


def says_lower_better(column: str) -> bool:
    """Whether a label column named `column` (`DMOS`, `distortion_level`, ...) reads as lower = better."""
    return any(word in LOWER_BETTER_WORDS for word in re.split(r"[^a-z0-9]+", str(column).lower()))



def _load_table(path: Path, root: Path) -> PairTable:
    """Names are taken verbatim (a CSV is read as text, so `001.png` or `NA` stay what they say); column
    names are matched case-insensitively; an empty label cell (or nan/NA/null) means unlabelled."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise SiqaError(f"{path}: pairs table must be .csv or .parquet")
    content = io.BytesIO(read_bytes(path))  # a FIFO or a device is refused there, not read forever
    if not content.getbuffer().nbytes:
        raise SiqaError(f"{path}: unreadable table: empty file (0 bytes)")
    try:
        if suffix == ".csv":
            with warnings.catch_warnings():
                # A row longer than the header would silently become an index or lose cells: refuse it.
                warnings.simplefilter("error", pd.errors.ParserWarning)
                df = pd.read_csv(content, dtype=str, keep_default_na=False, index_col=False, encoding="utf-8-sig")
        else:
            df = pd.read_parquet(content)
    except Exception as exc:
        raise SiqaError(f"{path}: unreadable table ({type(exc).__name__}: {str(exc).strip().splitlines()[0]})") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    for col in ("ref_name", "dist_name"):
        if col not in df.columns:
            raise SiqaError(f"{path}: missing column {col!r} (have {', '.join(df.columns) or 'no columns'})")
    if df.columns.duplicated().any():
        raise SiqaError(f"{path}: column {df.columns[df.columns.duplicated()][0]!r} appears twice")
    if df.empty:
        raise SiqaError(f"{path}: table has no rows")
    names = {col: _name_column(path, df[col], col) for col in ("ref_name", "dist_name")}
    label_col = next((c for c in ("mos", "dmos", "score", "label") if c in df.columns), None)
    labels = _label_column(path, df[label_col], label_col) if label_col else np.full(len(df), math.nan)
    if label_col and says_lower_better(label_col):
        log.warning("%s: labels from column %r, where lower reads as better quality: pass --lower-better to "
                    "`siqa oof` if so", path, label_col)
    split = df["split"].astype(str).str.lower().str.strip() if "split" in df.columns else pd.Series("train", index=df.index)
    bad_split = ~split.isin(SPLITS)
    if bad_split.any():
        i = int(np.flatnonzero(bad_split.to_numpy())[0])
        raise SiqaError(f"{path}: row {i + 2}: unknown split {df['split'].iloc[i]!r}; use {', '.join(SPLITS)}")
    dup = pd.DataFrame({"s": split.to_numpy(), "d": names["dist_name"]}).duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise SiqaError(f"{path}: row {i + 2}: duplicate dist_name {names['dist_name'][i]!r} in split {split.iloc[i]}")
    ref_paths = [str(root / n) for n in names["ref_name"]]
    dist_paths = [str(root / n) for n in names["dist_name"]]
    for p in dict.fromkeys(ref_paths + dist_paths):
        if not Path(p).exists() and not Path(p).is_symlink():  # what exists but is no regular file: refused when hashed
            raise SiqaError(f"{path}: image {p} listed but not found")
    hashes = _hash_all(ref_paths + dist_paths)
    out = pd.DataFrame({
        "split": split.to_numpy(), "name": names["dist_name"],
        "ref_path": ref_paths, "dist_path": dist_paths,
        "ref_sha256": [hashes[p] for p in ref_paths], "dist_sha256": [hashes[p] for p in dist_paths],
        "label": labels,
    })
    return PairTable(_with_keys(out), str(path))


def _name_column(path: Path, column: pd.Series, col: str) -> list[str]:
    out = []
    for i, v in enumerate(column):
        if v is None or (isinstance(v, float) and math.isnan(v)) or not str(v).strip():
            raise SiqaError(f"{path}: row {i + 2}: empty {col}")
        out.append(str(v))
    return out


def _label_column(path: Path, column: pd.Series, col: str) -> np.ndarray:
    out = np.full(len(column), math.nan)
    for i, v in enumerate(column):
        if v is None or (isinstance(v, str) and v.strip().lower() in MISSING_LABELS):
            continue
        try:
            y = float(v)
        except (TypeError, ValueError):
            raise SiqaError(f"{path}: row {i + 2}: {col} {v!r} is not a finite number") from None
        if math.isnan(y) and not isinstance(v, str):
            continue  # a missing value in a typed (Parquet) column
        if not math.isfinite(y):
            raise SiqaError(f"{path}: row {i + 2}: {col} {v!r} is not a finite number")
        out[i] = y
    return out


# --- helpers ----------------------------------------------------------------------------------------

def _hash_all(paths: list[str]) -> dict[str, str]:
    unique = list(dict.fromkeys(paths))
    with ThreadPoolExecutor(max_workers=4) as pool:  # hashlib releases the GIL on large buffers
        digests = list(pool.map(_safe_sha256, unique))
    return dict(zip(unique, digests))


def _safe_sha256(path: str) -> str:
    try:
        return sha256_file(path)
    except OSError as exc:
        raise SiqaError(f"{path}: cannot read ({exc.strerror})") from None


def _with_keys(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["pair_id"] = [pair_key(r, d) for r, d in zip(df.ref_sha256, df.dist_sha256)]
    df["label"] = df["label"].astype(float)
    return df
