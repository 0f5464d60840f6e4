"""Where pretrained weights come from, checked before any work starts.

Resolution order (DESIGN.md), per weight file or model folder:
1. the path given in the extractor's config (if given, it must exist: a typo must not silently fall through);
2. `$SIQA_WEIGHTS_DIR/<local name>` — Hugging Face files mirror their repo id
   (`huggingface-cli download <repo> --local-dir $SIQA_WEIGHTS_DIR/<repo>` fills it), plain URL files sit at
   the top by their file name;
3. the library's normal cache: the Hugging Face hub cache, the torch hub / pyiqa checkpoint folders, or the
   package that ships the file.

Nothing here downloads (`featurestore.downloads` does, for `siqa weights --download`). `check_weights` raises one
`MissingWeights` listing everything that is missing, so a run stops before decoding a single image;
`describe_weights` is what `siqa weights` prints. A model folder counts only when complete: its config, every
weight shard its `model.safetensors.index.json` lists, and the processor/tokenizer files the spec names.
"""
from __future__ import annotations

import dataclasses
import json
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
class Fetch:
    """How `siqa weights --download` gets a weight: a Hugging Face repo snapshot, one file of a repo, or a URL."""

    kind: str          # "hf_snapshot", "hf_file" or "url"
    source: str        # repo id or URL
    filename: str = ""  # hf_file: the file in the repo


@dataclass(frozen=True)
class WeightSpec:
    """One weight file (or transformers model folder) an extractor needs, and every place it may be."""

    what: str                  # human name, e.g. "open_clip ViT-L-14 (openai)"
    local_name: str            # relative path under $SIQA_WEIGHTS_DIR
    download: str              # where a person fetches it: URL or Hugging Face repo id
    config_path: str = ""      # explicit path from the extractor config; "" = not given
    caches: tuple[Path, ...] = ()  # the library's own cache locations, in the order it would use them
    folder: bool = False       # a transformers model folder (config.json + weights) rather than one file
    #: files a model folder needs beside config and weights ("a|b": either); e.g. the processor and tokenizer
    files: tuple[str, ...] = ()
    fetch: Fetch | None = None  # how to download it; None: derived from `download` (see `fetch_plan`)


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
    """The hub cache huggingface_hub would use now, in its own order (HF_HUB_CACHE, the older
    HUGGINGFACE_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub), read at call time, not import time."""
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
    """The cached snapshot folder of a transformers model repo (None when not even its config is cached);
    `resolve` decides whether it is complete."""
    config = hf_cached(repo_id, "config.json")
    return None if config is None else config.parent


def hf_download_line(repo_id: str) -> str:
    """The exact command that fills the place `resolve` looks at first for this repo."""
    root = weights_dir()
    target = f" --local-dir {root / repo_id}" if root else ""
    return f"`hf download {repo_id}{target}` (`huggingface-cli download` on huggingface_hub < 1.0)"


def torch_hub_checkpoints() -> Path:
    """torch.hub's checkpoint folder ($TORCH_HOME/hub/checkpoints), where torchvision keeps its weights."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def folder_problem(path: Path, files: tuple[str, ...] = ()) -> str:
    """Why `path` is not a complete model folder ("" when it is): config, weights (every shard of a sharded
    checkpoint) and the named extra files."""
    if not path.is_dir():
        return f"{path} does not exist"
    if not (path / "config.json").is_file():
        return f"{path} has no config.json"
    present = [w for w in MODEL_FOLDER_WEIGHTS if (path / w).is_file()]
    if not present:
        return f"{path} has no weights ({' or '.join(MODEL_FOLDER_WEIGHTS[:2])}, or a sharded index)"
    for index in (w for w in present if w.endswith(".index.json")):
        try:
            shards = sorted(set(json.loads((path / index).read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            return f"{path / index} is unreadable ({exc.__class__.__name__}: {exc})"
        missing = [f for f in shards if not (path / f).is_file()]
        if missing:
            return (f"{path} lacks {len(missing)} of the {len(shards)} weight shards {index} lists "
                    f"(e.g. {missing[0]})")
    for need in files:
        if not any((path / f).is_file() for f in need.split("|")):
            return f"{path} has no {' or '.join(need.split('|'))}"
    return ""


def _problem(path: Path, spec: WeightSpec) -> str:
    if spec.folder:
        return folder_problem(path, spec.files)
    return "" if path.is_file() else f"{path} is not a file"


def fetch_plan(spec: WeightSpec) -> Fetch | None:
    """How to download `spec`: its own `fetch`, else read from `download` (a Hugging Face repo page, a repo
    file `https://huggingface.co/<repo> (file <name>)`, or a URL); None for weights that ship in a package."""
    if spec.fetch is not None:
        return spec.fetch
    hub = "https://huggingface.co/"
    if spec.download.startswith(hub) and "/resolve/" not in spec.download:
        repo = "/".join(spec.download[len(hub):].split()[0].split("/")[:2])
        if spec.folder:
            return Fetch("hf_snapshot", repo)
        if spec.local_name.startswith(repo + "/"):
            return Fetch("hf_file", repo, spec.local_name[len(repo) + 1:])
    if spec.download.startswith(("https://", "http://")):
        return Fetch("url", spec.download.split()[0])
    return None


def resolve(spec: WeightSpec) -> WeightSource:
    """First place that has the weights, in the documented order; `found=None` with a hint otherwise."""
    kind = "file"
    if spec.folder:
        kind = "model folder (config.json + weights" + "".join(f" + {f}" for f in spec.files) + ")"
    if spec.config_path:
        path = Path(spec.config_path).expanduser()
        problem = _problem(path, spec)
        if not problem:
            return WeightSource(spec.what, str(path))
        return WeightSource(spec.what, None, f"the config names {path}, which is not a complete {kind} "
                                             f"({problem}); put it there or remove the setting")
    root = weights_dir()
    places = ([root / spec.local_name] if root is not None else []) + list(spec.caches)
    problems = []
    for path in places:
        problem = _problem(path, spec)
        if not problem:
            return WeightSource(spec.what, str(path))
        if spec.folder and path.is_dir():
            problems.append(problem)  # a partial download: say what is missing
    plan = fetch_plan(spec)
    if plan is not None and plan.kind == "hf_snapshot":
        hint = f"run {hf_download_line(plan.source)}, or `siqa weights --download`"
    else:
        where = f"${WEIGHTS_ENV}/{spec.local_name}" + (f" (now {root / spec.local_name})" if root else
                                                       f" (set {WEIGHTS_ENV} first)")
        if spec.caches:
            where += f" or at {spec.caches[0]}"
        hint = f"download {spec.download} and put the {kind} at {where}"
        hint += ", or run `siqa weights --download`" if plan is not None else ""
    return WeightSource(spec.what, None, hint + "".join(f"; incomplete: {p}" for p in problems))


def package_version(distribution: str) -> str:
    """`name version` of an installed distribution, for naming where packaged weights come from."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{distribution} {version(distribution)}"
    except PackageNotFoundError:
        return f"{distribution} (not installed)"


def located(spec: WeightSpec) -> str:
    """Resolved location of one weight, for loading; raises if it vanished since the pre-flight check."""
    source = resolve(spec)
    if source.found is None:
        raise MissingWeights([source])
    return source.found


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
