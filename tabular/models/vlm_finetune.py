"""What the fine-tuned vision-language members (`vlm_lora`, `vlm_grpo`) share.

- the base checkpoint: a Hugging Face repo id resolved like the `vlm` extractor's weights (config `path` →
  `$SIQA_WEIGHTS_DIR/<repo id>` → the Hugging Face cache), loaded without network, once per process
  (`vlm_base`: the members borrow it and take their adapters off again);
- the pair prompt: reference and degraded image in one chat turn, then the task text, each image within the
  same pixel budget as the extractor's (`budget_size`), the degraded image resized to the reference first;
- LoRA targets by part: `vision` (the vision tower's blocks), `aligner` (the merger that projects image
  patches into the language model, with Qwen3-VL's deepstack mergers), `language` (the decoder layers),
  optionally narrowed by a regular expression on the module name;
- fit folders: one per fit under the run's `work_dir`, named by a hash of everything the fit learnt from (the
  member's settings, the checkpoint's config, the kind of device, every training pair's id, image hashes and
  target). A finished fit is found again by that name, so a killed `siqa oof` resumes with the fits that
  finished, and a rerun of the same data and settings trains nothing. A folder is written under a temporary name and renamed
  when complete; only adapters, the head (safetensors) and JSON are kept, never the base model or pickles.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from featurestore.devices import pick_device
from featurestore.errors import SiqaError
from featurestore.extractors.vlm import budget_size, load_model
from featurestore.io import decode, match_size
from featurestore.weights import MissingWeights, WeightSpec, hf_cached_folder, resolve

DEFAULT_MODEL = "Qwen/Qwen3-VL-4B-Instruct"
DEFAULT_PROMPT = ("The first image is a reference photo, the second a degraded copy of it. How much of the "
                  "reference's meaning (objects, attributes, relations, layout, text) survives in the degraded "
                  "image, on a scale from 0 (nothing) to 5 (all of it)?")
LORA_PARTS = ("vision", "aligner", "language")
COMPLETE = "fit.json"  # written last: a folder holding it is a finished fit


def require(member: str, *packages: str) -> None:
    """One clear line when the fine-tuning packages are not installed."""
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise SiqaError(f"{member}: needs {', '.join(missing)}; install them with pip install 'siqa[finetune]'")


def model_folder(member: str, model: str, path: str) -> Path:
    """The local checkpoint folder of `model`, or `MissingWeights` saying where to put it."""
    cached = hf_cached_folder(model)
    source = resolve(WeightSpec(f"{member}: transformers {model}", local_name=model,
                                download=f"https://huggingface.co/{model}", config_path=path,
                                caches=(cached,) if cached else (), folder=True))
    if source.found is None:
        raise MissingWeights([source])
    return Path(source.found)


def load_base(member: str, model: str, path: str, dtype: str, device: str, load_in_4bit: bool = False):
    """(model, processor, folder) of the base checkpoint on the configured device (float32 on a CPU), loaded
    now; the members borrow the process's loaded one instead (`vlm_base.borrowed`)."""
    folder = model_folder(member, model, path)
    loaded, processor = load_model(folder, dtype, pick_device(device), load_in_4bit=load_in_4bit)
    processor.tokenizer.padding_side = "left"  # the last position is every row's own last token
    return loaded, processor, folder


def lora_target_modules(model, parts, pattern: str = "") -> list[str]:
    """Names of the linear layers of the chosen parts (see the module docstring), `pattern` narrowing them."""
    import torch

    unknown = set(parts) - set(LORA_PARTS)
    if unknown or not parts:
        raise SiqaError(f"config: lora_targets must be some of {', '.join(LORA_PARTS)}, got {list(parts)}")
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        dotted = f".{name}."
        if ".visual." in dotted:
            part = "aligner" if "merger" in name else "vision"
        elif ".language_model." in dotted:
            part = "language"
        else:
            continue  # the LM head: the regression head replaces it, the answer head must stay the base one
        if part in parts and (not pattern or re.search(pattern, name)):
            names.append(name)
    if not names:
        raise SiqaError(f"config: no linear layer of {type(model).__name__} matches lora_targets "
                        f"{list(parts)}" + (f" and lora_modules {pattern!r}" if pattern else ""))
    return names


def pair_messages(prompt: str) -> list[dict]:
    return [{"role": "user", "content": [
        {"type": "text", "text": "Reference image:"}, {"type": "image"},
        {"type": "text", "text": "Degraded image:"}, {"type": "image"},
        {"type": "text", "text": prompt}]}]


class PairImages:
    """Decoded, size-matched, budget-fitted images of the pairs a member sees, each image read once."""

    def __init__(self, processor, max_pixels: int):
        image_processor = processor.image_processor
        self.factor = int(image_processor.patch_size) * int(image_processor.merge_size)
        own_limit = (getattr(image_processor, "size", None) or {}).get("longest_edge")
        self.max_pixels = min(int(max_pixels), int(own_limit)) if own_limit else int(max_pixels)
        self._cache: dict[str, list[Image.Image]] = {}

    def __call__(self, pair_id: str, row) -> list[Image.Image]:
        if pair_id not in self._cache:
            ref = decode(row["ref_path"], row["ref_sha256"])
            dist, _ = match_size(ref, decode(row["dist_path"], row["dist_sha256"]))
            images = []
            for rgb in (ref.rgb, dist.rgb):
                image = Image.fromarray(rgb)
                size = budget_size(image.width, image.height, self.max_pixels, self.factor)
                images.append(image if size == image.size else image.resize(size, Image.LANCZOS))
            self._cache[pair_id] = images
        return self._cache[pair_id]

    def of_rows(self, rows: pd.DataFrame) -> list[list[Image.Image]]:
        """The images of every pair row (indexed by pair id), in row order."""
        return [self(pid, row) for pid, row in zip(rows.index, rows.to_dict("records"))]


def check_pairs(member: str, X: pd.DataFrame, pairs: pd.DataFrame | None) -> pd.DataFrame:
    """The image rows of X's pair ids (a member that needs pairs was called without them: a wiring error)."""
    if pairs is None:
        raise SiqaError(f"{member}: needs the pair images (`pairs=`); it is fit through a feature-store run")
    missing = X.index.difference(pairs.index)
    if len(missing):
        raise SiqaError(f"{member}: no image paths for pair(s) {', '.join(map(str, missing[:3]))}")
    return pairs.loc[X.index]


def fit_key(settings: dict, folder: Path, pairs: pd.DataFrame, target: np.ndarray, device: str) -> str:
    """Hash of everything a fit learns from (see the module docstring), the kind of device included: a CPU
    trains in float32 whatever `dtype` says."""
    config = (folder / "config.json").read_bytes() if (folder / "config.json").is_file() else b""
    blob = json.dumps({"settings": settings, "checkpoint": hashlib.sha256(config).hexdigest(),
                       "device": pick_device(device).type,
                       "pairs": [[str(i), r.ref_sha256, r.dist_sha256, float(t)]
                                 for i, r, t in zip(pairs.index, pairs.itertuples(), target)]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclasses.dataclass
class FitFolder:
    path: Path

    @classmethod
    def under(cls, work_dir: str | None, member: str, key: str) -> "FitFolder":
        root = Path(work_dir) if work_dir else Path(tempfile.gettempdir()) / "siqa-fits"
        return cls(root / f"{member}-{key}")

    @property
    def complete(self) -> bool:
        return (self.path / COMPLETE).is_file()

    def record(self) -> dict:
        try:
            return json.loads((self.path / COMPLETE).read_text())
        except (OSError, ValueError) as err:
            raise SiqaError(f"{self.path / COMPLETE}: cannot read the fit record ({err})") from None

    def staging(self) -> Path:
        """A fresh temporary folder next to the final one (same filesystem, so the rename is atomic)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))

    def publish(self, staged: Path, record: dict) -> None:
        """Write the record last into `staged`, then rename it into place (a finished twin wins)."""
        (staged / COMPLETE).write_text(json.dumps(record, indent=1, default=str))
        if self.complete:
            shutil.rmtree(staged)
            return
        if self.path.exists():  # an unfinished leftover of a killed fit
            shutil.rmtree(self.path)
        os.replace(staged, self.path)


def trained_fit(member, rows: pd.DataFrame, target: np.ndarray) -> FitFolder:
    """The fit folder of `member` (a pool member of this family) learning `target` on `rows`: found by the
    hash of what it learns from, trained now (`member._train(fit, rows, target)`) unless a finished one is
    already there."""
    folder = model_folder(member.name, member.base_model, member.path)
    fit = FitFolder.under(member.work_dir, member.name, fit_key(member._learning_settings(), folder, rows, target,
                                                                member.device))
    if not fit.complete:
        member._train(fit, rows, target)
    return fit


def free_memory() -> None:
    """Give the GPU memory of dropped models back before the next fit loads its own."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
