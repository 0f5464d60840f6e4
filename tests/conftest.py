"""Shared fixtures: small real photos (scikit-image) written as tiny datasets."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from PIL import Image

# ../shared beside the repository; SIQA_SHARED_DIR points elsewhere (a git worktree sits one level deeper)
SHARED = Path(os.environ.get("SIQA_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared")

# Property tests explore new random examples on developer machines; CI replays a fixed sequence so that
# a landing is never decided by which examples a run happened to draw.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def fresh_python(code: str, env: dict | None = None, timeout: float = 300) -> str:
    """`code` run by a fresh interpreter at the project root, for what is set once per process (malloc options,
    OpenMP runtimes, first imports); its standard output, stripped. `env` replaces this process's environment. A
    failure raises with the child's standard error."""
    root = Path(__file__).resolve().parents[1]
    ran = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=timeout,
                         env={**(os.environ if env is None else env), "PYTHONPATH": str(root)})
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.strip()


def file_bytes(root: Path) -> dict[str, bytes]:
    """Every file below `root` (relative path -> bytes): a folder's whole content, to compare before and after."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def siqa_exit_code(*args) -> int:
    """Run `siqa ARGS` in this process; its exit status (0 when it returns)."""
    import cli

    try:
        cli.main([str(a) for a in args])
    except SystemExit as exit_:
        return exit_.code or 0
    return 0


def photo(name: str = "astronaut", size: int = 64) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.asarray(Image.fromarray(img[..., :3]).resize((size, size * 3 // 4)))


@pytest.fixture
def seiqa_dir(tmp_path) -> Path:
    """A minimal SeIQA-layout folder: 6 train pairs (2 refs), 2 test pairs."""
    import openpyxl

    rng = np.random.default_rng(0)
    root = tmp_path / "seiqa"
    refs = {"astronaut": photo("astronaut"), "coffee": photo("coffee")}
    rows = []
    k = 0
    for split, per_ref in (("Train", 3), ("Test", 1)):
        (root / split / "Ref").mkdir(parents=True)
        (root / split / "Dist").mkdir(parents=True)
        for ref_name, ref in refs.items():
            for level in range(per_ref):
                k += 1
                name = f"{k:06d}.png"
                noisy = np.clip(ref + rng.normal(0, 10 * (level + 1), ref.shape), 0, 255).astype(np.uint8)
                Image.fromarray(ref).save(root / split / "Ref" / name)
                Image.fromarray(noisy).save(root / split / "Dist" / name)
                if split == "Train":
                    rows.append((name, 5 - level))
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["name", "score"])
    for r in rows:
        ws.append(list(r))
    wb.save(root / "Train" / "Train_scores.xlsx")
    return root
