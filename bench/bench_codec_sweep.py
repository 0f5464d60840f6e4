"""A codec engineer's first day (issue 26): four real photos, JPEG and WebP at four qualities each (32 pairs),
scored with a fitted run through `siqa predict --pairs` (the table's own columns kept, features added), and
set beside pyiqa's PSNR and SSIM of the same pairs.

    python bench/bench_codec_sweep.py [--run runs/demo] [--store DIR] [--out FILE.csv]

Without a run at `--run` (default: `make demo`'s runs/demo), the demo run is built first in a scratch folder as
`make demo` builds it (demo data, offline features, `oof --preset fast`).

Prints, per codec and quality, the mean score, bits per pixel, PSNR and SSIM, and per photo and codec whether
each measure rises with quality (Spearman's rho of the measure against quality over the four qualities):
a measure of quality should rise. The photos are 512 px crops of scikit-image's samples.
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
CODECS = {"jpeg": "JPEG", "webp": "WEBP"}
QUALITIES = (30, 50, 70, 90)


def sweep(folder: Path) -> pd.DataFrame:
    """The 32 pairs on disk (PNG reference, decoded PNG of each encode) and their table."""
    import skimage.data

    rows = []
    for name in PHOTOS:
        rgb = np.asarray(Image.fromarray(getattr(skimage.data, name)()[..., :3]))[:384, :512]
        ref = folder / f"{name}.png"
        Image.fromarray(rgb).save(ref)
        for codec, fmt in CODECS.items():
            for quality in QUALITIES:
                buffer = io.BytesIO()
                Image.fromarray(rgb).save(buffer, format=fmt, quality=quality)
                dist = folder / f"{name}_{codec}_q{quality}.png"
                Image.open(io.BytesIO(buffer.getvalue())).convert("RGB").save(dist)
                rows.append({"ref_name": ref.name, "dist_name": dist.name, "photo": name, "codec": codec, "quality": quality,
                             "bpp": 8 * buffer.tell() / (rgb.shape[0] * rgb.shape[1])})
    return pd.DataFrame(rows)


def pyiqa_scores(folder: Path, table: pd.DataFrame) -> pd.DataFrame:
    import pyiqa
    import torch

    out = {}
    for metric in ("psnr", "ssim"):
        net = pyiqa.create_metric(metric, device="cpu")
        with torch.inference_mode():
            out[f"pyiqa_{metric}"] = [float(net(str(folder / d), str(folder / r))) for r, d in zip(table.ref_name, table.dist_name)]
    return pd.DataFrame(out, index=table.index)


def siqa(*args) -> None:
    print("$ siqa " + " ".join(map(str, args)), flush=True)
    subprocess.run([sys.executable, "-m", "cli", *map(str, args)], cwd=ROOT, check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})


def demo_run(folder: Path) -> Path:
    config = ROOT / "configs" / "offline.toml"
    siqa("demo-data", "--out", folder / "data", "--quiet")
    siqa("features", "--data", folder / "data", "--store", folder / "store", "--config", config, "--quiet")
    siqa("oof", "--store", folder / "store", "--run", folder / "run", "--config", config, "--preset", "fast", "--quiet")
    return folder / "run"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "demo")
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="siqa-codec-sweep-") as tmp:
        folder = Path(tmp)
        run = args.run if (args.run / "run.json").is_file() else demo_run(folder / "demo")
        table = sweep(folder)
        table.to_csv(folder / "sweep.csv", index=False)
        scored = folder / "scored.csv"
        siqa("predict", "--run", run, "--pairs", folder / "sweep.csv", "--out", scored, "--with-features", "--quiet",
             *(["--store", args.store] if args.store else []))
        result = pd.read_csv(scored)
        result = pd.concat([result, pyiqa_scores(folder, table)], axis=1)
    score = next(c for c in result.columns if c.startswith("predicted_") or c == "score")
    columns = [score, "bpp", "pyiqa_psnr", "pyiqa_ssim"] + [c for c in ("flagged", "outside_range") if c in result]
    print(f"\nmean per codec and quality ({score}: the run's prediction)")
    print(result.groupby(["codec", "quality"])[columns].mean().round(3).to_string())
    print("\nSpearman rho against quality, per photo and codec (+1: rises with quality, as it should)")
    rho = (result.groupby(["photo", "codec"])
           .apply(lambda g: pd.Series({m: spearmanr(g.quality, g[m]).statistic for m in (score, "pyiqa_psnr", "pyiqa_ssim")}),
                  include_groups=False))
    print(rho.round(2).to_string())
    print(f"\nsweeps where {score} rises with quality: {(rho[score] > 0.99).sum()}/{len(rho)}; "
          f"pyiqa_psnr: {(rho['pyiqa_psnr'] > 0.99).sum()}/{len(rho)}")
    if args.out:
        result.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
