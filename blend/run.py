"""Run folders: `run_oof` evaluates and fits a tabular run; `load_run` / `predict` use one.

Public entry points (called by cli.py):
- `run_oof(data, settings, run_dir, progress=True) -> dict`: nested CV + refit on all labelled rows;
  writes the run folder and returns the summary (also saved as run.json). `settings` come from
  `blend.settings.load_settings` (a parsed config dict is validated by `settings_from` first).
- `load_run(run_dir) -> Run`: summary, config, leaderboard and the fitted pipeline.
- `predict(run_dir, data) -> np.ndarray`: 0..5 quality scores (higher = better) for every row of `data`.
- `run_store(run_dir, override=None) -> Path`: the feature store a run reads (predict, submit, report):
  `override` (a `--store`) if given, else the absolute store path the run recorded.
- `run_target(run_dir)`, `point_latest(run_dir, latest)`: where `siqa oof` writes a run, and the `latest`
  link it keeps (`runs/latest`: always a link siqa manages, to the newest run).

Run folder layout:
- `config.json`: {"input": the run's validated settings as TOML tables (`Settings.as_tables`), "tabular": the
  resolved [tabular] settings}. For a
  store run, `input.extractors` holds only the extractors whose features the run uses, with the settings
  the store computed them with (its views.json): what `siqa predict` must compute for a new pair.
- `oof.parquet`: one row per (repeat, labelled row), ordered by repeat then input order. Columns:
  `id`, `group`, `label` (as given), `target` (= label, or -label when lower is better: higher = better),
  `repeat`, `fold` (outer fold of the row in that repeat), one float64 column per pool member (its
  outer out-of-fold prediction, target scale), `blend` (nested blend, target scale),
  `blend_calibrated` (nested blend after the calibration to 0..5: what a submission would hold) and
  `prediction` (`blend_calibrated` in the label's own units and orientation: what `siqa predict` prints).
  The same data, config and seed give byte-identical files.
- `leaderboard.csv`: model, srocc, plcc, krcc, rmse, final, final_std, final_fold_mean, final_low,
  final_high, fit_seconds — one row per member plus `blend` and `blend_calibrated`, sorted by final.
  Metrics are computed per repeat over all rows (pooled out-of-fold) and averaged; final_std is their
  standard deviation across repeats (empty with one repeat); final_fold_mean is the mean Final of the
  single test folds (each scored by one model, as a held-out test set is: fold-to-fold shifts of fitted
  maps, which pooled Final pays for, do not count); final_low/final_high is the 95% interval of pooled
  Final over tables resampled by reference group (bootstrap, same draws for every row); correlations
  are against `target`, so positive; rmse is in the label's own units (the calibrated blend mapped back from 0..5
  by the affine label scale);
  fit_seconds is the total fitting time of that member over the nested run and the final refit (for
  the blend rows: blender and calibrator fitting).
- `run.json`: summary — headline metrics (of `blend_calibrated`; also as the dict `headline` with
  n_rows and n_groups: with `versus`, what `siqa oof --json` prints), data description (`source`, with the `origin`
  to read the data again), settings, the final blend (method, weights, inner-CV scores of each method,
  calibration), per-fold nested blends, dropped columns, `skipped_columns` (every column not used as a feature, but
  the label and the group, with why: the table rule's non-features, text, constant), `feature_ranges` (column -> [min, max] over the labelled
  rows: what `siqa predict` flags a new row against), `image_sizes` (store runs: the fewest and most pixels
  of the labelled pairs' images, and as text), `member_notes` (member -> what its final refit
  chose, e.g. "picked formula_ssim" for best_single_feature), `versus` (the headline's paired gaps to the
  hindsight-best member, to the best member chosen on other reference groups, and to the raw feature:
  `tabular.compare`), `leaderboard_text` (printable), time; for a
  store run also `store` (its absolute path), `extractors` (name -> store folder and level, used ones
  only) and `warnings` (enabled extractors that gave the run no feature).
- `models/inference.json` + `models/inference.npz`: the fitted pipeline as plain data (`blend.compiled`: numpy
  programs of the dense-block Ridges, every member, the blend and the calibrator; for a member that reads the
  pair images, its parameters and fitted numbers, its weights under `fits/`): the run's only model format, so
  loading a run executes no code from it.
- `fits/`: the `work_dir` of pool members that keep files (fine-tuned adapters, one folder per fit, keyed by
  what the fit learnt from). It survives reruns: a killed or repeated `siqa oof` reuses every fit that
  finished, and `siqa predict` loads the adapters of the final refit from here.
- `siqa-run.json`: marks the folder as a siqa run, with its id and the hash of every file (`blend.runfolder`):
  `load_run` uses no byte it has not checked against it. The folder is written whole or not at all, one
  writer at a time; a non-empty folder that is not a run is refused.

Column handling: scalar columns that are constant or all-NaN over the labelled rows carry no signal and
are dropped (listed in run.json as `dropped_columns`); other NaN values are imputed inside the models
that need it (trees and boosting take NaN natively).
"""
from __future__ import annotations

import io
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from featurestore.errors import SiqaError
from tabular import compare, metrics
from tabular.data import TabularData
from tabular.models.raw_feature import RawFeatureModel
from tabular.stack import PoolPlan, StackedPool

from . import compiled
from .calibration import LabelScale
from .checks import feature_ranges, image_sizes
from .nested import NestedCV
from .pipeline import FittedPipeline
from .settings import Settings, StackSettings, settings_from
from .runfolder import FITS, RunFolder, check_target, new_run_id, run_lock, run_store, write_run

log = logging.getLogger(__name__)

HEADLINE = "blend_calibrated"
FIXED_COLUMNS = ("id", "group", "label", "target", "repeat", "fold", "blend", HEADLINE, "prediction")
BOOTSTRAP_DRAWS = 200
#: the largest label magnitude learnt from (any rating scale is far below; 1e300 overflows every statistic)
LABEL_LIMIT = 1e12
#: how far the written pipeline may score from the fitted one (torch members' float32 rounding is ~1e-6)
COMPILED_TOLERANCE = 1e-4
HEADLINE_METRICS = ("final", "final_std", "final_fold_mean", "final_low", "final_high", "srocc", "plcc", "krcc", "rmse")
FITS_DIR = FITS


@dataclass
class Run:
    path: Path
    summary: dict
    config: dict
    leaderboard: pd.DataFrame
    pipeline: compiled.CompiledPipeline

    def oof(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "oof.parquet")


def usable_columns(data: TabularData) -> tuple[list[str], list[str]]:
    """(kept, dropped) scalar columns: dropped = constant or all-NaN over the labelled rows."""
    labelled = data.X[data.labelled]
    kept, dropped = [], []
    for column in data.X.columns:
        values = labelled[column].to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        (kept if finite.size and np.ptp(finite) > 0 else dropped).append(str(column))
    return kept, dropped


def _checked_labelled(data: TabularData, settings: StackSettings) -> tuple[TabularData, int]:
    """The labelled rows to learn from, and how many test rows are labelled pairs too (warned about).

    Rules: the same pair (same two images, so the same id) under several names is one pair: it is kept
    once when its labels agree and refused when they differ; all-equal labels are refused (nothing to
    rank); too few reference groups for the outer folds and the inner CV inside them are refused before
    any fitting."""
    labelled = data.subset(data.labelled)
    if labelled.n_rows == 0:
        return labelled, 0
    largest = float(np.max(np.abs(labelled.y)))
    if largest > LABEL_LIMIT:  # squares and sums of such labels overflow to inf inside every metric and model
        raise SiqaError(f"{data.source}: labels reach {largest:.3g}; siqa learns labels up to {LABEL_LIMIT:.0e} in "
                        f"size: rescale the label column")
    frame = pd.DataFrame({"id": labelled.ids, "y": labelled.y, "name": labelled.names})
    conflicting = frame.groupby("id").y.nunique()
    conflicting = conflicting[conflicting > 1]
    if len(conflicting):
        names = frame[frame.id == conflicting.index[0]]
        shown = ", ".join(f"{n} = {y:g}" for n, y in zip(names.name, names.y))
        raise SiqaError(f"{data.source}: {len(conflicting)} pair(s) appear under several names with different "
                        f"labels (same images: {shown}); fix the labels or drop one name")
    repeated = frame.id.duplicated().to_numpy()
    if repeated.any():
        log.warning("%s: %d labelled pair(s) repeat another under a new name (same images, same label); each "
                    "is learnt once", data.source, int(repeated.sum()))
        labelled = labelled.subset(~repeated)
    if np.ptp(labelled.y) == 0:
        raise SiqaError(f"{data.source}: all {labelled.n_rows} labelled pairs have the label {labelled.y[0]:g}; "
                        f"there is nothing to learn or rank")
    n, K = int(np.unique(labelled.groups).size), settings.folds
    if K >= 3 and n >= K and n - int(np.ceil(2 * n / K)) < 2:
        raise SiqaError(f"{data.source}: {n} reference groups are too few for nested CV with {K} folds (the "
                        f"innermost fits keep at most {n - int(np.ceil(2 * n / K))} group(s), an inner CV needs 2); "
                        f"use fewer [tabular] folds or more reference images")
    test_ids = set(data.ids[np.asarray(data.split == "test") & ~data.labelled])
    overlap = len(test_ids & set(labelled.ids))
    if overlap:
        log.warning("%s: %d test pair(s) are labelled pairs too (same images): their scores are not a test of "
                    "generalisation", data.source, overlap)
    return labelled, overlap


def used_extractors(root, columns: list[str], blocks: list[str]) -> dict[str, dict]:
    """views.json entries (folder, level, config) of the store extractors whose `<name>_<column>` features
    are among `columns` / `blocks`; a column belongs to the longest extractor name it starts with."""
    from featurestore.store import FeatureStore

    views = FeatureStore(root).views()
    by_length = sorted(views, key=len, reverse=True)
    used = set()
    for column in [*columns, *blocks]:
        owner = next((name for name in by_length if column.startswith(f"{name}_")), None)
        if owner is not None:
            used.add(owner)
    return {name: views[name] for name in sorted(used)}


def _store_provenance(data: TabularData, settings: Settings, columns: list[str]) -> tuple[dict, dict]:
    """(config to record, summary entries) of a store run: only the extractors the run uses, and a warning
    for each enabled one that gave it no feature (never computed into this store, or constant/empty)."""
    config = settings.as_tables()
    origin = data.origin or {}
    if origin.get("kind") != "store":
        return {**config, "extractors": {}}, {}
    root = Path(origin["root"])
    used = used_extractors(root, columns, sorted(data.dense))
    idle = [name for name, entry in settings.extractors.items() if entry.enabled and name not in used]
    warnings = [f"{root}: enabled extractor(s) {', '.join(idle)} gave no feature to this run (no rows in the store, "
                f"or only constant/empty columns); the run does not record them"] if idle else []
    recorded = {**config, "extractors": {name: dict(view.get("config") or {}) for name, view in used.items()}}
    return recorded, {"store": str(root.resolve()), "warnings": warnings,
                      "extractors": {name: {"folder": view["folder"], "level": view.get("level")}
                                     for name, view in used.items()}}


def run_origin(run: "Run", store=None) -> dict:
    """The run's data origin, reading its store from `run_store` (so `--store` can point elsewhere)."""
    origin = dict(run.summary["source"].get("origin") or {})
    if origin.get("kind") == "store":
        origin["root"] = str(run_store(run.path, store))
    return origin


#: the link siqa keeps to the newest run, in the folder `RUNS` (the default `--run` is `runs/latest`)
LATEST = "latest"
RUNS = Path("runs")


def run_target(run_dir: Path) -> tuple[Path, Path | None]:
    """Where `siqa oof --run run_dir` writes its run, and the `latest` link it then points at it (None: it
    touches no link). `--run P/latest` (the default `runs/latest`) writes a new folder P/<time>-<random> and
    makes P/latest a link to it; a run written straight into ./runs also moves runs/latest; a run anywhere
    else leaves every link alone (a folder siqa does not manage). A real folder named `latest` is refused:
    it is the user's, or an older siqa's run, and replacing it would lose it."""
    if run_dir.name != LATEST:
        return run_dir, run_dir.parent / LATEST if run_dir.parent.resolve() == RUNS.resolve() else None
    if run_dir.exists() and not run_dir.is_symlink():
        raise SiqaError(f"{run_dir}: a real folder, not the link siqa keeps to the newest run; move it away "
                        f"(e.g. `mv {run_dir} {run_dir.parent / 'old'}`) or give another --run")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return run_dir.parent / f"{stamp}-{os.urandom(2).hex()}", run_dir


def point_latest(run_dir: Path, latest: Path | None) -> Path | None:
    """Make `latest` (beside `run_dir`, from `run_target`) a link to `run_dir`, replaced atomically; returns it,
    or None when there is none to keep or a real folder of that name is in the way (left alone)."""
    if latest is None or latest.exists() and not latest.is_symlink():
        return None
    temporary = latest.with_name(f".{LATEST}-{os.getpid()}")
    if temporary.is_symlink():
        temporary.unlink()
    os.symlink(run_dir.name, temporary, target_is_directory=True)
    os.replace(temporary, latest)
    return latest


def _leaderboard(columns: dict[str, list[np.ndarray]], target: np.ndarray, folds: list[np.ndarray],
                 scale: LabelScale, seconds: dict[str, float],
                 draws: list[tuple[np.ndarray, np.ndarray]]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The leaderboard, and every column's Final on the in-bag rows of the group-bootstrap `draws`."""
    rows, in_bag = [], {}
    for name, per_repeat in columns.items():
        # on the target's scale (the calibrated blend is on 0..5): the labels' units, so rmse is in them; the
        # label scale is increasing and affine, so the correlations are those of the 0..5 scores
        on_target = [scale.inverse(p) if name == HEADLINE else p for p in per_repeat]
        scores = [metrics.all_metrics(p, target) for p in on_target]
        finals = [s["final"] for s in scores]
        row = {"model": name, **{k: float(np.mean([s[k] for s in scores])) for k in ("srocc", "plcc", "krcc", "rmse")}}
        row["final"] = float(np.mean(finals))
        row["final_std"] = float(np.std(finals, ddof=1)) if len(finals) > 1 else float("nan")
        row["final_fold_mean"] = float(np.mean([metrics.mean_fold_final(p, target, f)
                                                for p, f in zip(per_repeat, folds)]))
        in_bag[name] = metrics.finals_on(per_repeat, target, [rows for rows, _ in draws])
        low, high = np.percentile(in_bag[name], [2.5, 97.5])
        row["final_low"], row["final_high"] = float(low), float(high)
        row["fit_seconds"] = round(float(seconds.get(name, 0.0)), 3)
        rows.append(row)
    board = pd.DataFrame(rows)
    return board.sort_values("final", ascending=False, kind="stable").reset_index(drop=True), in_bag


def _plus_minus(final: float, std: float) -> str:
    """`0.8512 ± 0.0040`, or `0.8512 ± –` with one repeat (no spread to show, not a zero spread)."""
    return f"{final:.4f} ± " + ("–" if not np.isfinite(std) else f"{std:.4f}")


def versus_text(versus: dict) -> str:
    """What run.json's `versus` says, in lines (`tabular.compare`)."""
    best = versus["best_member"]
    lines = [f"{HEADLINE} − best member ({best['versus']}, picked with hindsight): "
             f"{compare.MemberGap(**best).text()}"]
    if best["selected_gap"] is not None:
        lines.append(f"{HEADLINE} − best member chosen on other reference groups (group bootstrap, "
                     f"{best['selected_draws']} draws): {best['selected_gap']:+.4f}, 95% [{best['selected_low']:+.4f}, "
                     f"{best['selected_high']:+.4f}]; the hindsight pick's optimism there: {best['optimism']:+.4f}")
    if "raw_feature" in versus:
        raw = versus["raw_feature"]
        lines.append(f"{HEADLINE} − best raw feature as it is ({raw['versus']}): {compare.Gap(**raw).text()}")
    return "\n".join(lines)


def _leaderboard_text(board: pd.DataFrame, headline: dict, notes: dict[str, str] | None = None) -> str:
    shown = board.assign(final=[_plus_minus(f, s) for f, s in zip(board["final"], board["final_std"])],
                         fold_mean=board["final_fold_mean"],
                         interval=[f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(board["final_low"], board["final_high"])])
    columns = ["model", "final", "fold_mean", "interval", "srocc", "plcc", "krcc", "rmse", "fit_seconds"]
    table = shown[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}")
    table = "\n".join([table, *(f"{name}: {note}" for name, note in (notes or {}).items() if note)])
    return (f"{table}\nfinal: pooled out-of-fold Final, mean ± std over repeats; fold_mean: mean Final of single "
            f"test folds (one model each, as a held-out test set); interval: 95% bootstrap over reference groups\n"
            f"CV Final ({HEADLINE}, nested, {headline['n_rows']} rows in {headline['n_groups']} reference groups): "
            f"{_plus_minus(headline['final'], np.nan if headline['final_std'] is None else headline['final_std'])}"
            f"; per-fold mean {headline['final_fold_mean']:.4f}; 95% group-bootstrap interval "
            f"[{headline['final_low']:.4f}, {headline['final_high']:.4f}]")


def check_missing(data: TabularData, rows: np.ndarray, what: str, allow_missing: bool, instead: str) -> None:
    """Refuse `rows` (a mask) of `data` that some extractor has no features for, naming the count per extractor,
    unless `allow_missing` (then the same counts as a warning): a value filled in silently moves scores."""
    missing = data.missing_among(rows)
    if not missing:
        return
    counts = ", ".join(f"{name} ({n} of {int(np.sum(rows))})" for name, n in missing.items())
    if not allow_missing:
        raise SiqaError(f"{data.source}: {what} without features from {counts}; run `siqa features` on the same "
                        f"data (see the failures it lists), or pass --allow-missing to {instead}")
    log.warning("%s: %s without features from %s (--allow-missing: taken as missing values)", data.source, what,
                counts)


def run_oof(data: TabularData, settings: Settings | dict | None, run_dir, progress: bool = True,
            allow_missing: bool = False) -> dict:
    """Nested CV on the labelled rows of `data`, refit on all of them, write `run_dir`; returns the summary.
    Labelled store pairs without features of some extractor are refused, unless `allow_missing` (then
    logged as a warning with the count per extractor). A store run is registered in the store
    (`runs.json`) before fitting and again once written, so `siqa store gc` keeps the feature folders it reads
    (a store that cannot take the registration is refused before any fitting)."""
    if not isinstance(settings, Settings):  # a parsed config from Python: validated here, once
        settings = settings_from(settings)
    run_dir = Path(run_dir).absolute()
    check_target(run_dir)  # before any fitting: a folder that is not a run is never replaced
    check_missing(data, data.labelled, "labelled pairs", allow_missing, "learn with them missing")
    run_id = new_run_id()
    with run_lock(run_dir):
        if data.origin.get("kind") == "store":
            from featurestore.store import Catalog

            store, folders = Catalog(data.origin["root"]), list(data.origin.get("folders", {}).values())
            store.register_run(run_dir, run_id, folders, written=False)
        summary = _run_oof(data, settings, run_dir, progress, run_id)
        if data.origin.get("kind") == "store":
            store.register_run(run_dir, run_id, folders, written=True)
    return summary


def _run_oof(data: TabularData, config: Settings, run_dir: Path, progress: bool, run_id: str) -> dict:
    started = time.perf_counter()
    settings = config.tabular
    plan = PoolPlan(work_dir=str((run_dir / FITS_DIR).resolve()))
    labelled, overlap = _checked_labelled(data, settings)
    if labelled.n_rows == 0:
        raise SiqaError(f"{data.source}: no labelled rows to learn from")
    columns, dropped = usable_columns(data)
    if not columns and not data.dense:
        raise SiqaError(f"{data.source}: every feature column is constant or empty over the labelled rows")
    target = labelled.target
    scale = LabelScale().fit(target)

    clash = sorted(set(StackedPool(settings, columns, [], 0).member_names()) & set(FIXED_COLUMNS))
    if clash:
        raise SiqaError(f"{config.source}: pool member name(s) {', '.join(clash)} clash with oof.parquet columns")

    result = NestedCV(settings, columns, plan).run(labelled, progress=progress)
    members = result.members  # as run: a time limit or min_rows may drop some

    stacked = pd.concat(result.predictions, ignore_index=True)
    repeats = result.repeats
    pipeline = FittedPipeline(settings, columns, {b: int(v.shape[1]) for b, v in labelled.dense.items()},
                              result.pool_plan)
    with tqdm(total=len(members), disable=not progress, desc="refit on all labelled rows", unit="fit",
              dynamic_ncols=True) as bar:
        def announce(name):
            bar.set_description(f"refit on all labelled rows: {name}")
            bar.update(1)

        pipeline.fit(labelled, stacked, np.tile(target, repeats), np.tile(labelled.groups, repeats), scale, announce)
    seconds = {m: result.fit_seconds[m] + pipeline.pool_.fit_seconds_[m] for m in members}
    seconds["blend"] = seconds[HEADLINE] = result.blend_seconds + pipeline.blend_seconds_
    exported = pipeline.export()  # the run's model format: refused here, before writing, if a member has none
    compiled_gap = _compiled_gap(pipeline, exported, labelled, run_dir)

    oof = pd.concat([pd.DataFrame({
        "id": labelled.ids.astype(str), "group": labelled.groups.astype(str), "label": labelled.y,
        "target": target, "repeat": np.full(labelled.n_rows, r, dtype=np.int64),
        "fold": result.folds[r].astype(np.int64)}) for r in range(repeats)], ignore_index=True)
    calibrated = np.concatenate(result.calibrated)
    in_label_units = scale.inverse(calibrated) * (1 if labelled.higher_better else -1)
    oof = pd.concat([oof, stacked, pd.DataFrame({"blend": np.concatenate(result.blend), HEADLINE: calibrated,
                                                 "prediction": in_label_units})], axis=1)
    per_member = {m: [p[m].to_numpy() for p in result.predictions] for m in members}
    draws = metrics.group_bootstrap_draws(labelled.groups, BOOTSTRAP_DRAWS)
    board, in_bag = _leaderboard({**per_member, "blend": result.blend, HEADLINE: result.calibrated}, target,
                                 result.folds, scale, seconds, draws)
    versus = {"best_member": asdict(compare.versus_members(result.calibrated, per_member, target, draws,
                                                           in_bag[HEADLINE], in_bag))}
    raw = board[board["model"].isin([n for n, m in pipeline.pool_.members_ if isinstance(m, RawFeatureModel)])]
    if len(raw):  # the best column used as it is, no map fitted: the simplest member there is
        name = str(raw.iloc[0]["model"])
        versus["raw_feature"] = asdict(compare.paired_gap(result.calibrated, per_member[name], target, name,
                                                          in_bag[HEADLINE], in_bag[name]))

    # what a member chose from the data (the feature best_single_feature picked), in the final refit
    notes = {name: note for name, model in pipeline.pool_.members_ if (note := model.describe())}
    notes.update({name: f"left out: min_rows {need} > {labelled.n_rows} labelled rows"
                  for name, need in settings.members_below(labelled.n_rows).items()})
    row = board.set_index("model").loc[HEADLINE]
    singles = board[board["model"].isin(members)]
    # final_std is NaN with one repeat: None in JSON (NaN is not JSON)
    headline = {**{k: float(row[k]) if np.isfinite(row[k]) else None for k in HEADLINE_METRICS},
                "model": HEADLINE, "n_rows": int(labelled.n_rows), "n_groups": int(np.unique(labelled.groups).size)}
    summary = {
        **{k: headline[k] for k in HEADLINE_METRICS},
        "headline": headline,
        "n_rows": headline["n_rows"], "n_groups": headline["n_groups"],
        "n_unlabelled": int(data.n_rows - labelled.n_rows),
        "train_test_overlap": overlap,
        "best_model": str(singles.iloc[0]["model"]), "best_model_final": float(singles.iloc[0]["final"]),
        "source": {**data.describe(), "origin": {**data.origin, "labelled_sha256": labelled.labelled_digest()}}, "preset": settings.preset, "folds": settings.folds,
        "repeats": repeats, "seed": settings.seed,
        "columns": columns, "dropped_columns": dropped, "members": members,
        "skipped_columns": {**data.skipped, **{c: "constant or empty over the labelled rows" for c in dropped}},
        "feature_ranges": feature_ranges(labelled.X[columns]),
        "image_sizes": None if labelled.pairs is None else image_sizes([*labelled.pairs["ref_path"],
                                                                        *labelled.pairs["dist_path"]]),
        "blend": {"method": pipeline.blender_.method_,
                  "weights": dict(zip(members, map(float, pipeline.weights(members)))),
                  "inner_cv": pipeline.blender_.cv_scores_, "calibration": pipeline.calibrator_.method_,
                  "calibration_cv": pipeline.calibrator_.cv_scores_},
        "nested_blends": result.blends,
        "plan": result.plan.as_dict(),
        "member_notes": notes,
        "versus": versus,
        "leaderboard_text": _leaderboard_text(board, headline, notes) + "\n" + versus_text(versus)
        + (f"\n{result.plan.describe()}" if result.plan.time_limit is not None else ""),
        "compiled_gap": compiled_gap,
        "seconds": round(time.perf_counter() - started, 2),
    }
    recorded, provenance = _store_provenance(data, config, columns)
    summary.update(provenance)
    if compiled_gap is not None and compiled_gap > COMPILED_TOLERANCE:
        summary["warnings"] = [*summary.get("warnings", []),
                               f"the written pipeline scores the labelled pairs up to {compiled_gap:.2g} away from the "
                               f"fitted one (more than {COMPILED_TOLERANCE:g}): please report this"]
    _write(run_dir, recorded, {**settings.model_dump(mode="json"), "repeats": repeats}, oof, board, summary, exported,
           run_id)
    return summary


def _compiled_gap(pipeline: FittedPipeline, exported: dict, data: TabularData, run_dir: Path) -> float | None:
    """The largest difference (0..5 scale) between the scores of the pipeline as written (`blend.compiled`) and
    as fitted, on the labelled rows: a check that the data-only form is the model. None where a member reads
    the pair images (the check would run it once more)."""
    written = compiled.CompiledPipeline(exported, run_dir)
    if written.needs_pairs:
        return None
    return float(np.max(np.abs(written.predict(data) - pipeline.predict(data)), initial=0.0))


def _write(run_dir: Path, config: dict, settings: dict, oof, board, summary, exported: dict, run_id: str) -> None:
    def fill(folder: Path) -> None:
        (folder / "config.json").write_text(json.dumps({"input": config, "tabular": settings}, indent=2,
                                                       sort_keys=True, default=str))
        oof.to_parquet(folder / "oof.parquet", index=False)
        board.to_csv(folder / "leaderboard.csv", index=False, float_format="%.6f")
        (folder / "run.json").write_text(json.dumps(summary, indent=2, default=str))
        (folder / compiled.INFERENCE_JSON.parent).mkdir()
        compiled.write(folder, exported)
        fits = run_dir / FITS_DIR
        if fits.is_dir():  # the members' files, written while fitting: linked in, the old run keeps its own
            shutil.copytree(fits, folder / FITS_DIR, copy_function=os.link)

    write_run(run_dir, fill, run_id)


def load_run(run_dir) -> Run:
    """The run in `run_dir`, every file checked against its manifest before it is used; data only (JSON, numpy
    arrays, CSV, Parquet), so loading a run never executes code."""
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    texts = {name: folder.read(name) for name in ("run.json", "config.json", "leaderboard.csv")}
    return Run(path=run_dir, summary=json.loads(texts["run.json"]), config=json.loads(texts["config.json"]),
               leaderboard=pd.read_csv(io.BytesIO(texts["leaderboard.csv"])), pipeline=compiled.CompiledPipeline.load(folder))


def predict(run_dir, data: TabularData) -> np.ndarray:
    """0..5 quality scores (higher = better) for every row of `data`, from the run's fitted pipeline."""
    return load_run(run_dir).pipeline.predict(data)
