"""`siqa doctor`: the machinery, tested here without real backbones (the tolerances pass only with real weights).

- Real-layout fixtures (real LPIPS head, random AlexNet where torchvision looks) on the real calibration
  pairs: the published values must be missed, and the command exits non-zero.
- The same network against a table holding its own values passes; one value moved by 1e-3 fails.
- Missing weights are a miss, not a skip.
- The SeIQA cosine check, on a tiny CLIP and a small SeIQA folder: its own cosines pass, a wrong one fails.
"""
from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cli import main
from featurestore.doctor import seiqa_cosine_check
from featurestore.extractors import create
from featurestore.io import DecodedPair, decode

from conftest import SHARED
from real_weights import CALIB_PAIRS, lpips_files, use_torch_home
from test_extractors_deep import tiny_clip, tiny_clip_arch  # noqa: F401

CALIB = SHARED / "data" / "calib"


@pytest.fixture
def lpips_config(tmp_path):
    path = tmp_path / "doctor.toml"
    path.write_text('[extractors.lpips]\nnets = ["alex"]\n')
    return str(path)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch"
    lpips_files(home, ("alex",))
    use_torch_home(monkeypatch, home)
    monkeypatch.delenv("SIQA_WEIGHTS_DIR", raising=False)
    return home


def doctor(capsys, *args) -> tuple[int, str]:
    try:
        main(["doctor", *args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().out


def row(out: str, start: str) -> str:
    [line] = [line for line in out.splitlines() if line.startswith(start)]
    return line


def test_random_backbones_miss_the_published_values(torch_home, lpips_config, capsys):
    code, out = doctor(capsys, "--config", lpips_config, "--calib", str(CALIB))
    assert code == 1, out
    assert row(out, "lpips alex vs official lpips").endswith("MISS") and "1 miss(es)" in out


def write_calib(root, pairs, values: dict[str, np.ndarray]):
    for sub in ("ref", "dist"):
        (root / sub).mkdir(parents=True)
    for p in pairs:
        Image.fromarray(p.ref.rgb).save(root / "ref" / f"{p.pair_id}.bmp")
        Image.fromarray(p.dist.rgb).save(root / "dist" / f"{p.pair_id}.bmp")
    with open(root / "official_values.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Method", *(f"{p.pair_id}.bmp" for p in pairs)])
        for name, v in values.items():
            w.writerow([name, *(f"{x:.9f}" for x in v)])


def test_own_values_pass_and_a_wrong_value_fails(torch_home, lpips_config, tmp_path, capsys):
    """96 x 96 crops of the calibration pairs keep it fast; the table is what this very network gives."""
    def crop(path):
        return decode(path).rgb[100:196, 200:296].copy()

    pairs = [DecodedPair(p, decode(CALIB / "ref" / f"{p}.bmp"), decode(CALIB / "dist" / f"{p}.bmp"))
             for p in CALIB_PAIRS]
    pairs = [DecodedPair(p.pair_id, type(p.ref)(p.pair_id + "r", crop(p.ref.path)),
                         type(p.dist)(p.pair_id + "d", crop(p.dist.path))) for p in pairs]
    own = create("lpips", nets=["alex"], device="cpu").compute_pairs(pairs)["alex"]
    good = tmp_path / "good"
    write_calib(good, pairs, {"lpips": own})
    code, out = doctor(capsys, "--config", lpips_config, "--calib", str(good))
    assert code == 0 and row(out, "lpips alex").endswith(" ok") and "all checks passed" in out, out

    wrong = tmp_path / "wrong"
    write_calib(wrong, pairs, {"lpips": own + np.array([0, 0, 1e-3, 0, 0])})
    code, out = doctor(capsys, "--config", lpips_config, "--calib", str(wrong))
    assert code == 1 and row(out, "lpips alex").endswith("MISS") and "I06" in row(out, "lpips alex"), out


def test_missing_weights_are_a_miss(tmp_path, monkeypatch, lpips_config, capsys):
    use_torch_home(monkeypatch, tmp_path / "empty")
    monkeypatch.delenv("SIQA_WEIGHTS_DIR", raising=False)
    code, out = doctor(capsys, "--config", lpips_config, "--calib", str(CALIB))
    assert code == 1 and "MISSING WEIGHTS" in row(out, "lpips alex") and "alexnet-owt-7be5be79.pth" in out


def test_seiqa_cosine_check(seiqa_dir, tmp_path, monkeypatch, tiny_clip_arch):  # noqa: F811
    monkeypatch.setenv("SIQA_WEIGHTS_DIR", str(tmp_path / "w"))
    tiny_clip(tmp_path / "w", tiny_clip_arch)
    model = {"arch": tiny_clip_arch, "pretrained": "test"}
    names = sorted(p.name for p in (seiqa_dir / "Train" / "Dist").iterdir())
    clip = create("clip", models=[model], resize="crop", prompts=[], device="cpu")
    key = f"{clip.specs[0]['key']}_embedding"
    ref = clip.compute_images([decode(seiqa_dir / "Train" / "Ref" / n) for n in names])[key]
    dist = clip.compute_images([decode(seiqa_dir / "Train" / "Dist" / n) for n in names])[key]
    own = np.sum(ref * dist, axis=1).astype(np.float64)

    labels = tmp_path / "labels.csv"
    pd.DataFrame({"img_name": names, "score": 0, "cos_sim": own}).to_csv(labels, index=False)
    checks = seiqa_cosine_check(seiqa_dir, labels, model=model, device="cpu", progress=False)
    assert [c.status for c in checks] == ["ok", "ok"] and "6 train pairs" in checks[0].detail

    own[2] -= 0.05
    pd.DataFrame({"img_name": names, "score": 0, "cos_sim": own}).to_csv(labels, index=False)
    _, delta = seiqa_cosine_check(seiqa_dir, labels, model=model, device="cpu", progress=False)
    assert delta.status == "MISS" and names[2] in delta.detail and delta.delta == pytest.approx(0.05, abs=1e-4)
