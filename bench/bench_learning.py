"""The learning stage against its simplest baselines, small tables to large ones (issue 16).

    python bench/bench_learning.py [--tables tid2013,csiq,syn150,syn500,syn10k,syn100k]
                                   [--preset default] [--repeats R] [--time-limit S] [--small N]

Per table, on the very folds of the nested run (`oof.parquet`'s `fold` column, every repeat):
- best raw feature: the column with the best training-fold Final, sign chosen on the training folds,
  its raw values as the prediction (`raw_feature` refit per fold; no map is fitted);
- default CatBoost: `CatBoostRegressor()` with library defaults (1 thread);
- best pool member (nested out-of-fold) and the headline (`blend_calibrated`) of `run_oof`.
Final is pooled out-of-fold, mean ± std over repeats, with the mean per-fold Final beside it;
`minus_member` / `minus_raw`: the headline's Final minus the best member's / the raw feature's on the
same folds, mean ± std of those paired differences over repeats (the noise a comparison has to beat;
the best member is picked with hindsight, on the very rows it is scored on); `minus_member_95`: the 95%
interval of that difference over group-bootstrap resamples of the table (the same draws for both: the
noise of which reference images were studied, which repeats of the folds cannot show); `minus_chosen`:
the headline minus the best member chosen on the groups a bootstrap draw took, both scored on the groups
it left out (mean and 95% interval over draws: the comparison without the hindsight pick's optimism).
All three come from the run's `run.json` (`versus`, `tabular.compare`).
Times: wall seconds and CPU seconds of this process (1 thread per model; with `--jobs 1`, the default,
CPU seconds are the whole cost; `--jobs 2` fits two pools at once in worker processes, whose CPU is not
counted here).

Tables: TID2013 / CSIQ (../shared/data/tabular, nine metric columns), KADID-shaped synthetic tables
(`synthetic_tables.kadid_like`; syn10k = 10,125 rows x 9, syn100k = 100k rows x 20 with the `fast`
preset), and `--small N`: N subsamples of TID2013 and CSIQ with 6-10 reference images and ~186 rows,
the small-lab-study case.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from blend.run import HEADLINE, run_oof  # noqa: E402
from synthetic_tables import kadid_like  # noqa: E402
from tabular import metrics  # noqa: E402
from tabular.data import TabularData  # noqa: E402
from tabular.models.raw_feature import RawFeatureModel  # noqa: E402

DATA = HERE.parents[1] / "shared" / "data" / "tabular"
METRIC_COLUMNS = ["DSSIM", "SSIMULACRA", "Butteraugli", "Butteraugli_XL", "Butteraugli_XL_3m",
                  "Butteraugli_XL_2s", "Butteraugli_XL_3s", "Butteraugli_XL_6s", "Butteraugli_XL_12s"]
REAL = {"tid2013": ("mos", "ref_img", False), "csiq": ("dmos", "image", True)}
SYNTHETIC = {"syn150": (150, 9, "default"), "syn500": (500, 9, "default"), "syn10k": (10125, 9, "default"),
             "syn100k": (100_000, 20, "fast")}


def frame_data(frame: pd.DataFrame, label: str, group: str, lower_better: bool, features: list[str],
               source: str) -> TabularData:
    n = len(frame)
    ids = np.array([f"row{i}" for i in range(n)], dtype=object)
    return TabularData(ids=ids, X=frame[features].reset_index(drop=True).astype(np.float64),
                       y=frame[label].to_numpy(np.float64),
                       groups=frame[group].astype(str).str.strip().str.lower().to_numpy(object),
                       split=np.full(n, "train", dtype=object), names=ids.copy(), higher_better=not lower_better,
                       source=source)


def real_table(name: str, n_refs: int | None = None, seed: int = 0, rows: int = 186) -> TabularData:
    label, group, lower = REAL[name]
    frame = pd.read_csv(DATA / f"{name}.csv")
    if n_refs is None:
        return frame_data(frame, label, group, lower, METRIC_COLUMNS, name)
    keys = frame[group].astype(str).str.strip().str.lower()
    rng = np.random.default_rng(seed)
    chosen = rng.choice(np.unique(keys), n_refs, replace=False)
    per_ref = -(-rows // n_refs)
    parts = [frame[keys == ref].sample(n=min(per_ref, int((keys == ref).sum())), random_state=seed) for ref in chosen]
    return frame_data(pd.concat(parts).iloc[:rows], label, group, lower, METRIC_COLUMNS,
                      f"{name} {n_refs} refs seed {seed}")


def synthetic_table(name: str) -> TabularData:
    n_rows, n_features, _ = SYNTHETIC[name]
    frame = kadid_like(n_rows, n_features, seed=0)
    return frame_data(frame, "mos", "ref", False, [f"f{i}" for i in range(n_features)], name)


def on_run_folds(oof: pd.DataFrame, data: TabularData, fit_predict) -> tuple[list[float], list[float], float]:
    """(pooled Final per repeat, per-fold mean Final per repeat, CPU seconds) of a baseline on the run's folds."""
    started = time.process_time()
    pooled, per_fold = [], []
    for _, part in oof.groupby("repeat", sort=True):
        fold = part["fold"].to_numpy()
        pred = np.empty(len(fold))
        for k in np.unique(fold):
            pred[fold == k] = fit_predict(fold != k, fold == k)
        pooled.append(metrics.final(pred, data.target))
        per_fold.append(metrics.mean_fold_final(pred, data.target, fold))
    return pooled, per_fold, time.process_time() - started


def raw_feature(data: TabularData):
    def fit_predict(train, test):
        model = RawFeatureModel().fit(data.X[train].reset_index(drop=True), data.target[train])
        return model.predict(data.X[test].reset_index(drop=True))
    return fit_predict


def default_catboost(data: TabularData):
    from catboost import CatBoostRegressor

    X = data.X.to_numpy()

    def fit_predict(train, test):
        model = CatBoostRegressor(random_seed=0, thread_count=1, verbose=False, allow_writing_files=False)
        return model.fit(X[train], data.target[train]).predict(X[test])
    return fit_predict


def spread(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± " + (f"{np.std(values, ddof=1):.4f}" if len(values) > 1 else "–")


def bench(data: TabularData, preset: str, repeats: int | None, time_limit: float | None, catboost: bool,
          jobs: int = 1) -> dict:
    tab = {"preset": preset, "jobs": jobs, "threads": 1}
    if repeats:
        tab["repeats"] = repeats
    if time_limit:
        tab["time_limit"] = time_limit
    with tempfile.TemporaryDirectory() as scratch:
        wall, cpu = time.perf_counter(), time.process_time()
        summary = run_oof(data, {"tabular": tab}, Path(scratch) / "run", progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        oof = pd.read_parquet(Path(scratch) / "run" / "oof.parquet")
        board = pd.read_csv(Path(scratch) / "run" / "leaderboard.csv").set_index("model")
    members = board.loc[summary["members"]]
    best = members["final"].idxmax()
    raw = on_run_folds(oof, data, raw_feature(data))
    cat = on_run_folds(oof, data, default_catboost(data)) if catboost else ([np.nan], [np.nan], np.nan)
    def per_repeat(column: str) -> np.ndarray:
        return oof.groupby("repeat", sort=True)[column].apply(lambda p: metrics.final(p.to_numpy(), data.target)).to_numpy()

    finals = per_repeat(HEADLINE).tolist()
    gap_raw = (per_repeat(HEADLINE) - np.asarray(raw[0])).tolist()
    versus = summary["versus"]["best_member"]  # tabular.compare: paired gaps, over repeats and bootstrap draws
    row = {"table": data.source, "rows": data.n_rows, "groups": int(np.unique(data.groups).size),
           "repeats": len(finals), "raw": spread(raw[0]), "raw_fold": np.mean(raw[1]),
           "catboost": spread(cat[0]), "catboost_fold": np.mean(cat[1]), "catboost_cpu": cat[2],
           "best_member": f"{best} {board.loc[best, 'final']:.4f}",
           "headline": spread(finals), "headline_fold": summary["final_fold_mean"],
           "minus_member": f"{versus['gap']:+.4f} ± " + ("–" if versus["gap_std"] is None else f"{versus['gap_std']:.4f}"),
           "minus_member_95": f"[{versus['gap_low']:+.4f}, {versus['gap_high']:+.4f}]",
           "minus_chosen": f"{versus['selected_gap']:+.4f} [{versus['selected_low']:+.4f}, {versus['selected_high']:+.4f}]"
           if versus["selected_gap"] is not None else "–",
           "minus_raw": spread(gap_raw),
           "interval": f"[{summary['final_low']:.3f}, {summary['final_high']:.3f}]",
           "wall_s": wall, "cpu_s": cpu, "plan": summary["plan"]["text"],
           "blend": summary["blend"]["method"], "calibration": summary["blend"]["calibration"]}
    print(" | ".join(f"{k} {v:.4f}" if isinstance(v, float) and v < 2 else f"{k} {v:.1f}" if isinstance(v, float)
                     else f"{k} {v}" for k, v in row.items()), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default="tid2013,csiq,syn150,syn500,syn10k")
    parser.add_argument("--preset", default=None, help="default: `default` (syn100k: `fast`)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--time-limit", type=float, default=None)
    parser.add_argument("--small", type=int, default=0, help="also N small subsamples of TID2013 and CSIQ")
    parser.add_argument("--no-catboost", action="store_true", help="skip the default-CatBoost baseline")
    parser.add_argument("--jobs", type=int, default=1, help="pool fits in parallel (the presets' own: fast 1, "
                        "default 2); with 1, CPU seconds are the whole cost")
    args = parser.parse_args()
    rows = []
    for name in filter(None, args.tables.split(",")):
        data = real_table(name) if name in REAL else synthetic_table(name)
        preset = args.preset or (SYNTHETIC[name][2] if name in SYNTHETIC else "default")
        rows.append(bench(data, preset, args.repeats, args.time_limit, not args.no_catboost, args.jobs))
    rng = np.random.default_rng(16)
    for i in range(args.small):
        table = ("csiq", "tid2013")[i % 2]
        rows.append(bench(real_table(table, int(rng.integers(6, 11)), seed=i), args.preset or "default",
                          args.repeats, args.time_limit, not args.no_catboost, args.jobs))
    shown = pd.DataFrame(rows).drop(columns=["plan"])
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}" if v < 2 else f"{v:.0f}"))


if __name__ == "__main__":
    main()
