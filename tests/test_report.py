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


def _embedded_pngs(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def test_report_is_self_contained_and_matches_its_pngs(toy):
    html = toy["html"]
    assert html == toy["run"] / "report.html"
    text = html.read_text()
    pngs = {p.stem: p.read_bytes() for p in (toy["run"] / "report").glob("*.png")}
    assert set(pngs) == STORE_PLOTS
    embedded = _embedded_pngs(text)
    assert sorted(embedded) == sorted(pngs.values())  # every plot embedded, byte for byte
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
    for png in embedded:
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
    assert len(_embedded_pngs(text)) == len(plots)


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
