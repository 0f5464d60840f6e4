"""Run report: `RUN/report.html` (self-contained: every plot is embedded) and, per plot, `RUN/report/<plot>.svg`
(vector, text as glyph outlines) and `<plot>.png` (300 dpi), ready for a paper: each figure is drawn at the size
it prints, one column (3.5 in) or the text width (7 in), every text at 10 pt or more, legends outside the axes,
intervals where few rows stand behind a number. The numbers behind the importance plot are also written as
`report/importance.csv` and `importance.json`.

What it shows, all from out-of-fold data (the honest view):
- predicted vs human score for the calibrated blend and the best pool members, with the least-squares line and
  the 4-parameter logistic fit of IQA papers (PLCC after the fit beside the plain one), coloured by degradation
  type where the pairs name one, integer labels jittered;
- the leaderboard as bars (axis from just below the weakest model, not 0) with the run's 95% group-bootstrap
  interval, and the Final of every outer fold as dots;
- the blend weights of the final blender, and of each fold's nested blender as dots;
- feature importance of the top features: GBDT gain and permutation importance, from a LightGBM refit on
  the run's features once per outer fold (dense blocks enter as out-of-fold Ridge meta-features, as in
  the pool) and scored on the held-out fold;
- per split, histograms of labels and scores (train: out-of-fold; val/test: the run's fitted pipeline);
- Final per distortion (where the data names one) and per reference group, with 95% bootstrap intervals;
- the worst-predicted pairs (largest distance from the fitted line), as reference | degraded | semantic difference map
  (`blend.explain`) with the top three feature-group attributions of the pair's score;
- tables: SROCC per degradation type of the headline and of the baseline metrics as they are (PSNR, SSIM, LPIPS,
  DISTS, where the store has them), cost per extractor (the store's timings.json), provenance of what the run
  used (its table, or its store and the extractors it read with their settings; wall times, machine), and a
  warning when the headline loses to one of its members.

Pool-member predictions and `blend` live on the target scale (higher = better); `blend_calibrated` and
labels live on the label scale. Correlations do not care, so the plots use each as it is.
"""
from __future__ import annotations

import base64
import functools
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
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
IMPORTANCE_LABEL = 27      # characters of a feature name in the importance plot (the CSV has them whole)
THUMBNAIL = 240            # pixels: the longer side of an image in the worst-pairs plot
GROUP_DRAWS = 200          # bootstrap resamples behind the interval of a group's Final
# Every figure is drawn at the size a paper prints it, so its point sizes are the printed ones.
COLUMN = 3.5               # inches: one column of a two-column paper
PAGE = 7.0                 # inches: both columns (the text width)
PNG_DPI = 300
SCREEN_ZOOM = 1.4          # the HTML shows a figure at this many times its printed size (96 CSS px per inch)
STYLE = {"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "xtick.labelsize": 10, "ytick.labelsize": 10,
         "legend.fontsize": 10, "legend.title_fontsize": 10, "figure.titlesize": 10,
         "font.family": "DejaVu Sans",    # ships with matplotlib: the same letters on every machine
         "svg.fonttype": "path",          # glyphs as outlines: the SVG looks the same without the font installed
         "svg.hashsalt": "siqa-report",   # fixed element ids: the same run gives the same SVG bytes
         "savefig.bbox": "standard"}      # the figure's own size, never cropped
FILE_KINDS = (".svg", ".png", ".csv", ".json")   # what `RUN/report/` holds; others there are left alone


@dataclass
class Plot:
    name: str      # file stem in RUN/report/
    title: str
    caption: str
    svg: bytes
    png: bytes     # PNG_DPI
    figure: Figure
    files: dict[str, bytes] = field(default_factory=dict)  # data files beside the plot (file name -> bytes)
    html: str = ""  # extra HTML under the caption (the numbers behind the plot)


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

def _section(build):
    """A section draws and renders under `STYLE` (tick labels are made while drawing, so rendering too)."""
    @functools.wraps(build)
    def styled(inputs: ReportInputs, progress: bool = False) -> Plot:
        with matplotlib.rc_context(STYLE):
            return build(inputs, progress)
    return styled


def _figure(width: float, height: float) -> Figure:
    """A figure of its printed size in inches (`COLUMN` or `PAGE` wide): its point sizes are the printed ones."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _plot(name: str, title: str, caption: str, fig: Figure, files: dict[str, bytes] | None = None,
          html: str = "") -> Plot:
    """The figure rendered as SVG (vector, text as paths) and as a `PNG_DPI` PNG; `files`: data files to write
    beside them; `html`: what the report shows under the caption."""
    svg, png = io.BytesIO(), io.BytesIO()
    fig.savefig(svg, format="svg", metadata={"Date": None})  # no date: the same run gives the same bytes
    fig.savefig(png, format="png", dpi=PNG_DPI)
    return Plot(name, title, caption, svg.getvalue(), png.getvalue(), fig, files or {}, html)


def _legend_columns(width: float, labels: list[str]) -> int:
    """How many legend entries fit side by side in `width` inches: handle and gaps ~4 em, ~0.6 em a character."""
    per_entry = (4 + 0.6 * max(len(str(label)) for label in labels)) * STYLE["legend.fontsize"] / 72
    return max(1, min(len(labels), int(width / per_entry)))


def _legend_height(width: float, labels: list[str], title: bool = False) -> float:
    """Inches that `_legend_below` takes under the axes of a figure `width` inches wide."""
    return 0.2 + 0.2 * (math.ceil(len(labels) / _legend_columns(width, labels)) + title)


def _legend_below(fig: Figure, handles: list, labels: list[str] | None = None, title: str | None = None) -> None:
    """The legend under the axes, outside every data area (constrained layout makes room for it)."""
    labels = labels if labels is not None else [h.get_label() for h in handles]
    fig.legend(handles, labels, loc="outside lower center", ncols=_legend_columns(fig.get_figwidth(), labels),
               title=title, frameon=False)


def _short(text: str, width: int) -> str:
    """`text` cut to `width` characters, an ellipsis in the middle (both ends of a file name tell most)."""
    text = str(text)
    if len(text) <= width:
        return text
    keep = width - 1
    return text[:(keep + 1) // 2] + "\u2026" + text[len(text) - keep // 2:]


def _line(prediction: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """Least-squares line label ~ a + b * prediction (b = 0 when the prediction is constant)."""
    if np.ptp(prediction) == 0:
        return float(np.mean(label)), 0.0
    b, a = np.polyfit(prediction, label, 1)
    return float(a), float(b)


def _label_axis(run: Run, jittered: bool = False) -> str:
    notes = [note for note, applies in (("lower = better", not run.summary["source"]["higher_better"]),
                                        ("jittered", jittered)) if applies]
    return "human score" + (f"\n({', '.join(notes)})" if notes else "")


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
    """(what, value) lines of what the run used, and only that: its data (a feature table with its hash and
    columns; or a store with the extractors whose features the run read, each with the settings the store
    computed it with), tabular settings, wall times, machine, library versions."""
    import os
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def package(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    s = inputs.run.summary
    origin = s["source"].get("origin") or {}
    dense = s["source"].get("dense") or {}
    features = f"{len(s['columns'])} scalar column(s)" + (
        "; dense blocks " + ", ".join(f"{b} ({n} values)" for b, n in sorted(dense.items())) if dense else "")
    if origin.get("kind") == "store":
        # run.json's `extractors` are the ones whose features the run read; config.json holds their settings
        used = s.get("extractors") or {}
        recorded = (inputs.run.config.get("input") or {}).get("extractors") or {}
        lines = [("feature store", str((inputs.origin or {}).get("root") or s.get("store", "-"))),
                 ("extractors used (store folder = name-v<version>-<config hash>)",
                  ", ".join(v["folder"] for _, v in sorted(used.items())) or "-"),
                 *((f"settings of {name}", json.dumps(recorded.get(name) or {}, sort_keys=True, default=str))
                   for name in sorted(used))]
        data = [("duckdb", package("duckdb"))]
    else:
        lines = [("feature table", f"{origin.get('path', s['source']['source'])} (sha256 {origin.get('sha256', '-')})"),
                 ("label, group columns", f"{origin.get('label', '-')}, {origin.get('group', '-')}"
                  + (" (lower = better)" if origin.get("lower_better") else ""))]
        data = []
    fit = inputs.run.leaderboard.set_index("model")["fit_seconds"] if "fit_seconds" in inputs.run.leaderboard else {}
    software = [("Python", platform.python_version()), ("siqa", package("siqa")), ("torch", package("torch")), *data,
                ("scikit-learn", package("scikit-learn")), ("lightgbm", package("lightgbm")),
                ("catboost", package("catboost"))]
    lines += [("features the run was fit on", features),
              ("tabular settings",
               f"preset {s['preset']}, {s['folds']} folds x {s['repeats']} repeat(s), seed {s['seed']}"),
              ("wall time of siqa oof", f"{s.get('seconds', float('nan')):.1f} s"),
              ("fit time per member (nested + refit)", ", ".join(f"{m} {v:.1f}s" for m, v in dict(fit).items())),
              # what writes the report: run.json does not record where `siqa oof` ran
              ("machine", f"{platform.node()}: {platform.machine()}, {os.cpu_count()} CPU(s), {platform.platform()} "
                          "(where this report was written)"),
              ("software", ", ".join(f"{name} {v}" for name, v in software) + " (that wrote this report)")]
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

@_section
def plot_scatter(inputs: ReportInputs, progress: bool = False) -> Plot:
    board = _board(inputs.run)
    top = [m for m in board.index if m in inputs.members][:SCATTER_MEMBERS]
    models = [HEADLINE] + top
    cols = min(len(models), 2)
    nrows = math.ceil(len(models) / cols)
    label = inputs.rows["label"].to_numpy()
    integer = bool(np.all(np.equal(np.mod(label, 1), 0)))
    shown = label + (np.random.default_rng(0).uniform(-JITTER, JITTER, label.size) if integer else 0.0)
    kind = _distortion_column(inputs.rows)
    kinds = sorted(inputs.rows[kind].dropna().astype(str).unique()) if kind else []
    palette = dict(zip(kinds, _colours(len(kinds))))
    width = PAGE if cols == 2 else COLUMN
    legend = [*kinds, "least squares", "4-parameter logistic"]
    fig = _figure(width, 3.3 * nrows + _legend_height(width, legend, title=bool(kinds)))
    axes = []
    for i, model in enumerate(models):
        ax = fig.add_subplot(nrows, cols, i + 1, sharey=axes[0] if axes else None)
        axes.append(ax)
        pred = inputs.rows[model].to_numpy()
        if kinds:
            for value in kinds:
                mask = (inputs.rows[kind].astype(str) == value).to_numpy()
                ax.scatter(pred[mask], shown[mask], s=12, alpha=0.75, edgecolors="none", color=palette[value],
                           label=value)
        else:
            ax.scatter(pred, shown, s=10, alpha=0.6, edgecolors="none")
        a, b = _line(pred, label)
        xs = np.linspace(pred.min(), pred.max(), 200)
        ax.plot(xs[[0, -1]], a + b * xs[[0, -1]], color="crimson", lw=1.3, ls="--", label="least squares")
        params = metrics.fit_logistic4(pred, label)
        if params is not None:
            ax.plot(xs, metrics.logistic4(xs, *params), color="black", lw=1.6, label="4-parameter logistic")
        row = board.loc[model]
        ax.set_title(f"{model}\nFinal {row['final']:.4f}, SROCC {row['srocc']:.3f}\nPLCC {row['plcc']:.3f}, "
                     f"after logistic {metrics.plcc_after_logistic(pred, label):.3f}")
        ax.set_xlabel("prediction (0..5)" if model == HEADLINE else "prediction (target scale)")
        if i % cols == 0:
            ax.set_ylabel(_label_axis(inputs.run, jittered=integer))
        else:
            ax.tick_params(labelleft=False)
        ax.grid(alpha=0.3)
    # the labels fill the height; a fitted line leaving that range is cut at the edge
    margin = 0.06 * max(float(np.ptp(shown)), 1e-9)
    axes[0].set_ylim(float(shown.min()) - margin, float(shown.max()) + margin)
    handles, labels = axes[0].get_legend_handles_labels()
    _legend_below(fig, handles, labels, title=kind if kinds else None)
    return _plot("scatter", "Predicted vs human score",
                 "Out-of-fold predictions (mean over repeats) of the calibrated blend and the best pool members; "
                 "dashed red: least-squares line; black: the monotonic 4-parameter logistic fit IQA papers apply "
                 "before PLCC (titles give PLCC before and after it; leaderboard PLCC is the plain one)"
                 + (f"; colour: {kind}" if kinds else "") +
                 (f"; integer labels jittered by up to ±{JITTER} for visibility (fits use the true labels)"
                  if integer else "") + ".", fig)


def fold_finals(inputs: ReportInputs) -> pd.DataFrame:
    """Final of every model inside every (repeat, outer fold): rows = folds, columns = models."""
    oof = inputs.run.oof()
    models = inputs.members + ["blend", HEADLINE]
    out = {}
    for (repeat, fold), part in oof.groupby(["repeat", "fold"]):
        out[f"r{repeat}f{fold}"] = {m: metrics.final(part[m], part["target"]) for m in models}
    return pd.DataFrame(out).T


def _whiskers(board: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, str, str]:
    """(low, high, legend entry, caption words) of each model's Final: the run's 95% group-bootstrap interval,
    or (runs of an older siqa) Final ± its std over repeats; NaN where neither exists."""
    if {"final_low", "final_high"} <= set(board.columns) and board[["final_low", "final_high"]].notna().all().all():
        return (board["final_low"].to_numpy(float), board["final_high"].to_numpy(float),
                "95% group-bootstrap interval", "95% interval of Final over tables resampled by reference group")
    std = board["final_std"].to_numpy(float)
    return (board["final"].to_numpy(float) - std, board["final"].to_numpy(float) + std, "± std over repeats",
            "Final ± its std over repeats")


@_section
def plot_leaderboard(inputs: ReportInputs, progress: bool = False) -> Plot:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    board = _board(inputs.run)
    per_fold = fold_finals(inputs)
    order = list(board.index)[::-1]  # best on top
    final = board.loc[order, "final"].to_numpy(float)
    low, high, entry, whisker = _whiskers(board.loc[order])
    handles = [Patch(color="#d95f02", alpha=0.8, label="blend (raw / calibrated)"),
               Patch(color="#1b9e77", alpha=0.8, label="pool member"),
               Line2D([], [], marker="o", ls="", color="#333333", markersize=4, label="Final in one outer fold"),
               Line2D([], [], marker="|", ls="-", color="black", markersize=8, label=entry)]
    fig = _figure(PAGE, 0.9 + 0.24 * len(order) + _legend_height(PAGE, [h.get_label() for h in handles]))
    ax = fig.add_subplot()
    y = np.arange(len(order))
    colors = ["#d95f02" if m in ("blend", HEADLINE) else "#1b9e77" for m in order]
    ax.barh(y, final, color=colors, alpha=0.8, height=0.7)
    ok = np.isfinite(low) & np.isfinite(high)
    ax.errorbar(final[ok], y[ok], xerr=[final[ok] - low[ok], high[ok] - final[ok]], fmt="none", ecolor="black",
                capsize=3, lw=1)
    for i, model in enumerate(order):
        # the fold dots in the bar's upper half, the whisker through its middle: neither hides the other
        ax.scatter(per_fold[model], np.full(len(per_fold), i + 0.2), s=9, color="#333333", zorder=3)
        # the value beside the axes, in a column of its own: never over a bar, a dot or a whisker
        ax.text(1.01, i, f"{final[i]:.4f}", transform=ax.get_yaxis_transform(), va="center")
    ax.set_yticks(y, order)
    ax.set_ylim(-0.6, len(order) - 0.4)
    values = np.r_[per_fold[order].to_numpy().ravel(), final, low[ok], high[ok]]
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    margin = 0.05 * max(hi - lo, 0.01)
    ax.set_xlim(lo - margin, min(hi + margin, 1.0 + margin))  # from the weakest model, not 0
    ax.set_xlabel("Final = 0.6 SROCC + 0.4 PLCC (axis does not start at 0)")
    ax.grid(axis="x", alpha=0.3)
    _legend_below(fig, handles)
    return _plot("leaderboard", "Leaderboard with fold spread",
                 f"Bars: out-of-fold Final (mean over {inputs.run.summary['repeats']} repeat(s)), its value at the "
                 f"right; whiskers: {whisker}. Dots: Final inside each outer fold of each repeat ({len(per_fold)} "
                 f"in all).", fig)


@_section
def plot_blend_weights(inputs: ReportInputs, progress: bool = False) -> Plot:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    blend = inputs.run.summary["blend"]
    weights = pd.Series(blend["weights"], dtype=float).reindex(inputs.members).fillna(0.0)
    nested = pd.DataFrame([b["weights"] for b in inputs.run.summary.get("nested_blends", [])]).reindex(
        columns=inputs.members).fillna(0.0)
    handles = [Patch(color="#7570b3", alpha=0.8, label="final blender")]
    if len(nested):
        handles.append(Line2D([], [], marker="o", ls="", color="black", markersize=4,
                              label="nested blender of one fold"))
    fig = _figure(COLUMN, 0.9 + 0.24 * len(weights) + _legend_height(COLUMN, [h.get_label() for h in handles]))
    ax = fig.add_subplot()
    y = np.arange(len(weights))
    ax.barh(y, weights.to_numpy(), color="#7570b3", alpha=0.8, height=0.7)
    # one row of dots per fold, spread over the bar's height: equal weights of several folds stay apart
    spread = np.linspace(-0.22, 0.22, len(nested)) if len(nested) > 1 else np.zeros(len(nested))
    for i, member in enumerate(weights.index):
        if len(nested):
            ax.scatter(nested[member], i + spread, s=9, color="black", zorder=3, clip_on=False)
        ax.text(1.02, i, f"{weights[member]:.2f}", transform=ax.get_yaxis_transform(), va="center")
    ax.set_yticks(y, [_short(m, 24) for m in weights.index])
    ax.set_ylim(-0.6, len(weights) - 0.4)
    ax.set_xlim(-0.03, 1.03)
    ax.set_xlabel("weight")
    ax.grid(axis="x", alpha=0.3)
    _legend_below(fig, handles)
    scores = ", ".join(f"{k} {v:.4f}" for k, v in (blend.get("inner_cv") or {}).items())
    return _plot("blend_weights", "Blend weights",
                 f"Method chosen: {blend['method']}" + (f" (inner-CV Final: {scores})" if scores else "") +
                 ". Bars: weights of the final blender (value at the right); dots: weights of the blender fit inside "
                 "each outer fold, one row of dots per fold.", fig)


def feature_importance(inputs: ReportInputs, progress: bool = False) -> pd.DataFrame:
    """Per feature (index), sorted by gain: `gain` (share of the LightGBM gain summed over the fold models),
    `gain_fold_<k>` (share of the gain of the model fit without outer fold k), `permutation` and
    `permutation_std` (mean and std over `PERMUTATION_REPEATS` shuffles of the drop in the pooled out-of-fold
    Final when the feature is shuffled within each held-out fold; NaN when not measured). attrs: `base_final`
    (the refits' pooled out-of-fold Final) and `folds`."""
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

    models, tests, gains = {}, {}, {}
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
        gains[k] = pd.Series(model.booster_.feature_importance("gain"), index=Xtr.columns, dtype=float)
    per_fold = pd.DataFrame(gains).fillna(0.0)
    gain = per_fold.sum(axis=1)
    out = pd.DataFrame({"gain": gain / gain.sum() if gain.sum() > 0 else gain})
    for k in folds:
        total = per_fold[k].sum()
        out[f"gain_fold_{k}"] = per_fold[k] / total if total > 0 else per_fold[k]
    out["permutation"] = np.nan
    out["permutation_std"] = np.nan

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
    ranked = out.sort_values("gain", ascending=False, kind="mergesort")
    candidates = list(ranked.index[ranked["gain"] > 0][:PERMUTED_FEATURES])
    rng = np.random.default_rng(int(settings["seed"]))
    for feature in tqdm(candidates, desc="permutation importance", unit="feature", disable=not progress, leave=False):
        drops = base - np.array([pooled_final(feature, rng) for _ in range(PERMUTATION_REPEATS)])
        out.loc[feature, "permutation"] = float(np.mean(drops))
        out.loc[feature, "permutation_std"] = float(np.std(drops, ddof=1)) if drops.size > 1 else np.nan
    out = out.loc[ranked.index]
    out.index.name = "feature"
    out.attrs.update(base_final=base, folds=[int(k) for k in folds])
    return out


def importance_files(importance: pd.DataFrame) -> dict[str, bytes]:
    """`importance.csv` (one row per feature, the columns of `feature_importance`) and `importance.json` (the
    same numbers, what each column means, and how they were made): the numbers behind the importance plot."""
    meaning = {
        "gain": "share of the LightGBM split gain, summed over the fold models (sums to 1 over the features)",
        "gain_fold_<k>": "share of the gain of the model fit without outer fold k (first repeat)",
        "permutation": f"mean over {PERMUTATION_REPEATS} shuffles of the drop in the refits' pooled out-of-fold "
                       f"Final when the feature is shuffled within each held-out fold; empty: not shuffled (no "
                       f"gain, or not among the {PERMUTED_FEATURES} features with the most gain)",
        "permutation_std": "standard deviation (ddof 1) of that drop over the shuffles"}
    frame = importance.reset_index()
    document = {"what": "feature importance of a LightGBM refit once per outer fold (first repeat) on the run's "
                        "scalar features, dense blocks as out-of-fold Ridge meta-features (meta_<block>)",
                "base_final": importance.attrs["base_final"], "folds": importance.attrs["folds"],
                "permutation_repeats": PERMUTATION_REPEATS, "columns": meaning,
                "features": [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                              for k, v in row.items()} for row in frame.to_dict(orient="records")]}
    return {"importance.csv": frame.to_csv(index=False, float_format="%.10g").encode(),
            "importance.json": (json.dumps(document, indent=1) + "\n").encode()}


@_section
def plot_importance(inputs: ReportInputs, progress: bool = False) -> Plot:
    if inputs.data is None:
        raise SectionSkipped(f"Feature importance left out: {inputs.data_problem}")
    importance = feature_importance(inputs, progress)
    by_gain = importance.sort_values("gain", ascending=False, kind="mergesort").head(TOP_FEATURES)[::-1]
    measured = importance.dropna(subset=["permutation"])
    by_perm = measured.sort_values("permutation", ascending=False, kind="mergesort").head(TOP_FEATURES)[::-1]
    n = max(len(by_gain), len(by_perm), 1)
    fig = _figure(PAGE, 1.0 + 0.19 * n)
    for i, (frame, column, title, axis, color) in enumerate((
            (by_gain, "gain", "GBDT gain", "share of the total gain", "#1b9e77"),
            (by_perm, "permutation", "permutation", "drop in out-of-fold\nFinal (± std)", "#d95f02"))):
        ax = fig.add_subplot(1, 2, i + 1)
        error = frame["permutation_std"].fillna(0.0).to_numpy() if column == "permutation" else None
        ax.barh(np.arange(len(frame)), frame[column], xerr=error, color=color, alpha=0.85, height=0.7,
                error_kw={"ecolor": "black", "lw": 0.8, "capsize": 2})
        ax.set_yticks(np.arange(len(frame)), [_short(f, IMPORTANCE_LABEL) for f in frame.index])
        ax.set_ylim(-0.6, n - 0.4)
        ax.set_title(title)
        ax.set_xlabel(axis)
        ax.grid(axis="x", alpha=0.3)
    shown = importance.loc[list(dict.fromkeys([*by_gain.index[::-1], *by_perm.index[::-1]]))]
    table = shown[["gain", "permutation", "permutation_std"]].reset_index()
    return _plot("importance", f"Feature importance (top {TOP_FEATURES})",
                 f"A LightGBM refit once per outer fold (first repeat) on the run's scalar features, dense blocks as "
                 f"out-of-fold Ridge meta-features (meta_*); its pooled out-of-fold Final is "
                 f"{importance.attrs['base_final']:.4f}. Gain is summed over the fold models. Permutation: the "
                 f"{min(PERMUTED_FEATURES, int((importance['gain'] > 0).sum()))} features with the most gain are "
                 f"shuffled within each held-out fold ({PERMUTATION_REPEATS} shuffles; whiskers: their std). "
                 f"Every feature's numbers, per fold too: report/importance.csv and importance.json.", fig,
                 files=importance_files(importance),
                 html=f"<details><summary>The numbers of the plotted features</summary>{_table(table)}</details>")


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


@_section
def plot_split_histograms(inputs: ReportInputs, progress: bool = False) -> Plot:
    from matplotlib.patches import Patch

    scores, problem = split_scores(inputs)
    human, predicted = "#7570b3", "#d95f02"
    handles = [Patch(color=human, alpha=0.5, label="human score"), Patch(color=predicted, alpha=0.5, label="predicted")]
    # one panel per split, stacked on a shared score axis: each keeps a histogram's aspect, not a strip's
    fig = _figure(COLUMN, 0.8 + 1.45 * len(scores) + _legend_height(COLUMN, [h.get_label() for h in handles]))
    bins = np.linspace(0, 5, 26)
    axes = fig.subplots(len(scores), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (split, values) in zip(axes, scores.items()):
        if len(values["label"]):
            ax.hist(np.clip(values["label"], 0, 5), bins=bins, alpha=0.5, color=human)
        ax.hist(np.clip(values["prediction"], 0, 5), bins=bins, alpha=0.5, color=predicted)
        ax.set_title(f"{split}: {len(values['label'])} labelled, {len(values['prediction'])} scored", loc="left")
        ax.set_ylabel("pairs")
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xlabel("score (0..5, higher = better)")
    axes[-1].set_xlim(0, 5)
    _legend_below(fig, handles)
    return _plot("split_histograms", "Scores per split",
                 "Train: labels and out-of-fold calibrated blend. Other splits: scores of the run's fitted pipeline, "
                 "with labels where the split has them. Labels are mapped to 0..5 (higher = better) by the run's "
                 "label scale." +
                 (f" Other splits not shown: {problem}" if problem else ""), fig)


def group_finals(rows: pd.DataFrame, column: str, draws: int = 0) -> pd.DataFrame:
    """Final of the calibrated blend inside each value of `column` (values with too few rows are left out),
    worst first. With `draws`, also `low` and `high`: the 95% bootstrap interval of that Final, resampling
    the value's reference groups where it spans several (a distortion type) and its pairs otherwise (one
    reference image)."""
    out = []
    for value, part in rows.dropna(subset=[column]).groupby(column):
        if len(part) >= MIN_GROUP_ROWS and part["target"].nunique() > 1:
            entry = {column: value, "n": len(part), "final": metrics.final(part[HEADLINE], part["target"])}
            if draws:
                units = part["group"] if part["group"].nunique() > 1 else np.arange(len(part))
                sets = [drawn for drawn, _ in metrics.group_bootstrap_draws(units, draws)]
                finals = metrics.finals_on([part[HEADLINE].to_numpy()], part["target"], sets)
                entry["low"], entry["high"] = np.nanpercentile(finals, [2.5, 97.5])
            out.append(entry)
    columns = [column, "n", "final"] + (["low", "high"] if draws else [])
    return pd.DataFrame(out, columns=columns).sort_values("final", kind="mergesort").reset_index(drop=True)


@_section
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
    # intervals where each group's bar is drawn (a histogram of many groups needs none)
    tables = {c: group_finals(rows, c, GROUP_DRAWS) if len(t) <= MAX_GROUP_BARS else t for c, t in tables.items()}
    # the distortion panels stacked in the left column, per reference in the right one (one panel: one column)
    *left, right = tables
    stacks = [left, [right]] if left else [[right]]
    # panel heights in units of one bar (0.22 in), plus 3.5 for its title and axis: every bar equally thick
    units = {c: min(len(t), MAX_GROUP_BARS) + 3.5 for c, t in tables.items()}
    tallest = max(sum(units[c] for c in stack) for stack in stacks)
    height = 0.22 * tallest
    fig = _figure(PAGE if left else COLUMN, height + 0.2)
    grid = fig.add_gridspec(1, len(stacks))
    drawn = pd.concat([t for t in tables.values() if len(t) <= MAX_GROUP_BARS] or [pd.DataFrame()])
    span = (np.nanmin(drawn[["low", "final"]].to_numpy()), np.nanmax(drawn[["high", "final"]].to_numpy())) \
        if len(drawn) else None
    for g, stack in enumerate(stacks):
        ratios = [units[c] for c in stack]
        # a shorter column ends in empty space rather than stretching its bars
        cells = grid[g].subgridspec(len(stack) + 1, 1, height_ratios=[*ratios, tallest - sum(ratios) + 1e-6])
        for k, name in enumerate(stack):
            table, ax = tables[name], fig.add_subplot(cells[k])
            if len(table) > MAX_GROUP_BARS:
                ax.hist(table["final"], bins=20, color="#1b9e77", alpha=0.8)
                ax.set_xlabel("Final inside one group")
                ax.set_ylabel("groups")
            else:
                y = np.arange(len(table))
                final = table["final"].to_numpy()
                ax.barh(y, final, color="#1b9e77", alpha=0.8, height=0.7)
                whiskers = [np.clip(final - table["low"], 0, None), np.clip(table["high"] - final, 0, None)]
                ax.errorbar(final, y, xerr=whiskers, fmt="none", ecolor="black", capsize=2, lw=0.9)
                ax.set_yticks(y, [f"{_short(v, 22)} ({n})" for v, n in zip(table[name], table["n"])])
                ax.set_ylim(-0.6, len(table) - 0.4)
                ax.axvline(0, color="#555555", lw=0.8)
                margin = 0.04 * (span[1] - span[0])
                ax.set_xlim(span[0] - margin, span[1] + margin)  # one scale for every panel: comparable bars
                ax.set_xlabel("Final, 95% interval")
            ax.set_title(f"per {name}")
            ax.grid(axis="x", alpha=0.3)
    return _plot("groups", "Final per group",
                 "Final of the out-of-fold calibrated blend inside each group (number of pairs in brackets; groups "
                 f"with fewer than {MIN_GROUP_ROWS} pairs or one label value are left out). Whiskers: the 95% "
                 f"interval over {GROUP_DRAWS} bootstrap resamples of the group (of its reference images where it "
                 "spans several, of its pairs inside one reference): with a handful of pairs a group's Final is "
                 "mostly noise. Within one reference the question is whether the ranking of its degraded versions "
                 "is right.", fig)


def worst_pairs(rows: pd.DataFrame, n: int = WORST_PAIRS) -> pd.DataFrame:
    """Pairs furthest from the least-squares line label ~ calibrated blend (same rule as SQL `worst_pairs`)."""
    a, b = _line(rows[HEADLINE].to_numpy(), rows["label"].to_numpy())
    out = rows.assign(prediction=rows[HEADLINE], fitted=a + b * rows[HEADLINE])
    out["residual"] = out["label"] - out["fitted"]
    order = np.lexsort((out["id"].to_numpy(), -out["residual"].abs().to_numpy()))
    return out.iloc[order[:n]].reset_index(drop=True)


def _thumbnail(image: np.ndarray | str, size: int = THUMBNAIL) -> np.ndarray | None:
    """An image (or the file at a path, as the store decodes it: orientation, decode limits) at most
    `size` x `size`; None if the file does not decode."""
    from PIL import Image

    from featurestore.io import read_rgb

    if isinstance(image, str):
        try:
            image = read_rgb(image, max_pixels=2 * size * 2 * size)
        except SiqaError:
            return None
    image = np.asarray(image)
    # a map in [0, 1] is resampled as 32-bit floats (mode F), a photo as 8-bit RGB
    img = Image.fromarray(image if image.dtype == np.uint8 else image.astype(np.float32))
    img.thumbnail((size, size))
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


def _pair_text(rank: int, row, distortion: str | None, explained) -> str:
    """The lines beside one worst pair: which pair, its label, prediction and residual, and the top three
    attributions of its score."""
    what = getattr(row, distortion) if distortion else None
    lines = [f"#{rank} {_short(row.name, 24)}"] + ([_short(what, 27)] if isinstance(what, str) else [])
    lines += [f"label {row.label:.2f}, predicted {row.prediction:.2f}", f"residual {row.residual:+.2f}"]
    if explained is not None:
        a = explained.attribution
        lines.append(f"score {a.score:.2f} = {a.baseline:.2f} (baseline)")
        lines += [f"  {_short(group, 18)} {value:+.2f}" for group, value in a.top(3)]
    return "\n".join(lines)


@_section
def plot_worst(inputs: ReportInputs, progress: bool = False) -> Plot:
    import textwrap

    worst = worst_pairs(inputs.rows)
    if not ({"ref_path", "dist_path"} <= set(worst.columns) and worst["dist_path"].notna().any()):
        raise SectionSkipped("Thumbnails of the worst pairs left out: the run's source has no image paths.")
    explanations, problem = _worst_explanations(inputs, worst, progress)
    # one pair per row: reference | degraded | where its meaning changed | what the pair is and scored
    distortion = next((c for c in DISTORTION_COLUMNS if c in worst.columns and worst[c].notna().any()), None)
    fig = _figure(PAGE, 0.3 + 1.6 * len(worst))
    grid = fig.add_gridspec(len(worst), 4, width_ratios=[1, 1, 1, 1.45])
    for i, row in enumerate(worst.itertuples()):
        explained = explanations.get(row.id)
        for j, path in enumerate((row.ref_path, row.dist_path)):
            ax = fig.add_subplot(grid[i, j])
            ax.set_axis_off()
            image = _thumbnail(path) if isinstance(path, str) else None
            if image is None:
                ax.text(0.5, 0.5, "image\nnot found", ha="center", va="center")
            else:
                ax.imshow(image)
            if i == 0:
                ax.set_title(("reference", "degraded")[j])
        ax = fig.add_subplot(grid[i, 2])
        ax.set_axis_off()
        if i == 0:
            ax.set_title("meaning changed")
        if explained is None:
            ax.text(0.5, 0.5, textwrap.fill(problem or "no map", 16), ha="center", va="center")
        else:
            # the map and its image at thumbnail size (the SVG holds every image at its own resolution)
            dist = _thumbnail(explained.pair.dist.rgb)
            values = _thumbnail(explained.map.values)
            ax.imshow(dist)
            ax.imshow(values, cmap="inferno", alpha=0.6, vmin=0.0, vmax=max(float(values.max()), 1e-6),
                      extent=(-0.5, dist.shape[1] - 0.5, dist.shape[0] - 0.5, -0.5))
            x, y = explained.map.peak
            scale = dist.shape[1] / explained.map.values.shape[1]
            ax.plot((x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5, marker="+", color="cyan", markersize=10,
                    markeredgewidth=2)
        ax = fig.add_subplot(grid[i, 3])
        ax.set_axis_off()
        ax.text(0.0, 0.5, _pair_text(i + 1, row, distortion, explained), va="center", ha="left",
                linespacing=1.15)
    return _plot("worst_pairs", f"The {len(worst)} worst-predicted pairs",
                 "Reference | degraded | where the meaning changed (`siqa explain`'s semantic difference map, peak "
                 "marked), sorted by distance from the least-squares line of the scatter plot (out-of-fold "
                 "calibrated blend); residual = label - line, so > 0 means the pair was scored too low. Beside each "
                 "pair: the fitted run's score of the pair split into a baseline and the three feature groups "
                 "that moved it most (exact Shapley values; the refit pipeline's score, not the out-of-fold "
                 "prediction)." + (f" ({problem})" if problem else ""), fig)


# --- html ---------------------------------------------------------------------------------------------

CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;padding:0 16px;
max-width:1280px;color:#222;box-sizing:border-box}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee}.caption{color:#555;font-size:.9em;max-width:1000px}.note{color:#a33}
.warning{color:#b00;font-weight:bold}.prov td{text-align:left}"""


def _img(plot: Plot) -> str:
    """The plot's SVG, embedded, shown `SCREEN_ZOOM` times its printed size (vector: sharp at any zoom)."""
    width = round(plot.figure.get_figwidth() * 96 * SCREEN_ZOOM)
    return (f'<img alt="{html.escape(plot.title)}" width="{width}" '
            f'src="data:image/svg+xml;base64,{base64.b64encode(plot.svg).decode()}">')


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
        parts += [f"<h2 id='{plot.name}'>{html.escape(plot.title)}</h2>", _img(plot),
                  f"<p class='caption'>{html.escape(plot.caption)}</p>", plot.html]
    columns = [c for c in ("name", "split", "reference", *DISTORTION_COLUMNS, "id", "label", "prediction", "fitted",
                           "residual") if c in worst.columns]
    for key, name, body in tables:
        parts += [f"<h2 id='{key}'>{html.escape(name)}</h2>", body]
    parts += ["<h2>Worst-predicted pairs (table)</h2>", _table(worst[columns]), "</body></html>"]
    return "\n".join(parts)


SECTIONS = (plot_scatter, plot_leaderboard, plot_blend_weights, plot_importance, plot_split_histograms,
            plot_groups, plot_worst)


def make_plots(inputs: ReportInputs, progress: bool = False) -> tuple[list[Plot], list[str]]:
    """The plots of every section the run can show, and a note for each it cannot."""
    plots: list[Plot] = []
    notes: list[str] = []
    for section in tqdm(SECTIONS, desc="report", unit="section", disable=not progress):
        try:
            plots.append(section(inputs, progress))
        except SectionSkipped as skipped:
            notes.append(str(skipped))
    return plots, notes


def write_report(run_dir, progress: bool = False, store=None) -> Path:
    """Write RUN/report.html, and RUN/report/<plot>.svg and .png (plus the data files of a plot) for a finished
    run (reading its own store unless `store` says otherwise); returns the HTML path."""
    inputs = _load_inputs(load_run(run_dir), store)
    plots, notes = make_plots(inputs, progress)
    folder = inputs.run.path / "report"
    out = inputs.run.path / "report.html"
    files = {}
    for plot in plots:
        files.update({folder / f"{plot.name}.svg": plot.svg, folder / f"{plot.name}.png": plot.png,
                      **{folder / name: data for name, data in plot.files.items()}})
    products = [out, *files]
    if folder.is_symlink():  # its plots would land, and stale ones be deleted, wherever it points
        raise SiqaError(f"{folder}: is a symbolic link; the report writes its plots only inside the run folder "
                        f"- remove the link")
    for path in products:  # all of them, before a first file is replaced
        check_target(path, products=products)
    folder.mkdir(exist_ok=True)
    # a section skipped now must not leave last run's plot (nor its data files)
    old = {p for p in folder.iterdir() if p.suffix in FILE_KINDS and (p.is_symlink() or p.is_file())}
    for stale in old - set(files):
        stale.unlink()
    for path, data in files.items():
        write_output(path, data, products=products)
    write_output(out, _html(inputs, plots, notes).encode("utf-8"), products=products)
    return out
