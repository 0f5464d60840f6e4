"""The 510 real SeIQA training labels (../shared/data/seiqa/train_labels.csv, published by team DSS-SQA):
our xlsx label reader and metric code on real data, and the team's one-feature CLIP baseline."""
import openpyxl
import pandas as pd
import pytest

from featurestore.datasets import read_scores_xlsx
from tabular import metrics

from conftest import SHARED

LABELS = SHARED / "data" / "seiqa" / "train_labels.csv"


@pytest.fixture(scope="module")
def labels() -> pd.DataFrame:
    if not LABELS.exists():
        pytest.fail(f"{LABELS} is missing: the tests expect ../shared next to the repository (as in CI)")
    return pd.read_csv(LABELS, dtype={"img_name": str})


def test_train_scores_xlsx_round_trip_and_class_balance(labels, tmp_path):
    path = tmp_path / "Train_scores.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["name", "score"])
    for name, score in zip(labels.img_name, labels.score):
        ws.append([name, int(score)])
    wb.save(path)
    parsed = read_scores_xlsx(path, integer=True)
    assert len(parsed) == 510 and list(parsed) == list(labels.img_name)
    counts = pd.Series(parsed).value_counts().sort_index()
    assert counts.tolist() == [48, 93, 96, 90, 84, 99] and counts.index.tolist() == [0, 1, 2, 3, 4, 5]


def test_clip_cosine_baseline_matches_the_published_figures(labels):
    """DSS-SQA report SROCC 0.767 / PLCC 0.748 for CLIP ViT-L/14-336 cosine alone on these pairs."""
    m = metrics.all_metrics(labels.cos_sim.to_numpy(), labels.score.to_numpy())
    assert m["srocc"] == pytest.approx(0.767, abs=5e-4)
    assert m["plcc"] == pytest.approx(0.748, abs=5e-4)
    assert m["final"] == pytest.approx(0.6 * m["srocc"] + 0.4 * m["plcc"])
