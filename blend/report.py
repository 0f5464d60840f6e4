"""Run report: `RUN/report.html` (self-contained: every image is embedded) and one PNG per plot in `RUN/report/`.

What it shows, all from out-of-fold data (the honest view):
- predicted vs human score for the calibrated blend and the best pool members, with the least-squares line and
  the 4-parameter logistic fit of IQA papers (PLCC after the fit beside the plain one), coloured by degradation
  type where the pairs name one, integer labels jittered;
- the leaderboard as bars (axis from just below the weakest model, not 0), with the Final of every outer fold as dots;
- the blend weights of the final blender, and of each fold's nested blender as dots;
- feature importance of the top features: GBDT gain and permutation importance, from a LightGBM refit on
  the run's features once per outer fold (dense blocks enter as out-of-fold Ridge meta-features, as in
  the pool) and scored on the held-out fold;
- per split, histograms of labels and scores (train: out-of-fold; val/test: the run's fitted pipeline);
- Final per distortion (where the data names one) and per reference group;
- the worst-predicted pairs (largest distance from the fitted line), as reference | degraded | semantic difference map
  (`blend.explain`) with the top three feature-group attributions of the pair's score;
- tables: SROCC per degradation type of the headline and of the baseline metrics as they are (PSNR, SSIM, LPIPS,
  DISTS, where the store has them), cost per extractor (the store's timings.json), provenance (config,
  extractors and versions, wall times, machine), and a warning when the headline loses to one of its members.

Pool-member predictions and `blend` live on the target scale (higher = better); `blend_calibrated` and
labels live on the label scale. Correlations do not care, so the plots use each as it is.
"""
from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from featurestore.datasets import SPLITS
from featurestore.errors import SiqaError
from tabular import metrics
from tabular.data import TabularData

from .outputs import check_target, write_output
from .run import FIXED_COLUMNS, HEADLINE, Run, load_run, run_origin, versus_text

SCATTER_MEMBERS = 3        # pool members plotted next to the blend
TOP_FEATURES = 30
PERMUTED_FEATURES = 60     # permutation importance for this many features with the most gain
PERMUTATION_REPEATS = 3
WORST_PAIRS = 10
MIN_GROUP_ROWS = 3         # a correlation over fewer rows says nothing
MAX_GROUP_BARS = 40        # more groups than this: a histogram of their Final instead of one bar each
DISTORTION_COLUMNS = ("dst_type", "distortion", "degradation", "kind")
#: baseline metrics shown per degradation as they are (feature column in the store -> name in the table)
BASELINES = {"formula_psnr": "PSNR", "formula_ssim": "SSIM", "lpips_alex": "LPIPS (alex)", "lpips_vgg": "LPIPS (vgg)",
             "dists_score": "DISTS"}
JITTER = 0.12              # vertical jitter of integer labels in the scatter, in label units
DEMO_META = "demo_meta.csv"  # featurestore.datasets.demo writes it at the dataset root: degradation and kind per pair


@dataclass
class Plot:
    name: str      # PNG file stem
    title: str
    caption: str
    png: bytes


class SectionSkipped(Exception):
    """A section that this run cannot show; the message goes into the report instead."""


@dataclass
class ReportInputs:
    run: Run
    rows: pd.DataFrame              # one row per labelled pair: id, group, label, target, fold, predictions, metadata
    members: list[str]
    data: TabularData | None        # every row of the run's feature source; None with `data_problem` set
    data_problem: str = ""
    origin: dict | None = None      # where the data was read from (the run's store unless overridden)


# --- inputs -------------------------------------------------------------------------------------------

def _load_inputs(run: Run, store=None) -> ReportInputs:
    oof = run.oof()
    members = [c for c in oof.columns if c not in FIXED_COLUMNS]
    predictions = members + ["blend", HEADLINE]
    # One row per pair: predictions averaged over the repeats, fold of the first repeat.
    first = oof[oof["repeat"] == oof["repeat"].min()].set_index("id")
    rows = first[["group", "label", "target", "fold"]].join(oof.groupby("id")[predictions].mean())
    rows = rows.reset_index()
    origin = run_origin(run, store)
    try:
        data, problem = TabularData.from_origin(origin), ""
    except SiqaError as exc:  # the store or table moved or changed since the run: plot what oof.parquet has
        data, problem = None, str(exc)
    rows = rows.merge(_metadata(origin, data), on="id", how="left")
    return ReportInputs(run=run, rows=rows, members=members, data=data, data_problem=problem, origin=origin)


def _metadata(origin: dict, data: TabularData | None) -> pd.DataFrame:
    """Per id: split, name, image paths, reference name and distortion columns, where the source has them."""
    if origin.get("kind") == "store":
        from featurestore import sql

        # a pair registered under two names (or splits) is one row of the run: keep its labelled registration
        pairs = sql.query(origin["root"], "SELECT pair_id AS id, split, name, ref_path, dist_path FROM pairs "
                                          "ORDER BY label IS NULL, split, name").drop_duplicates("id")
        pairs["reference"] = pairs["ref_path"].map(lambda p: Path(p).name)
        pairs = pairs.merge(_demo_meta(pairs), on=["split", "name"], how="left", suffixes=("", "_meta"))
        if "reference_meta" in pairs.columns:  # the demo names its photos: nicer than a file name
            pairs["reference"] = pairs.pop("reference_meta").fillna(pairs["reference"])
        return pairs
    if origin.get("kind") == "table" and data is not None:
        # the columns that describe how a pair was made are no features, so TabularData left them out
        path = Path(origin["path"])
        frame = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
        keep = [c for c in DISTORTION_COLUMNS if c in frame.columns]
        if keep and len(frame) == data.n_rows:  # from_table keeps every row, in file order
            return frame[keep].astype(str).assign(id=data.ids)
    return pd.DataFrame({"id": pd.Series(dtype=object)})


def _demo_meta(pairs: pd.DataFrame) -> pd.DataFrame:
    """Distortion columns and reference photo names of a `siqa demo-data` dataset (a real SeIQA folder has
    neither)."""
    empty = pd.DataFrame({"split": pd.Series(dtype=object), "name": pd.Series(dtype=object)})
    if pairs.empty:
        return empty
    # SeIQA layout: <root>/<Split>/Ref/<name>
    roots = {Path(p).parents[2] for p in pairs["ref_path"] if len(Path(p).parents) > 2}
    frames = [pd.read_csv(r / DEMO_META, dtype=str) for r in sorted(roots) if (r / DEMO_META).is_file()]
    if not frames:
        return empty
    meta = pd.concat(frames, ignore_index=True)
    columns = ["split", "name"] + [c for c in (*DISTORTION_COLUMNS, "reference") if c in meta.columns]
    return meta[columns].drop_duplicates(["split", "name"])


# --- plotting helpers ---------------------------------------------------------------------------------

def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _line(prediction: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """Least-squares line label ~ a + b * prediction (b = 0 when the prediction is constant)."""
    if np.ptp(prediction) == 0:
        return float(np.mean(label)), 0.0
    b, a = np.polyfit(prediction, label, 1)
    return float(a), float(b)


def _label_axis(run: Run) -> str:
    return "human score" + ("" if run.summary["source"]["higher_better"] else " (lower = better)")


def _board(run: Run) -> pd.DataFrame:
    return run.leaderboard.set_index("model")


def _distortion_column(rows: pd.DataFrame) -> str | None:
    """The first column naming how each pair was degraded (TID2013 `dst_type`, the demo's `degradation`)."""
    return next((c for c in DISTORTION_COLUMNS if c in rows.columns and rows[c].notna().any()), None)


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# --- tables -------------------------------------------------------------------------------------------

def degradation_srocc(inputs: ReportInputs) -> pd.DataFrame:
    """SROCC against the label inside each degradation type (and over all pairs) of the headline and of the
    baseline metrics as they are (raw feature values: PSNR/SSIM grow with quality, LPIPS/DISTS shrink, so
    their SROCC is negative when they work). Empty when the pairs name no degradation."""
    kind = _distortion_column(inputs.rows)
    if kind is None:
        return pd.DataFrame()
    rows = inputs.rows[["id", kind, "target", HEADLINE]]
    columns = {HEADLINE: HEADLINE}
    if inputs.data is not None:
        present = {c: n for c, n in BASELINES.items() if c in inputs.data.X.columns}
        values = inputs.data.X[list(present)].assign(id=inputs.data.ids).drop_duplicates("id")
        rows = rows.merge(values, on="id", how="left")
        columns.update(present)
    out = []
    for value, part in [("all pairs", rows), *rows.groupby(kind)]:
        entry = {kind: value, "n": len(part)}
        for column, name in columns.items():
            ok = part[column].notna().to_numpy()
            entry[name] = metrics.srocc(part[column][ok], part["target"][ok]) if ok.sum() >= MIN_GROUP_ROWS else np.nan
        out.append(entry)
    return pd.DataFrame(out)


def extractor_costs(inputs: ReportInputs) -> pd.DataFrame:
    """Per extractor the run used: store folder (name-v<version>-<config hash>) and measured seconds per new
    pair from the store's timings.json (decoding not included; NaN when the store never timed it)."""
    from featurestore.store import FeatureStore

    origin = inputs.origin or {}
    used = inputs.run.summary.get("extractors") or {}
    if origin.get("kind") != "store" or not used:
        return pd.DataFrame()
    store = FeatureStore(origin["root"])
    timings = store.timings()
    out = []
    for name, view in sorted(used.items()):
        seconds = 0.0
        timed = False
        for level, per_pair in (("image", 2), ("pair", 1)):
            t = timings.get(f"{view['folder']}/{level}")
            if t and t.get("items"):
                seconds += per_pair * t["seconds"] / t["items"]
                timed = True
        out.append({"extractor": name, "folder": view["folder"], "seconds_per_pair": seconds if timed else np.nan})
    decode = timings.get("decode/image")
    if decode and decode.get("items"):
        out.append({"extractor": "(decoding two images)", "folder": "",
                    "seconds_per_pair": 2 * decode["seconds"] / decode["items"]})
    return pd.DataFrame(out)


def provenance(inputs: ReportInputs) -> list[tuple[str, str]]:
    """(what, value) lines: config, extractors and versions, wall times, machine, library versions."""
    import json
    import os
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def package(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    s, config = inputs.run.summary, inputs.run.config.get("input") or {}
    used = s.get("extractors") or {}
    fit = inputs.run.leaderboard.set_index("model")["fit_seconds"] if "fit_seconds" in inputs.run.leaderboard else {}
    lines = [("config file", str(config.get("_path", "-"))),
             ("extractors (store folder = name-v<version>-<config hash>)",
              ", ".join(v["folder"] for v in used.values()) or "-"),
             ("extractor settings", json.dumps(config.get("extractors") or {}, sort_keys=True, default=str)),
             ("tabular settings", f"preset {s['preset']}, {s['folds']} folds x {s['repeats']} repeat(s), seed {s['seed']}"),
             ("wall time of siqa oof", f"{s.get('seconds', float('nan')):.1f} s"),
             ("fit time per member (nested + refit)", ", ".join(f"{m} {v:.1f}s" for m, v in dict(fit).items())),
             ("machine", f"{platform.node()}: {platform.machine()}, {os.cpu_count()} CPU(s), {platform.platform()}"),
             ("software", f"Python {platform.python_version()}, siqa {package('siqa')}, torch {package('torch')}, "
                          f"scikit-learn {package('scikit-learn')}, lightgbm {package('lightgbm')}, "
                          f"catboost {package('catboost')}, duckdb {package('duckdb')}")]
    if s.get("member_notes"):
        lines.append(("what members picked", "; ".join(f"{m}: {n}" for m, n in s["member_notes"].items())))
    return lines


def headline_warning(run: Run) -> str:
    """A warning line when some pool member beats the headline out of fold ('' otherwise)."""
    board = _board(run)
    members = board.drop(index=[m for m in ("blend", HEADLINE) if m in board.index])
    if not len(members) or HEADLINE not in board.index:
        return ""
    best = members["final"].idxmax()
    if members.loc[best, "final"] <= board.loc[HEADLINE, "final"]:
        return ""
    return (f"Warning: the headline ({HEADLINE}, Final {board.loc[HEADLINE, 'final']:.4f}) is below its member "
            f"{best} (Final {members.loc[best, 'final']:.4f}) out of fold: the blend costs more than it adds here.")


# --- sections -----------------------------------------------------------------------------------------

def plot_scatter(inputs: ReportInputs, progress: bool = False) -> Plot:
    board = _board(inputs.run)
    top = [m for m in board.index if m in inputs.members][:SCATTER_MEMBERS]
    models = [HEADLINE] + top
    cols = min(len(models), 2)
    nrows = math.ceil(len(models) / cols)
    fig = _figure(5.2 * cols, 4.4 * nrows)
    label = inputs.rows["label"].to_numpy()
    integer = bool(np.all(np.equal(np.mod(label, 1), 0)))
    shown = label + (np.random.default_rng(0).uniform(-JITTER, JITTER, label.size) if integer else 0.0)
    kind = _distortion_column(inputs.rows)
    kinds = sorted(inputs.rows[kind].dropna().astype(str).unique()) if kind else []
    palette = dict(zip(kinds, _colours(len(kinds))))
    for i, model in enumerate(models):
        ax = fig.add_subplot(nrows, cols, i + 1)
        pred = inputs.rows[model].to_numpy()
        if kinds:
            for value in kinds:
                mask = (inputs.rows[kind].astype(str) == value).to_numpy()
                ax.scatter(pred[mask], shown[mask], s=16, alpha=0.75, edgecolors="none", color=palette[value],
                           label=value)
        else:
            ax.scatter(pred, shown, s=14, alpha=0.6, edgecolors="none")
        a, b = _line(pred, label)
        xs = np.linspace(pred.min(), pred.max(), 200)
        ax.plot(xs[[0, -1]], a + b * xs[[0, -1]], color="crimson", lw=1.3, ls="--", label="least squares")
        params = metrics.fit_logistic4(pred, label)
        if params is not None:
            ax.plot(xs, metrics.logistic4(xs, *params), color="black", lw=1.6, label="4-parameter logistic")
        row = board.loc[model]
        ax.set_title(f"{model}: Final {row['final']:.4f}\nSROCC {row['srocc']:.3f}, PLCC {row['plcc']:.3f}, "
                     f"PLCC after logistic {metrics.plcc_after_logistic(pred, label):.3f}", fontsize=9)
        ax.set_xlabel("prediction (0..5)" if model == HEADLINE else "prediction (target scale)", fontsize=9)
        ax.set_ylabel(_label_axis(inputs.run) + (" (jittered)" if integer else ""), fontsize=9)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7, loc="best", title=kind if kinds else None, title_fontsize=7)
    return Plot("scatter", "Predicted vs human score",
                "Out-of-fold predictions (mean over repeats) of the calibrated blend and the best pool members; "
                "dashed red: least-squares line; black: the monotonic 4-parameter logistic fit IQA papers apply "
                "before PLCC (titles give PLCC before and after it; leaderboard PLCC is the plain one)"
                + (f"; colour: {kind}" if kinds else "") +
                (f"; integer labels jittered by up to ±{JITTER} for visibility (fits use the true labels)"
                 if integer else "") + ".", _png(fig))


def fold_finals(inputs: ReportInputs) -> pd.DataFrame:
    """Final of every model inside every (repeat, outer fold): rows = folds, columns = models."""
    oof = inputs.run.oof()
    models = inputs.members + ["blend", HEADLINE]
    out = {}
    for (repeat, fold), part in oof.groupby(["repeat", "fold"]):
        out[f"r{repeat}f{fold}"] = {m: metrics.final(part[m], part["target"]) for m in models}
    return pd.DataFrame(out).T


def plot_leaderboard(inputs: ReportInputs, progress: bool = False) -> Plot:
    board = _board(inputs.run)
    per_fold = fold_finals(inputs)
    order = list(board.index)[::-1]  # best on top
    fig = _figure(8, 0.9 + 0.38 * len(order))
    ax = fig.add_subplot()
    y = np.arange(len(order))
    colors = ["#d95f02" if m in ("blend", HEADLINE) else "#1b9e77" for m in order]
    ax.barh(y, board.loc[order, "final"], xerr=board.loc[order, "final_std"], color=colors, alpha=0.8,
            error_kw={"ecolor": "black", "capsize": 3})
    for i, model in enumerate(order):
        ax.scatter(per_fold[model], np.full(len(per_fold), i), s=12, color="black", zorder=3)
        ax.text(board.loc[model, "final"], i + 0.3, f" {board.loc[model, 'final']:.4f}", fontsize=7)
    ax.set_yticks(y, order, fontsize=9)
    low = float(np.nanmin([np.nanmin(per_fold[order].to_numpy()), (board.loc[order, "final"] - board.loc[order, "final_std"]).min()]))
    high = float(np.nanmax([np.nanmax(per_fold[order].to_numpy()), (board.loc[order, "final"] + board.loc[order, "final_std"]).max()]))
    margin = 0.08 * max(high - low, 0.01)
    ax.set_xlim(low - margin, min(high + 2 * margin, 1.0 + margin))  # from the weakest model, not 0
    ax.set_xlabel("Final = 0.6 SROCC + 0.4 PLCC (axis does not start at 0)")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="#d95f02", alpha=0.8, label="blend (raw / calibrated)"),
                       Patch(color="#1b9e77", alpha=0.8, label="pool member"),
                       Line2D([], [], marker="o", ls="", color="black", markersize=4, label="one outer fold")],
              fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return Plot("leaderboard", "Leaderboard with fold spread",
                f"Bars: out-of-fold Final (mean over {inputs.run.summary['repeats']} repeat(s); whiskers: std over "
                f"repeats). Dots: Final inside each outer fold of each repeat ({len(per_fold)} in all).", _png(fig))


def plot_blend_weights(inputs: ReportInputs, progress: bool = False) -> Plot:
    blend = inputs.run.summary["blend"]
    weights = pd.Series(blend["weights"], dtype=float).reindex(inputs.members).fillna(0.0)
    nested = pd.DataFrame([b["weights"] for b in inputs.run.summary.get("nested_blends", [])]).reindex(
        columns=inputs.members).fillna(0.0)
    fig = _figure(8, 0.9 + 0.38 * len(weights))
    ax = fig.add_subplot()
    y = np.arange(len(weights))
    ax.barh(y, weights.to_numpy(), color="#7570b3", alpha=0.8, label="final blender")
    for i, member in enumerate(weights.index):
        if len(nested):
            ax.scatter(nested[member], np.full(len(nested), i), s=12, color="black", zorder=3,
                       label="nested blender of one fold" if i == 0 else None)
    ax.set_yticks(y, list(weights.index), fontsize=8)
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("weight")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    scores = ", ".join(f"{k} {v:.4f}" for k, v in (blend.get("inner_cv") or {}).items())
    return Plot("blend_weights", "Blend weights",
                f"Method chosen: {blend['method']}" + (f" (inner-CV Final: {scores})" if scores else "") +
                ". Dots: weights of the blender fit inside each outer fold.", _png(fig))


def feature_importance(inputs: ReportInputs, progress: bool = False) -> pd.DataFrame:
    """Per feature: `gain` (share of total LightGBM gain over the fold models) and `permutation` (drop in the
    pooled out-of-fold Final when the feature is shuffled within each held-out fold; NaN when not measured)."""
    import lightgbm as lgb

    from tabular.meta import DenseMetaFeatures

    data, rows, run = inputs.data, inputs.rows, inputs.run
    settings = run.config["tabular"]
    index = {k: i for i, k in enumerate(data.ids)}
    missing = [i for i in rows["id"] if i not in index]
    if missing:
        raise SectionSkipped(f"Feature importance left out: {data.source} no longer holds {len(missing)} of the "
                             f"run's pairs (e.g. {missing[0]})")
    take = np.array([index[i] for i in rows["id"]])
    # exactly what the run was fit on, even if the store has gained columns since
    X = data.X.iloc[take].reset_index(drop=True)[[c for c in run.summary["columns"] if c in data.X.columns]]
    dense = {b: data.dense[b][take] for b in run.pipeline.blocks if b in data.dense}
    target, groups, fold = rows["target"].to_numpy(), rows["group"].to_numpy(), rows["fold"].to_numpy()
    folds = np.unique(fold)

    models, tests, gain = {}, {}, None
    for k in folds:
        train, test = fold != k, fold == k
        Xtr, Xte = X[train].reset_index(drop=True), X[test].reset_index(drop=True)
        if dense:
            meta = DenseMetaFeatures(alphas=settings["meta"]["alphas"], n_splits=settings["meta"]["folds"],
                                     random_state=int(settings["seed"]))
            Xtr = pd.concat([Xtr, meta.fit_transform({b: v[train] for b, v in dense.items()}, target[train],
                                                     groups[train])], axis=1)
            Xte = pd.concat([Xte, meta.transform({b: v[test] for b, v in dense.items()})], axis=1)
        # One thread: on a few hundred rows OpenMP start-up costs more than it saves, and on a busy
        # machine two threads were measured 10x slower than one.
        model = lgb.LGBMRegressor(n_estimators=200, learning_rate=0.05, num_leaves=15,
                                  min_child_samples=max(2, min(20, int(train.sum()) // 10)),
                                  random_state=int(settings["seed"]), n_jobs=1, verbose=-1)
        model.fit(Xtr, target[train])
        models[k], tests[k] = model, Xte
        fold_gain = pd.Series(model.booster_.feature_importance("gain"), index=Xtr.columns, dtype=float)
        gain = fold_gain if gain is None else gain.add(fold_gain, fill_value=0.0)
    total = gain.sum()
    out = pd.DataFrame({"gain": gain / total if total > 0 else gain, "permutation": np.nan})

    def pooled_final(shuffled: str | None, rng) -> float:
        pred = np.empty(len(rows))
        for k in folds:
            Xte = tests[k]
            if shuffled is not None:
                Xte = Xte.copy()
                Xte[shuffled] = rng.permutation(Xte[shuffled].to_numpy())
            pred[fold == k] = models[k].predict(Xte)
        return metrics.final(pred, target)

    base = pooled_final(None, None)
    # A feature no fold model splits on cannot change a prediction: only features with gain are shuffled.
    ranked = out.sort_values("gain", ascending=False)
    candidates = list(ranked.index[ranked["gain"] > 0][:PERMUTED_FEATURES])
    rng = np.random.default_rng(int(settings["seed"]))
    for feature in tqdm(candidates, desc="permutation importance", unit="feature", disable=not progress, leave=False):
        shuffled = [pooled_final(feature, rng) for _ in range(PERMUTATION_REPEATS)]
        out.loc[feature, "permutation"] = base - float(np.mean(shuffled))
    out.attrs["base_final"] = base
    return out


def plot_importance(inputs: ReportInputs, progress: bool = False) -> Plot:
    if inputs.data is None:
        raise SectionSkipped(f"Feature importance left out: {inputs.data_problem}")
    importance = feature_importance(inputs, progress)
    by_gain = importance.sort_values("gain", ascending=False).head(TOP_FEATURES)[::-1]
    measured = importance.dropna(subset=["permutation"])
    by_perm = measured.sort_values("permutation", ascending=False).head(TOP_FEATURES)[::-1]
    n = max(len(by_gain), len(by_perm), 1)
    fig = _figure(13, 1.4 + 0.36 * n)
    for i, (frame, column, title, color) in enumerate((
            (by_gain, "gain", "GBDT gain (share of total)", "#1b9e77"),
            (by_perm, "permutation", "permutation: drop in out-of-fold Final", "#d95f02"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.barh(np.arange(len(frame)), frame[column], color=color, alpha=0.85)
        ax.set_yticks(np.arange(len(frame)), list(frame.index), fontsize=9)
        ax.set_title(title, fontsize=11)
        ax.grid(axis="x", alpha=0.3)
    return Plot("importance", f"Feature importance (top {TOP_FEATURES})",
                f"A LightGBM refit once per outer fold (first repeat) on the run's scalar features, dense blocks as "
                f"out-of-fold Ridge meta-features (meta_*); its pooled out-of-fold Final is "
                f"{importance.attrs['base_final']:.4f}. Gain is summed over the fold models. Permutation: the "
                f"{min(PERMUTED_FEATURES, int((importance['gain'] > 0).sum()))} features with the most gain are "
                f"shuffled within each held-out fold ({PERMUTATION_REPEATS} shuffles).", _png(fig))


def split_scores(inputs: ReportInputs) -> tuple[dict[str, dict[str, np.ndarray]], str]:
    """split -> {"label": ..., "prediction": ...}: train from out-of-fold, other splits from the fitted pipeline;
    and why other splits are missing, if they are."""
    # labels go through the run's affine label scale, so every split is on the scores' 0..5, higher = better
    scale = inputs.run.pipeline.label_scale
    out = {"train": {"label": scale(inputs.rows["target"].to_numpy()),
                     "prediction": inputs.rows[HEADLINE].to_numpy()}}
    data = inputs.data
    if data is None:
        return out, inputs.data_problem
    others = np.isin(data.split, ["train"], invert=True) & ~np.isin(data.ids, inputs.rows["id"])
    if others.any():
        part = data.subset(others)
        try:
            scores = inputs.run.pipeline.predict(part)
        except SiqaError as exc:  # the store changed since the run (features removed or re-configured)
            return out, str(exc)
        for split in sorted(set(part.split), key=lambda s: (SPLITS.index(s) if s in SPLITS else len(SPLITS), s)):
            mask = part.split == split
            target = part.target[mask]
            out[split] = {"label": scale(target[np.isfinite(target)]), "prediction": scores[mask]}
    return out, ""


def plot_split_histograms(inputs: ReportInputs, progress: bool = False) -> Plot:
    scores, problem = split_scores(inputs)
    fig = _figure(4.2 * len(scores), 3.4)
    bins = np.linspace(0, 5, 26)
    for i, (split, values) in enumerate(scores.items()):
        ax = fig.add_subplot(1, len(scores), i + 1)
        if len(values["label"]):
            ax.hist(np.clip(values["label"], 0, 5), bins=bins, alpha=0.5, label=f"human ({len(values['label'])})",
                    color="#7570b3")
        ax.hist(np.clip(values["prediction"], 0, 5), bins=bins, alpha=0.5, color="#d95f02",
                label=f"predicted ({len(values['prediction'])})")
        ax.set_title(split)
        ax.set_xlabel("score (0..5)")
        ax.legend(fontsize=8)
    return Plot("split_histograms", "Scores per split",
                "Train: labels and out-of-fold calibrated blend. Other splits: scores of the run's fitted pipeline, "
                "with labels where the split has them. Labels are mapped to 0..5 (higher = better) by the run's "
                "label scale." +
                (f" Other splits not shown: {problem}" if problem else ""), _png(fig))


def group_finals(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    """Final of the calibrated blend inside each value of `column` (values with too few rows are left out)."""
    out = []
    for value, part in rows.dropna(subset=[column]).groupby(column):
        if len(part) >= MIN_GROUP_ROWS and part["target"].nunique() > 1:
            out.append({column: value, "n": len(part), "final": metrics.final(part[HEADLINE], part["target"])})
    return pd.DataFrame(out, columns=[column, "n", "final"]).sort_values("final").reset_index(drop=True)


def plot_groups(inputs: ReportInputs, progress: bool = False) -> Plot:
    rows = inputs.rows.copy()
    # SeIQA names a reference file after its pair, so one reference image has several file names:
    # show a group by the first of them.
    names = rows["reference"].fillna(rows["group"]) if "reference" in rows.columns else rows["group"]
    rows["reference"] = names.groupby(rows["group"]).transform("min")
    columns = [c for c in DISTORTION_COLUMNS if c in rows.columns and rows[c].notna().any()] + ["reference"]
    tables = {c: group_finals(rows, c) for c in columns}
    tables = {c: t for c, t in tables.items() if len(t)}
    if not tables:
        raise SectionSkipped(f"Final per group left out: no group has {MIN_GROUP_ROWS} or more pairs "
                             "with different labels.")
    # at most 13 inches wide, so the PNG shows at full size on a laptop screen
    fig = _figure(min(6.5 * len(tables), 13), 1.2 + 0.28 * min(max(len(t) for t in tables.values()), MAX_GROUP_BARS))
    for i, (column, table) in enumerate(tables.items()):
        ax = fig.add_subplot(1, len(tables), i + 1)
        if len(table) > MAX_GROUP_BARS:
            ax.hist(table["final"], bins=20, color="#1b9e77", alpha=0.8)
            ax.set_xlabel("Final inside one group")
            ax.set_ylabel("groups")
        else:
            ax.barh(np.arange(len(table)), table["final"], color="#1b9e77", alpha=0.8)
            ax.set_yticks(np.arange(len(table)), [f"{v} ({n})" for v, n in zip(table[column], table["n"])], fontsize=7)
            ax.set_xlabel("Final")
        ax.set_title(f"per {column}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    return Plot("groups", "Final per group",
                "Final of the out-of-fold calibrated blend inside each group (number of pairs in brackets; groups "
                f"with fewer than {MIN_GROUP_ROWS} pairs or one label value are left out). Within one reference the "
                "question is whether the ranking of its degraded versions is right.", _png(fig))


def worst_pairs(rows: pd.DataFrame, n: int = WORST_PAIRS) -> pd.DataFrame:
    """Pairs furthest from the least-squares line label ~ calibrated blend (same rule as SQL `worst_pairs`)."""
    a, b = _line(rows[HEADLINE].to_numpy(), rows["label"].to_numpy())
    out = rows.assign(prediction=rows[HEADLINE], fitted=a + b * rows[HEADLINE])
    out["residual"] = out["label"] - out["fitted"]
    order = np.lexsort((out["id"].to_numpy(), -out["residual"].abs().to_numpy()))
    return out.iloc[order[:n]].reset_index(drop=True)


def _thumbnail(path) -> np.ndarray | None:
    """The image as the store decodes it (orientation, decode limits), at most 240x240; None if it does not decode."""
    from PIL import Image

    from featurestore.io import read_rgb

    try:
        img = Image.fromarray(read_rgb(path, max_pixels=480 * 480))
    except SiqaError:
        return None
    img.thumbnail((240, 240))
    return np.asarray(img)


def _worst_explanations(inputs: ReportInputs, worst: pd.DataFrame, progress: bool) -> tuple[dict, str]:
    """{id: `blend.explain.Explanation`} of the worst pairs (the run's pipeline as it predicts, and the
    semantic difference map), and a note when they could not be made (no store rows, missing weights)."""
    from .explain import explain

    if inputs.data is None or inputs.data.pairs is None:
        return {}, "no maps: the run's pairs have no images in its source"
    index = {pair_id: i for i, pair_id in enumerate(inputs.data.ids)}
    rows = inputs.data.subset(np.array([index[i] for i in worst["id"] if i in index], dtype=int))
    try:
        explained = list(explain(inputs.run, rows, inputs.origin.get("root"), training=inputs.data,
                                 per_feature=False, progress=progress))
    except (SiqaError, RuntimeError, OSError) as exc:
        return {}, f"no maps: {exc}"
    return dict(zip(rows.ids, explained)), ""


def plot_worst(inputs: ReportInputs, progress: bool = False) -> Plot:
    worst = worst_pairs(inputs.rows)
    if not ({"ref_path", "dist_path"} <= set(worst.columns) and worst["dist_path"].notna().any()):
        raise SectionSkipped("Thumbnails of the worst pairs left out: the run's source has no image paths.")
    explanations, problem = _worst_explanations(inputs, worst, progress)
    # one pair per row: reference | degraded | where its meaning changed, with the top attributions
    distortion = next((c for c in DISTORTION_COLUMNS if c in worst.columns and worst[c].notna().any()), None)
    fig = _figure(12.8, 2.9 * len(worst))
    for i, row in enumerate(worst.itertuples()):
        explained = explanations.get(row.id)
        for j, path in enumerate((row.ref_path, row.dist_path)):
            ax = fig.add_subplot(len(worst), 3, 3 * i + j + 1)
            ax.set_axis_off()
            image = _thumbnail(path) if isinstance(path, str) else None
            if image is None:
                ax.text(0.5, 0.5, "image not found", ha="center", va="center", fontsize=8)
            else:
                ax.imshow(image)
            if j == 0:
                what = getattr(row, distortion) if distortion else None
                ax.set_title(f"{row.name}" + (f" ({what})" if isinstance(what, str) else ""), fontsize=8, loc="left")
            else:
                ax.set_title(f"label {row.label:.2f} | predicted {row.prediction:.2f} | residual {row.residual:+.2f}",
                             fontsize=8, loc="left")
        ax = fig.add_subplot(len(worst), 3, 3 * i + 3)
        ax.set_axis_off()
        if explained is None:
            ax.text(0.5, 0.5, problem or "no map", ha="center", va="center", fontsize=7, wrap=True)
            continue
        ax.imshow(explained.pair.dist.rgb)
        ax.imshow(explained.map.values, cmap="inferno", alpha=0.6, vmin=0.0,
                  vmax=max(float(explained.map.values.max()), 1e-6))
        ax.plot(*explained.map.peak, marker="+", color="cyan", markersize=12, markeredgewidth=2)
        a = explained.attribution
        top = ", ".join(f"{group} {value:+.2f}" for group, value in a.top(3))
        ax.set_title(f"score {a.score:.2f} = {a.baseline:.2f} {top} ...", fontsize=7, loc="left")
    return Plot("worst_pairs", f"The {len(worst)} worst-predicted pairs",
                "Reference | degraded | where the meaning changed (`siqa explain`'s semantic difference map, peak "
                "marked), sorted by distance from the least-squares line of the scatter plot (out-of-fold calibrated "
                "blend); residual = label - line, so > 0 means the pair was scored too low. Above each map: the "
                "fitted run's score of the pair split into a baseline and the three feature groups that moved it "
                "most (exact Shapley values; the refit pipeline's score, not the out-of-fold prediction)."
                + (f" ({problem})" if problem else ""), _png(fig))


# --- html ---------------------------------------------------------------------------------------------

CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;padding:0 16px;
max-width:1280px;color:#222;box-sizing:border-box}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee}.caption{color:#555;font-size:.9em;max-width:1000px}.note{color:#a33}
.warning{color:#b00;font-weight:bold}.prov td{text-align:left}"""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0, escape=True)


def _tables(inputs: ReportInputs) -> list[tuple[str, str, str]]:
    """(anchor, title, HTML) of the table sections after the plots: those the run has data for."""
    out = []
    per_kind = degradation_srocc(inputs)
    if len(per_kind):
        out.append(("degradations", "SROCC per degradation type: headline and baseline metrics as they are",
                    _table(per_kind) + "<p class='caption'>Out-of-fold calibrated blend against the raw baseline "
                    "feature values (no learning: PSNR and SSIM grow with quality, LPIPS and DISTS shrink, so a "
                    "working one of those has a negative SROCC).</p>"))
    costs = extractor_costs(inputs)
    if len(costs):
        out.append(("costs", "Cost per extractor", _table(costs) + "<p class='caption'>Seconds per new pair as "
                    "the store measured while extracting (timings.json): image-level extractors count two "
                    "images.</p>"))
    out.append(("provenance", "Provenance", "<table class='prov'>" + "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in provenance(inputs)) + "</table>"))
    return out


def _html(inputs: ReportInputs, plots: list[Plot], notes: list[str]) -> str:
    s = inputs.run.summary
    worst = worst_pairs(inputs.rows)
    headline = pd.DataFrame([{k: s[k] for k in ("final", "final_std", "srocc", "plcc", "krcc", "rmse")}])
    facts = (f"{s['n_rows']} labelled pairs, {s['n_groups']} reference groups, {s.get('n_unlabelled', 0)} unlabelled; "
             f"preset {s['preset']}, {s['folds']} grouped folds x {s['repeats']} repeat(s), seed {s['seed']}; "
             f"best single model {s['best_model']} ({s['best_model_final']:.4f}); source {s['source']['source']}")
    tables = _tables(inputs)
    title = f"siqa run {html.escape(inputs.run.path.name)}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>siqa run report: {html.escape(str(inputs.run.path))}</h1>",
             "<h2>Headline (out-of-fold, calibrated blend)</h2>", _table(headline),
             f"<p class='caption'>{html.escape(facts)}</p>",
             *([f"<p class='caption'>{'<br>'.join(map(html.escape, versus_text(s['versus']).splitlines()))}</p>"]
               if "versus" in s else []),  # runs of an older siqa have no `versus`
             "<p>" + " | ".join([*(f'<a href="#{p.name}">{html.escape(p.title)}</a>' for p in plots),
                                 *(f'<a href="#{key}">{html.escape(name)}</a>' for key, name, _ in tables)]) + "</p>",
             "<h2>Leaderboard</h2>", _table(inputs.run.leaderboard)]
    warning = headline_warning(inputs.run)
    if warning:
        parts.insert(parts.index("<h2>Leaderboard</h2>"), f"<p class='warning'>{html.escape(warning)}</p>")
    if s.get("member_notes"):
        parts.append("<p class='caption'>" + html.escape("; ".join(f"{m}: {n}" for m, n in s["member_notes"].items()))
                     + "</p>")
    for note in notes:
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    for plot in plots:
        parts += [f"<h2 id='{plot.name}'>{html.escape(plot.title)}</h2>", _img(plot.png, plot.title),
                  f"<p class='caption'>{html.escape(plot.caption)}</p>"]
    columns = [c for c in ("name", "split", "reference", *DISTORTION_COLUMNS, "id", "label", "prediction", "fitted",
                           "residual") if c in worst.columns]
    for key, name, body in tables:
        parts += [f"<h2 id='{key}'>{html.escape(name)}</h2>", body]
    parts += ["<h2>Worst-predicted pairs (table)</h2>", _table(worst[columns]), "</body></html>"]
    return "\n".join(parts)


SECTIONS = (plot_scatter, plot_leaderboard, plot_blend_weights, plot_importance, plot_split_histograms,
            plot_groups, plot_worst)


def write_report(run_dir, progress: bool = False, store=None) -> Path:
    """Write RUN/report.html and RUN/report/*.png for a finished run (reading its own store unless `store`
    says otherwise); returns the HTML path."""
    inputs = _load_inputs(load_run(run_dir), store)
    plots: list[Plot] = []
    notes: list[str] = []
    for section in tqdm(SECTIONS, desc="report", unit="section", disable=not progress):
        try:
            plots.append(section(inputs, progress))
        except SectionSkipped as skipped:
            notes.append(str(skipped))
    folder = inputs.run.path / "report"
    out = inputs.run.path / "report.html"
    pngs = {folder / f"{plot.name}.png": plot.png for plot in plots}
    if folder.is_symlink():  # its plots would land, and stale ones be deleted, wherever it points
        raise SiqaError(f"{folder}: is a symbolic link; the report writes its plots only inside the run folder "
                        f"- remove the link")
    for path in [out, *pngs]:  # all of them, before a first file is replaced
        check_target(path, products=[out, *pngs])
    folder.mkdir(exist_ok=True)
    for stale in set(folder.glob("*.png")) - set(pngs):  # a section skipped now must not leave last run's plot
        stale.unlink()
    for path, png in pngs.items():
        write_output(path, png, products=[out, *pngs])
    write_output(out, _html(inputs, plots, notes).encode("utf-8"), products=[out, *pngs])
    return out
