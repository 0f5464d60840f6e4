"""Where pretrained weights come from, checked before any work starts.

Resolution order (DESIGN.md), per weight file or model folder:
1. the path given in the extractor's config (if given, it must exist: a typo must not silently fall through);
2. `$SIQA_WEIGHTS_DIR/<local name>` — Hugging Face files mirror their repo id
   (`huggingface-cli download <repo> --local-dir $SIQA_WEIGHTS_DIR/<repo>` fills it), plain URL files sit at
   the top by their file name;
3. the library's normal cache: the Hugging Face hub cache, the torch hub / pyiqa checkpoint folders, or the
   package that ships the file.

Nothing here downloads. `check_weights` raises one `MissingWeights` listing everything that is missing, so a
run stops before decoding a single image; `describe_weights` is what `siqa weights` prints.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import SiqaError
from .extractors.base import Extractor, WeightSource

WEIGHTS_ENV = "SIQA_WEIGHTS_DIR"
#: a model folder is complete when it holds its config and one of these weight files
#: (the index files stand for sharded checkpoints such as the 7B vision-language models)
MODEL_FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                        "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class WeightSpec:
    """One weight file (or transformers model folder) an extractor needs, and every place it may be."""

    what: str                  # human name, e.g. "open_clip ViT-L-14 (openai)"
    local_name: str            # relative path under $SIQA_WEIGHTS_DIR
    download: str              # where a person fetches it: URL or Hugging Face repo id
    config_path: str = ""      # explicit path from the extractor config; "" = not given
    caches: tuple[Path, ...] = ()  # the library's own cache locations, in the order it would use them
    folder: bool = False       # a transformers model folder (config.json + weights) rather than one file


class MissingWeights(SiqaError):
    """Every missing weight at once, with where to put each."""

    def __init__(self, missing: list[WeightSource]):
        self.missing = missing
        lines = [f"missing pretrained weights ({len(missing)}); nothing was computed (see `siqa weights`):"]
        # one line per file: LPIPS-vgg and DISTS need the same torchvision checkpoint
        by_hint: dict[str, list[str]] = {}
        for m in missing:
            by_hint.setdefault(m.hint, []).append(m.what)
        lines += [f"  - {' and '.join(whats)}: {hint}" for hint, whats in by_hint.items()]
        super().__init__("\n".join(lines))


def weights_dir() -> Path | None:
    value = os.environ.get(WEIGHTS_ENV, "").strip()
    return Path(value).expanduser() if value else None


def hf_cache_dir() -> Path:
    """The hub cache huggingface_hub would use now (read from the environment at call time, not import time),
    in its order: HF_HUB_CACHE, the legacy HUGGINGFACE_HUB_CACHE, then $HF_HOME/hub."""
    for env in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(env):
            return Path(os.path.expandvars(os.environ[env])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def hf_cached(repo_id: str, filename: str) -> Path | None:
    """Path of `repo_id/filename` in the local hub cache, or None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=hf_cache_dir())
    return Path(found) if isinstance(found, str) else None


def hf_cached_folder(repo_id: str) -> Path | None:
    """The cached snapshot folder of a transformers model repo, if its config and weights are both there."""
    config = hf_cached(repo_id, "config.json")
    if config is None:
        return None
    return config.parent if _complete_folder(config.parent) else None


def torch_hub_checkpoints() -> Path:
    """torch.hub's checkpoint folder ($TORCH_HOME/hub/checkpoints), where torchvision keeps its weights."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _complete_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any((path / w).is_file() for w in MODEL_FOLDER_WEIGHTS)


def _exists(path: Path, folder: bool) -> bool:
    return _complete_folder(path) if folder else path.is_file()


def resolve(spec: WeightSpec) -> WeightSource:
    """First place that has the weights, in the documented order; `found=None` with a hint otherwise."""
    kind = "model folder (config.json + model.safetensors)" if spec.folder else "file"
    if spec.config_path:
        path = Path(spec.config_path).expanduser()
        if _exists(path, spec.folder):
            return WeightSource(spec.what, str(path))
        return WeightSource(spec.what, None, f"the config names {path}, which is not a complete {kind}; "
                                             f"download {spec.download} there or remove the setting")
    root = weights_dir()
    if root is not None and _exists(root / spec.local_name, spec.folder):
        return WeightSource(spec.what, str(root / spec.local_name))
    for cache in spec.caches:
        if _exists(cache, spec.folder):
            return WeightSource(spec.what, str(cache))
    where = f"${WEIGHTS_ENV}/{spec.local_name}" + (f" (now {root / spec.local_name})" if root else
                                                   f" (set {WEIGHTS_ENV} first)")
    if spec.caches:
        where += f" or at {spec.caches[0]}"
    return WeightSource(spec.what, None, f"download {spec.download} and put the {kind} at {where}")


def check_weights(extractors: list[Extractor], strict: bool = True) -> list[WeightSource]:
    """Every weight the extractors need, named `<extractor>: <what>`; raises `MissingWeights` when
    `strict` and any is missing, listing all of them."""
    sources = [dataclasses.replace(src, what=f"{ex.name}: {src.what}")
               for ex in extractors for src in ex.weight_sources()]
    missing = [s for s in sources if s.found is None]
    if strict and missing:
        raise MissingWeights(missing)
    return sources


def describe_weights(extractors: list[Extractor], disabled: set[str] = frozenset()) -> str:
    """The `siqa weights` report: per extractor, each weight and where it loads from or how to get it;
    extractors named in `disabled` are listed too, marked as off in the config."""
    lines = [f"{WEIGHTS_ENV}={weights_dir() or '(not set)'}   Hugging Face cache: {hf_cache_dir()}   "
             f"torch hub: {torch_hub_checkpoints().parent}"]
    for ex in extractors:
        off = " (disabled in the config)" if ex.name in disabled else ""
        sources = check_weights([ex], strict=False)
        if not sources:
            lines.append(f"{ex.name}: ok (needs no pretrained weights){off}")
            continue
        state = "ok" if all(s.found for s in sources) else "MISSING"
        lines.append(f"{ex.name}: {state}{off}")
        for s in sources:
            what = s.what.split(": ", 1)[1]
            lines.append(f"  {what}: " + (f"from {s.found}" if s.found else f"MISSING - {s.hint}"))
    return "\n".join(lines)
