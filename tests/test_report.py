"""The run report: numbers behind the plots, a self-contained HTML file, and that a browser renders it."""
from __future__ import annotations

import base64
import dataclasses
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from toy_run import build_run, toy_extractors  # noqa: F401 (module-scoped autouse fixture)
from blend import report
from blend.run import HEADLINE, load_run
from blend.sql import RUN_EXTENSIONS
from featurestore.sql import connect
from tabular import metrics

STORE_PLOTS = {"scatter", "leaderboard", "blend_weights", "importance", "split_histograms", "groups", "worst_pairs"}


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Path]:
    paths = build_run(tmp_path_factory.mktemp("report"))
    paths["html"] = report.write_report(paths["run"])
    return paths


@pytest.fixture(scope="module")
def table_run(tmp_path_factory) -> Path:
    """A run on a real feature table: CSIQ (DMOS, lower = better), 8 of its 30 references."""
    from blend.run import run_oof
    from tabular.data import TabularData

    tmp = tmp_path_factory.mktemp("table")
    frame = pd.read_csv(Path(__file__).resolve().parents[2] / "shared" / "data" / "tabular" / "csiq.csv")
    frame = frame[frame["image"].isin(sorted(frame["image"].unique())[:8])]
    frame.to_csv(tmp / "csiq8.csv", index=False)
    data = TabularData.from_table(tmp / "csiq8.csv", label="dmos", group="image", lower_better=True)
    config = {"tabular": {"preset": "fast", "pool": {m: {"enabled": False} for m in ("pairwise_mlp", "lightgbm")}}}
    run_oof(data, config, tmp / "run", progress=False)
    return tmp / "run"


def _embedded_svgs(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', text)]


def test_report_is_self_contained_and_matches_its_files(toy):
    html = toy["html"]
    assert html == toy["run"] / "report.html"
    text = html.read_text()
    pngs = {p.stem: p.read_bytes() for p in (toy["run"] / "report").glob("*.png")}
    svgs = {p.stem: p.read_bytes() for p in (toy["run"] / "report").glob("*.svg")}
    assert set(pngs) == set(svgs) == STORE_PLOTS
    embedded = _embedded_svgs(text)
    assert sorted(embedded) == sorted(svgs.values())  # every plot embedded, byte for byte
    # nothing is fetched from elsewhere: no other src, links only to the report's own sections, no scripts
    assert len(re.findall(r"\bsrc=", text)) == len(embedded)
    links = re.findall(r'href="([^"]*)"', text)
    # the toy pairs name no degradation type, so its tables are cost per extractor and provenance
    assert sorted(links) == sorted(f"#{name}" for name in (*STORE_PLOTS, "costs", "provenance"))
    best = load_run(toy["run"]).summary["versus"]["best_member"]["versus"]
    assert f"best member ({best}, picked with hindsight)" in text  # the headline against its members, in words
    assert all(f"id='{link[1:]}'" in text for link in links)
    assert "<script" not in text and "<link" not in text
    summary = load_run(toy["run"]).summary
    assert f"{summary['final']:.4f}" in text
    for png in pngs.values():
        assert Image.open(io.BytesIO(png)).size[0] >= 600


def test_report_tables_logistic_fit_and_headline_warning(toy):
    from blend.run import HEADLINE

    run = load_run(toy["run"])
    inputs = report._load_inputs(run)
    costs = report.extractor_costs(inputs)
    assert sorted(costs["extractor"]) == ["(decoding two images)", "toymean", "toymse"]
    assert (costs["seconds_per_pair"] > 0).all()
    assert dict(report.provenance(inputs))["machine"]
    demo = inputs.rows.assign(degradation=np.where(np.arange(len(inputs.rows)) % 2, "noise", "blur"))
    per_kind = report.degradation_srocc(report.ReportInputs(run, demo, inputs.members, inputs.data))
    assert list(per_kind["degradation"]) == ["all pairs", "blur", "noise"]
    assert per_kind.loc[0, HEADLINE] == pytest.approx(metrics.srocc(demo[HEADLINE], demo["target"]))
    # a logistic through an exact logistic curve recovers it: PLCC after the fit is 1
    x = np.linspace(-3, 3, 40)
    assert metrics.plcc_after_logistic(x, metrics.logistic4(x, 5, 0, 0.5, 0.7)) == pytest.approx(1.0, abs=1e-6)
    board = run.leaderboard.copy()
    worse = board.assign(final=np.where(board["model"] == HEADLINE, -1.0, board["final"]))
    assert "is below its member" in report.headline_warning(dataclasses.replace(run, leaderboard=worse))
    best = board.assign(final=np.where(board["model"] == HEADLINE, 2.0, board["final"]))
    assert report.headline_warning(dataclasses.replace(run, leaderboard=best)) == ""


def test_worst_pairs_agree_between_report_and_sql(toy):
    inputs = report._load_inputs(load_run(toy["run"]))
    ours = report.worst_pairs(inputs.rows, n=5)
    con = connect(toy["store"], extensions=RUN_EXTENSIONS)
    sql = con.execute(f"SELECT * FROM worst_pairs('{toy['run']}', n := 5)").df()
    assert list(sql["id"]) == list(ours["id"])
    np.testing.assert_allclose(sql["residual"], ours["residual"], atol=1e-9)
    # the residual is the distance from the least-squares line of label on the calibrated blend
    x, y = inputs.rows[HEADLINE].to_numpy(), inputs.rows["label"].to_numpy()
    b, a = np.polyfit(x, y, 1)
    residual = y - (a + b * x)
    assert np.abs(ours["residual"]).min() >= np.sort(np.abs(residual))[-5] - 1e-12
    assert sql["name"].notna().all() and sql["dist_path"].map(lambda p: Path(p).is_file()).all()


def test_fold_finals_and_importance(toy):
    inputs = report._load_inputs(load_run(toy["run"]))
    per_fold = report.fold_finals(inputs)
    oof = load_run(toy["run"]).oof()
    part = oof[(oof.repeat == 0) & (oof.fold == 1)]
    assert per_fold.loc["r0f1", "ridge"] == pytest.approx(metrics.final(part["ridge"], part["target"]))
    importance = report.feature_importance(inputs)
    assert importance["gain"].sum() == pytest.approx(1.0)
    assert "meta_toymean_absdiff" in importance.index  # the dense block enters as its Ridge meta-feature
    # labels fall with the noise level, which the MSE measures: it must matter most when shuffled
    assert importance["permutation"].idxmax() == "toymse_mse"
    assert importance.loc["toymse_mse", "permutation"] > 0.1


def test_group_finals():
    rng = np.random.default_rng(0)
    target = rng.normal(size=12)
    rows = pd.DataFrame({"g": ["good"] * 5 + ["reversed"] * 5 + ["tiny"] * 2, "target": target,
                         HEADLINE: np.r_[target[:5] * 2 + 1, -target[5:10], target[10:]]})
    table = report.group_finals(rows, "g").set_index("g")
    assert list(table.index) == ["reversed", "good"]  # worst first; a 2-pair group says nothing
    assert table.loc["good", "final"] == pytest.approx(1.0)
    assert table.loc["reversed", "final"] == pytest.approx(-1.0)


def test_report_on_a_table_run(table_run):
    html = report.write_report(table_run)
    text = html.read_text()
    plots = {p.stem for p in (table_run / "report").glob("*.png")}
    # no images behind a feature table: no thumbnails, but the worst pairs are listed; CSIQ names distortions
    assert plots == STORE_PLOTS - {"worst_pairs"}
    assert "Thumbnails of the worst pairs left out" in text
    inputs = report._load_inputs(load_run(table_run))
    per_type = report.group_finals(inputs.rows, "dst_type")
    assert set(per_type["dst_type"]) == {"AWGN", "BLUR", "JPEG", "contrast", "fnoise", "jpeg2000"}
    assert (per_type["final"] > 0).all()  # DMOS is lower-better: the target orientation makes Final positive
    assert len(_embedded_svgs(text)) == len(plots)


def test_cli_oof_ends_with_the_report(toy, tmp_path, capsys):
    from cli import main

    run = tmp_path / "run"
    main(["oof", "--store", str(toy["store"]), "--config", str(toy["config"]), "--run", str(run), "--quiet"])
    out = capsys.readouterr()
    assert out.out.strip().splitlines()[-1] == f"report -> {run / 'report.html'}"
    assert (run / "report.html").is_file() and (run / "report" / "scatter.png").is_file()
    assert "report:" not in out.err  # --quiet: no progress bar


def test_cli_report(toy, capsys):
    from cli import main

    main(["report", "--run", str(toy["run"]), "--quiet"])
    out = capsys.readouterr()
    assert out.out.strip() == f"report -> {toy['run'] / 'report.html'}"
    assert out.err == ""  # --quiet: no progress bar


def test_report_renders_in_headless_chromium(toy, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium; .ci/run installs it)")
    shot = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
                    toy["html"].resolve().as_uri()],
                   check=True, capture_output=True, timeout=180)
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape == (2000, 1280, 3)
    # rendered, not blank: the plots put many coloured (non-grey) pixels on screen
    colour = (image.max(axis=2).astype(int) - image.min(axis=2)) > 60
    assert colour.mean() > 0.02
    print(f"screenshot: {shot}")


# --- a figure set a paper can use --------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy_plots(toy) -> dict[str, report.Plot]:
    plots, notes = report.make_plots(report._load_inputs(load_run(toy["run"])))
    assert notes == []
    return {plot.name: plot for plot in plots}


@pytest.fixture(scope="module")
def table_plots(table_run) -> dict[str, report.Plot]:
    plots, _ = report.make_plots(report._load_inputs(load_run(table_run)))
    return {plot.name: plot for plot in plots}


def _all_plots(toy_plots, table_plots):
    return [*toy_plots.values(), *table_plots.values()]


def test_every_plot_is_written_as_svg_and_300_dpi_png(toy, toy_plots):
    from xml.etree import ElementTree

    folder = toy["run"] / "report"
    for name, plot in toy_plots.items():
        width, height = plot.figure.get_size_inches()
        svg = ElementTree.fromstring((folder / f"{name}.svg").read_bytes())
        assert svg.tag == "{http://www.w3.org/2000/svg}svg"
        assert float(svg.get("width").removesuffix("pt")) == pytest.approx(72 * width)  # printed size, vector
        assert not svg.findall(".//{http://www.w3.org/2000/svg}text")  # text as glyph outlines: no font needed
        png = Image.open(folder / f"{name}.png")
        assert png.info["dpi"] == pytest.approx((300, 300), abs=0.01)  # the pHYs chunk says 300 dpi
        assert png.size == (round(300 * width), round(300 * height))
        assert (folder / f"{name}.svg").read_bytes() == plot.svg  # the same run draws the same bytes


def _drawn_texts(fig) -> list:
    """Every text a drawing of `fig` shows: visible, not empty, and no tick label outside its axis' view nor
    axis text of an axes drawn without axes (matplotlib keeps those, but does not draw them)."""
    from matplotlib.text import Text

    hidden = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            slack = 1e-9 * max(hi - lo, 1e-12)
            for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                if not ax.axison or not lo - slack <= tick.get_loc() <= hi + slack:
                    hidden.update((tick.label1, tick.label2))
            if not ax.axison:
                hidden.update((axis.label, axis.offsetText))
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and t not in hidden]


def test_figures_are_column_or_page_wide_and_every_text_is_at_least_10_pt(toy_plots, table_plots):
    for plot in _all_plots(toy_plots, table_plots):
        fig = plot.figure
        assert fig.get_figwidth() in (report.COLUMN, report.PAGE), plot.name
        assert fig.get_figheight() <= 20, plot.name
        fig.canvas.draw()  # laid out at the figure's own dpi (the 300 dpi PNG was its last drawing)
        renderer = fig.canvas.get_renderer()
        whole = fig.bbox
        texts = _drawn_texts(fig)
        assert len(texts) > 5, plot.name
        for text in texts:
            assert text.get_fontsize() >= 10, (plot.name, text.get_text(), text.get_fontsize())
            box = text.get_window_extent(renderer)
            # nothing cut off at the figure's edge (1 px of slack for rounding)
            assert box.x0 >= whole.x0 - 1 and box.x1 <= whole.x1 + 1, (plot.name, text.get_text())
            assert box.y0 >= whole.y0 - 1 and box.y1 <= whole.y1 + 1, (plot.name, text.get_text())


def _overlap(a, b) -> float:
    return max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0)) * max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))


def test_legends_lie_outside_every_axes(toy_plots, table_plots):
    seen = 0
    for plot in _all_plots(toy_plots, table_plots):
        fig = plot.figure
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
        for legend in legends:
            seen += 1
            box = legend.get_window_extent(renderer)
            for ax in fig.axes:
                assert _overlap(box, ax.get_window_extent(renderer)) == 0, (plot.name, ax.get_title())
    assert seen >= 8  # scatter, leaderboard, blend weights and split histograms of both runs


def test_importance_is_also_written_as_csv_and_json_with_the_plotted_numbers(toy, toy_plots):
    import json

    folder = toy["run"] / "report"
    table = pd.read_csv(folder / "importance.csv")
    document = json.loads((folder / "importance.json").read_text())
    assert list(table["feature"]) == [row["feature"] for row in document["features"]]
    assert table["gain"].is_monotonic_decreasing and table["gain"].sum() == pytest.approx(1.0)
    folds = [f"gain_fold_{k}" for k in document["folds"]]
    assert len(folds) == load_run(toy["run"]).summary["folds"]
    np.testing.assert_allclose(table[folds].sum(), 1.0)  # each fold model's gain, as shares
    assert {"gain", "gain_fold_<k>", "permutation", "permutation_std"} == set(document["columns"])
    shuffled = table.dropna(subset=["permutation"])
    assert len(shuffled) and (shuffled["permutation_std"] >= 0).all()
    for row, entry in zip(table.itertuples(), document["features"]):
        assert entry["gain"] == pytest.approx(row.gain)
        assert (entry["permutation"] is None) == np.isnan(row.permutation)
    # the bars of the plot are these numbers: gain (top by gain) and permutation (top by drop)
    gain_axes, permutation_axes = toy_plots["importance"].figure.axes
    labels = [t.get_text() for t in gain_axes.get_yticklabels()]
    widths = [bar.get_width() for bar in gain_axes.patches]
    top = table.head(report.TOP_FEATURES)[::-1]
    assert labels == [report._short(f, report.IMPORTANCE_LABEL) for f in top["feature"]]
    np.testing.assert_allclose(widths, top["gain"], rtol=1e-6)
    labels = [t.get_text() for t in permutation_axes.get_yticklabels()]
    by_drop = shuffled.sort_values("permutation", ascending=False, kind="mergesort").head(report.TOP_FEATURES)[::-1]
    assert labels == [report._short(f, report.IMPORTANCE_LABEL) for f in by_drop["feature"]]
    np.testing.assert_allclose([bar.get_width() for bar in permutation_axes.patches], by_drop["permutation"],
                               rtol=1e-6)


def test_group_finals_carry_bootstrap_intervals():
    rng = np.random.default_rng(1)
    target = rng.normal(size=20)
    rows = pd.DataFrame({"g": ["good"] * 6 + ["noisy"] * 6 + ["types"] * 8,
                         "group": [*["r1"] * 12, *["r2", "r3", "r4", "r5"] * 2], "target": target,
                         HEADLINE: np.r_[target[:6] * 2 + 1, rng.normal(size=6), target[12:] + rng.normal(size=8)]})
    table = report.group_finals(rows, "g", draws=200).set_index("g")
    assert table.loc["good", "low"] == pytest.approx(1.0) and table.loc["good", "high"] == pytest.approx(1.0)
    assert table.loc["noisy", "high"] - table.loc["noisy", "low"] > 0.5  # six pairs: Final is mostly noise
    # a value spanning several references resamples the references (all pairs of a drawn one), as the run does
    part = rows[rows["g"] == "types"]
    draws = [drawn for drawn, _ in metrics.group_bootstrap_draws(part["group"], 200)]
    finals = metrics.finals_on([part[HEADLINE].to_numpy()], part["target"], draws)
    low, high = np.nanpercentile(finals, [2.5, 97.5])
    assert (table.loc["types", "low"], table.loc["types", "high"]) == pytest.approx((low, high))
    assert list(report.group_finals(rows, "g").columns) == ["g", "n", "final"]  # intervals only when asked


def test_groups_plot_draws_the_intervals(table_plots, table_run):
    inputs = report._load_inputs(load_run(table_run))
    per_type = report.group_finals(inputs.rows, "dst_type", draws=report.GROUP_DRAWS)
    ax = next(ax for ax in table_plots["groups"].figure.axes if ax.get_title() == "per dst_type")
    (lines,) = ax.containers[1].lines[2]  # the errorbar's whisker segments, one per group, bottom up
    spans = np.array([segment[:, 0] for segment in lines.get_segments()])
    np.testing.assert_allclose(spans.min(axis=1), np.minimum(per_type["low"], per_type["final"]))
    np.testing.assert_allclose(spans.max(axis=1), np.maximum(per_type["high"], per_type["final"]))


def test_provenance_lists_only_what_the_run_used(toy, table_run):
    table = load_run(table_run)
    lines = dict(report.provenance(report._load_inputs(table)))
    assert not [key for key in lines if "extractor" in key or "store" in key]
    assert not re.search(r"clip|dino|imagenet|extractor", " ".join(lines.values()), re.IGNORECASE)
    assert table.summary["source"]["origin"]["sha256"] in lines["feature table"]
    assert lines["label, group columns"] == "dmos, image (lower = better)"
    # a store run: the extractors it read, each with its settings, even when its config names more
    run = load_run(toy["run"])
    config = {**run.config, "input": {**run.config["input"], "extractors": {
        **run.config["input"]["extractors"], "clip": {"model": "ViT-L-14", "enabled": True}}}}
    inputs = report._load_inputs(dataclasses.replace(run, config=config))
    lines = dict(report.provenance(inputs))
    used = run.summary["extractors"]
    assert lines["extractors used (store folder = name-v<version>-<config hash>)"] == ", ".join(
        used[name]["folder"] for name in sorted(used))
    assert sorted(k for k in lines if k.startswith("settings of ")) == [f"settings of {n}" for n in sorted(used)]
    assert "ViT-L-14" not in " ".join(lines.values())


def test_a_skipped_section_leaves_no_stale_files(table_run):
    folder = table_run / "report"
    folder.mkdir(exist_ok=True)
    for name in ("worst_pairs.svg", "worst_pairs.png", "old.json"):
        (folder / name).write_bytes(b"from an earlier report")
    (folder / "notes.txt").write_text("the user's")
    report.write_report(table_run)
    names = {p.name for p in folder.iterdir()}
    assert "notes.txt" in names and not {"worst_pairs.svg", "worst_pairs.png", "old.json"} & names
    assert {"importance.csv", "importance.json"} <= names
