"""`TabularData`: what the tabular stage learns from, read from a feature table or from the store.

One row per (reference, degraded) pair:
- `ids`     unique row key (store: pair_id; table: `pair_id`/`id` column, else the row number),
- `X`       scalar features, a float64 DataFrame (inf is turned into NaN; models impute NaN themselves),
- `dense`   dense blocks {name: (n, d) float32} (embedding |d-r|, d*r, hidden states, ...),
- `y`       label as given (NaN = unlabelled: such rows are only predicted, never fit),
- `groups`  reference key used for grouped folds (store: ref_sha256; table: the `--group` column,
            compared case-insensitively because TID2013 spells one reference `I01.bmp` and `i01.bmp`),
- `split`   train/val/test (table: `split` column if present, else train for labelled, test otherwise),
- `names`   picture name written to the submission (store: `name`; table: the first of `name`,
            `picture_name`, `dist_name`, `dist_img`, `img_name` present, else the id),
- `higher_better`  False for labels such as DMOS where lower means better quality.
- `pairs`   the pair's images, one row per row (`ref_path`, `dist_path`, `ref_sha256`, `dist_sha256`), read
            from the store's `pairs` columns of the `features` view; None for a feature table. Pool
            members that learn from the images themselves (`needs_pairs`) get it.

Orientation: everything downstream fits `target` = y if higher_better else -y, so every model, blend and
metric is "higher = better" and correlations are reported positive; the 0..5 score keeps that meaning.

Default feature rule for tables: every numeric (int/float, not bool) column except the label, the group,
id columns and columns that describe how a pair was made or how raters agreed, which a real user never
has: `dst_type`, `dst_idx`, `dst_lev`, `var`, any `*_std`, and label-like columns (`mos`, `dmos`,
`score`, `score_cls`, `label`). Text columns (file names) are skipped, but a column whose values are
mostly numbers with a few unparsable cells raises `SiqaError` naming it and the first bad cell, rather
than silently losing the feature. Pass `features=[...]` to choose explicitly; a requested column that
is missing or not numeric raises `SiqaError` naming it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from featurestore.errors import SiqaError
from featurestore.io import sha256_file

NON_FEATURE_COLUMNS = frozenset({"dst_type", "dst_idx", "dst_lev", "var", "split", "pair_id", "id",
                                 "mos", "dmos", "score", "score_cls", "label"})
PAIR_IMAGE_COLUMNS = ("ref_path", "dist_path", "ref_sha256", "dist_sha256")
NAME_COLUMNS = ("name", "picture_name", "dist_name", "dist_img", "img_name")


@dataclass
class TabularData:
    ids: np.ndarray
    X: pd.DataFrame
    y: np.ndarray
    groups: np.ndarray
    split: np.ndarray
    names: np.ndarray
    dense: dict[str, np.ndarray] = field(default_factory=dict)
    higher_better: bool = True
    source: str = ""
    #: how to read this data again (`from_origin`), e.g. for a submission from a run folder
    origin: dict = field(default_factory=dict)
    pairs: pd.DataFrame | None = None
    #: store only: extractor -> which rows it has no features for (never computed, or failed), a boolean mask
    absent: dict = field(default_factory=dict)
    #: table only: column -> why the default feature rule left it out (named, never dropped silently)
    skipped: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.ids)
        for what, value in (("X", self.X), ("y", self.y), ("groups", self.groups), ("split", self.split),
                            ("names", self.names), *self.dense.items(),
                            *([("pairs", self.pairs)] if self.pairs is not None else [])):
            if len(value) != n:
                raise ValueError(f"TabularData: {what} has {len(value)} rows, ids {n}")

    # --- views ---------------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        return len(self.ids)

    @property
    def target(self) -> np.ndarray:
        """Label oriented so that higher = better quality."""
        return self.y if self.higher_better else -self.y

    @property
    def labelled(self) -> np.ndarray:
        return np.isfinite(self.y)

    @property
    def missing(self) -> dict[str, int]:
        """Extractor -> number of labelled rows it has no features for."""
        return self.missing_among(self.labelled)

    def missing_among(self, rows: np.ndarray) -> dict[str, int]:
        """Extractor -> number of `rows` (a boolean mask) it has no features for; extractors missing none left out."""
        return {name: int((mask & rows).sum()) for name, mask in sorted(self.absent.items()) if (mask & rows).any()}

    def subset(self, mask: np.ndarray) -> "TabularData":
        index = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask)
        return replace(self, ids=self.ids[index], X=self.X.iloc[index].reset_index(drop=True),
                       y=self.y[index], groups=self.groups[index], split=self.split[index],
                       names=self.names[index], dense={k: v[index] for k, v in self.dense.items()},
                       absent={k: v[index] for k, v in self.absent.items()},
                       pairs=None if self.pairs is None else self.pairs.iloc[index].reset_index(drop=True))

    def describe(self) -> dict:
        labelled = self.labelled
        return {"source": self.source, "n_rows": int(self.n_rows), "n_labelled": int(labelled.sum()),
                "n_groups": int(np.unique(self.groups[labelled]).size), "n_scalar": int(self.X.shape[1]),
                "dense": {k: int(v.shape[1]) for k, v in self.dense.items()},
                "higher_better": bool(self.higher_better), "origin": self.origin}

    # --- readers -------------------------------------------------------------------------------
    @classmethod
    def from_table(cls, path, label: str, group: str, lower_better: bool = False,
                   features: list[str] | None = None) -> "TabularData":
        """Read a CSV or Parquet table of precomputed per-pair features (see the module docstring)."""
        path = Path(path)
        frame = _read_frame(path)
        for role, column in (("label", label), ("group", group)):
            if column not in frame.columns:
                raise SiqaError(f"{path}: no {role} column {column!r} (columns: {', '.join(map(str, frame.columns))})")
        y = _numeric_column(frame, label, path, "label")
        if np.isinf(y).any():
            raise SiqaError(f"{path}: label column {label!r} holds infinite values")
        if frame[group].isna().any():
            raise SiqaError(f"{path}: group column {group!r} has {int(frame[group].isna().sum())} empty values")
        groups = frame[group].astype(str).str.strip().str.lower().to_numpy(dtype=object)

        skipped = {}
        if features is None:
            candidates = [c for c in frame.columns if c not in (label, group) and not _is_non_feature(str(c))]
            for c in candidates:
                if _mostly_numeric_text(frame[c]):  # a numeric column spoilt by a few bad cells
                    _numeric_column(frame, c, path, "feature")
            features = [c for c in candidates
                        if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]
            if not features:
                raise SiqaError(f"{path}: no numeric feature columns besides {label!r} and {group!r}")
            skipped = {str(c): _why_not_a_feature(frame[c]) for c in frame.columns
                       if c not in (label, group) and c not in features}
        else:
            missing = [c for c in features if c not in frame.columns]
            if missing:
                raise SiqaError(f"{path}: no feature column(s) {', '.join(map(repr, missing))}")
            for c in features:
                if c in (label, group):
                    raise SiqaError(f"{path}: {c!r} is the label or group column and cannot be a feature")
        X = pd.DataFrame({str(c): _numeric_column(frame, c, path, "feature") for c in features})
        X = X.replace([np.inf, -np.inf], np.nan)

        ids = (frame[_first(frame, ("pair_id", "id"))].astype(str).to_numpy(dtype=object)
               if _first(frame, ("pair_id", "id")) else np.array([f"row{i}" for i in range(len(frame))], dtype=object))
        if pd.Series(ids).duplicated().any():
            raise SiqaError(f"{path}: id column has duplicate values")
        name_col = _first(frame, NAME_COLUMNS)
        names = frame[name_col].astype(str).to_numpy(dtype=object) if name_col else ids.copy()
        if "split" in frame.columns:
            split = frame["split"].astype(str).str.lower().to_numpy(dtype=object)
        else:
            split = np.where(np.isfinite(y), "train", "test").astype(object)
        origin = {"kind": "table", "path": str(Path(path).absolute()), "sha256": sha256_file(Path(path)),
                  "label": label, "group": group,
                  "lower_better": bool(lower_better), "features": [str(c) for c in features]}
        return cls(ids=ids, X=X, y=y, groups=groups, split=split, names=names,
                   higher_better=not lower_better, source=str(path), origin=origin, skipped=skipped)

    @classmethod
    def from_origin(cls, origin: dict) -> "TabularData":
        """Read again what `origin` (a `TabularData.origin`) describes: the same file or store, by absolute
        path, checked against the content it had when it was recorded."""
        if origin.get("kind") == "table":
            path = Path(origin["path"])
            if origin.get("sha256") and path.is_file() and sha256_file(path) != origin["sha256"]:
                raise SiqaError(f"{path}: changed since the run was fit on it (sha256 differs); "
                                f"refit with `siqa oof`")
            return cls.from_table(path, origin["label"], origin["group"], origin["lower_better"],
                                  origin["features"])
        if origin.get("kind") == "store":
            root = Path(origin["root"])
            if not (root / "pairs.parquet").is_file():
                raise SiqaError(f"{root}: the feature store this run was fit on is not there any more")
            data = cls.from_store(root, origin.get("features"), lower_better=bool(origin.get("lower_better")),
                                  folders=origin.get("folders"))
            if origin.get("labelled_sha256") and data.labelled_digest() != origin["labelled_sha256"]:
                raise SiqaError(f"{root}: its labelled pairs are not the ones this run was fit on (pairs or labels "
                                f"changed since); refit with `siqa oof`")
            return data
        raise SiqaError(f"run: cannot tell where its data came from ({origin!r})")

    def labelled_digest(self) -> str:
        """sha256 of the labelled rows' ids and labels: the identity of what a run learnt from."""
        labelled = self.labelled
        rows = sorted(f"{i}:{y!r}" for i, y in zip(self.ids[labelled], self.y[labelled].tolist()))
        return hashlib.sha256("\n".join(rows).encode()).hexdigest()

    @classmethod
    def from_store(cls, root, features: list[str] | None = None, lower_better: bool = False,
                   folders: dict[str, str] | None = None) -> "TabularData":
        """Read the wide `features` view of a feature store through DuckDB.

        Every column of `features` that is not a `pairs` column is a feature: DOUBLE -> scalar,
        FLOAT[d] array -> dense block; `features` keeps only the named ones. The group is `ref_sha256`;
        `lower_better` for labels that grow with distortion. `folders` pins the feature folder of each
        extractor (what a run was fit on) instead of the store's current views. The origin records the
        absolute store path, the folders read and the labelled rows' digest; `missing` counts, per
        extractor, the labelled pairs it holds no features for (`absent`: which rows, labelled or not).
        """
        from featurestore import sql  # the store stack is only needed here, not for feature tables
        from featurestore.store import Catalog

        root = Path(root).absolute()
        used = folders if folders is not None else {n: v["folder"] for n, v in Catalog(root).views().items()}
        con = sql.connect(root, folders=folders)
        try:
            pair_columns = {row[0] for row in con.execute("DESCRIBE pairs").fetchall()}
            table = con.sql("SELECT * FROM features ORDER BY pair_id").to_arrow_table()
            views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
            own_columns = {name: [f"{name}_{r[0]}" for r in con.execute(
                               f"DESCRIBE {sql.quote_identifier(name)}").fetchall() if r[0] != "pair_id"]
                           for name in sorted(used) if name in views}
        finally:
            con.close()
        if table.num_rows == 0:
            raise SiqaError(f"{root}: the store has no pairs; run `siqa features` first")
        available = [name for name in table.column_names if name not in pair_columns]
        if features is not None:
            missing = [f for f in features if f not in available]
            if missing:
                raise SiqaError(f"{root}: no feature column(s) {', '.join(map(repr, missing))} in the store")
        absent = {}
        for name, columns in own_columns.items():
            own = [c for c in columns if features is None or c in features]
            if own:
                nulls = np.logical_and.reduce([table.column(c).is_null().to_numpy(zero_copy_only=False) for c in own])
                if nulls.any():
                    absent[name] = nulls
        scalars, dense = {}, {}
        for name in available:
            if features is not None and name not in features:
                continue
            column = table.column(name).combine_chunks()
            if _is_list(column.type):
                if column.null_count:
                    raise SiqaError(f"{root}: dense feature {name!r} is missing for {column.null_count} pair(s); "
                                    f"run `siqa features` on the same data")
                width = column.type.list_size
                dense[name] = np.asarray(column.flatten().to_numpy(zero_copy_only=False),
                                         dtype=np.float32).reshape(len(column), width)
                if not np.isfinite(dense[name]).all():
                    raise SiqaError(f"{root}: dense feature {name!r} holds NaN or infinite values")
            else:
                scalars[name] = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
        if not scalars and not dense:
            raise SiqaError(f"{root}: the store has no feature columns; run `siqa features` first")
        X = pd.DataFrame(scalars).replace([np.inf, -np.inf], np.nan)

        def text(column: str) -> np.ndarray:
            return np.asarray(table.column(column).to_pylist(), dtype=object)

        y = np.array([np.nan if v is None else float(v) for v in table.column("label").to_pylist()])
        pairs = pd.DataFrame({c: text(c) for c in PAIR_IMAGE_COLUMNS})
        return cls(ids=text("pair_id"), X=X, y=y, groups=text("ref_sha256"), pairs=pairs,
                   split=np.array([str(s).lower() for s in text("split")], dtype=object),
                   names=text("name"), dense=dense, higher_better=not lower_better, source=str(root),
                   origin={"kind": "store", "root": str(root), "features": features,
                           "lower_better": bool(lower_better), "folders": dict(sorted(used.items()))},
                   absent=absent)


def read_table(path) -> pd.DataFrame:
    """A CSV or Parquet table, with one-line errors for a missing, empty or unreadable file."""
    return _read_frame(Path(path))


def feature_matrix(frame: pd.DataFrame, columns: list[str], source) -> np.ndarray:
    """`columns` of a user's `frame` (the features a run was fit on) as float64, inf as NaN; a missing or
    non-numeric column is refused by name."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise SiqaError(f"{source}: missing {len(missing)} feature column(s) the run was fit on: {shown}")
    if not columns:
        return np.empty((len(frame), 0))
    X = np.column_stack([_numeric_column(frame, c, source, "feature") for c in columns])
    return np.where(np.isinf(X), np.nan, X)


def _read_frame(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise SiqaError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise SiqaError(f"{path}: empty file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
        raise SiqaError(f"{path}: cannot read as {'Parquet' if path.suffix.lower() in ('.parquet', '.pq') else 'CSV'}"
                        f" ({str(err).splitlines()[0]})") from None
    if frame.empty:
        raise SiqaError(f"{path}: the table has no rows")
    return frame


def _numeric_column(frame: pd.DataFrame, column: str, path: Path, role: str) -> np.ndarray:
    values = frame[column]
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        bad = pd.to_numeric(values, errors="coerce").isna() & values.notna()
        example = f" (e.g. {values[bad].iloc[0]!r} in row {int(np.flatnonzero(bad.to_numpy())[0]) + 1})" if bad.any() else ""
        raise SiqaError(f"{path}: {role} column {column!r} is not numeric{example}")
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _mostly_numeric_text(values: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return False
    present = values.dropna()
    return len(present) > 0 and pd.to_numeric(present, errors="coerce").notna().mean() >= 0.5


def _why_not_a_feature(values: pd.Series) -> str:
    name = str(values.name).lower()
    if name in ("split", "pair_id", "id"):
        return "an id or the split, not a measurement"
    if name in NON_FEATURE_COLUMNS:
        return "a label or how the pair was made: a new pair does not have it"
    if name.endswith("_std"):
        return "how the raters agreed: a new pair does not have it"
    if pd.api.types.is_bool_dtype(values):
        return "true/false, not a measurement"
    return "not numeric (text)"


def _is_non_feature(column: str) -> bool:
    return column.lower() in NON_FEATURE_COLUMNS or column.lower().endswith("_std")


def _first(frame: pd.DataFrame, candidates) -> str | None:
    return next((c for c in candidates if c in frame.columns), None)


def _is_list(arrow_type) -> bool:
    import pyarrow as pa

    return pa.types.is_fixed_size_list(arrow_type)
