"""`siqa weights --download`: fetch every weight the enabled extractors need, through the libraries' own download
functions, into the place `featurestore.weights.resolve` looks.

- a Hugging Face model repo (transformers checkpoints: DINOv2, the VLM): `huggingface_hub.snapshot_download`;
- one file of a Hugging Face repo (open_clip checkpoints): `huggingface_hub.hf_hub_download`, the call open_clip
  makes itself;
- a URL (torchvision ImageNet backbones, pyiqa's heads): `torch.hub.download_url_to_file`, the function
  torchvision's `load_state_dict_from_url` and pyiqa's `load_file_from_url` use.

Without `--to`, files go where the libraries would put them (the Hugging Face hub cache, `$TORCH_HOME/hub/...`);
with `--to DIR`, into DIR laid out as `$SIQA_WEIGHTS_DIR` (set it to DIR afterwards). A weight that already
resolves is skipped (idempotent); the hub functions resume partial downloads, and a URL download lands under a
temporary name first, so an interrupted one leaves nothing half-written where a loader would find it.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import SiqaError
from .weights import WeightSpec, fetch_plan, hf_cache_dir, resolve


@dataclass(frozen=True)
class Downloaded:
    what: str
    path: str
    size: int        # bytes on disk (a folder: every file in it)
    skipped: bool    # it was there already

    def line(self) -> str:
        state = "already there" if self.skipped else "downloaded"
        return f"{self.what}: {state}, {human_size(self.size)} at {self.path}"


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def disk_size(path: Path) -> int:
    """Bytes of a file or of everything under a folder (the hub cache's symlinks followed to their blobs)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def fetch(spec: WeightSpec, to: Path | None = None) -> Downloaded:
    """Download one weight unless it resolves already; raises `SiqaError` naming it when it cannot be fetched."""
    found = resolve(spec).found
    if found is not None:
        return Downloaded(spec.what, found, disk_size(Path(found)), True)
    plan = fetch_plan(spec)
    if plan is None:
        raise SiqaError(f"{spec.what}: cannot be downloaded by siqa: {spec.download}")
    if plan.kind == "hf_snapshot":
        from huggingface_hub import snapshot_download

        kwargs = {"local_dir": to / spec.local_name} if to else {"cache_dir": hf_cache_dir()}
        path = Path(snapshot_download(plan.source, **kwargs))
    elif plan.kind == "hf_file":
        from huggingface_hub import hf_hub_download

        kwargs = {"local_dir": to / plan.source} if to else {"cache_dir": hf_cache_dir()}
        path = Path(hf_hub_download(plan.source, plan.filename, **kwargs))
    elif plan.kind == "url":
        path = to / spec.local_name if to else (spec.caches[0] if spec.caches else None)
        if path is None:
            raise SiqaError(f"{spec.what}: no library cache for {plan.source}; give --to DIR")
        _download_url(plan.source, path)
    else:
        raise SiqaError(f"{spec.what}: unknown download kind {plan.kind!r}")
    return Downloaded(spec.what, str(path), disk_size(path), False)


def _download_url(url: str, path: Path) -> None:
    import torch.hub

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    try:
        torch.hub.download_url_to_file(url, tmp, progress=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def download_weights(extractors, to: Path | None = None, echo=print) -> list[Downloaded]:
    """Fetch every weight of `extractors` (each file once, however many extractors share it), printing one line
    per weight; all failures are collected and raised together at the end."""
    done, failures, seen = [], [], set()
    for ex in extractors:
        for spec in needed_specs(ex):
            key = (spec.local_name, spec.download)
            if key in seen:
                continue
            seen.add(key)
            try:
                result = fetch(spec, to)
            except SiqaError as exc:
                failures.append(f"{ex.name}: {exc}")
                echo(f"{ex.name}: FAILED - {exc}")
                continue
            except Exception as exc:  # network, disk, permission: report with the name, go on with the rest
                failures.append(f"{ex.name}: {spec.what}: {exc.__class__.__name__}: {exc}")
                echo(f"{ex.name}: FAILED - {spec.what}: {exc.__class__.__name__}: {exc}")
                continue
            done.append(result)
            echo(f"{ex.name}: {result.line()}")
    if failures:
        raise SiqaError(f"{len(failures)} weight(s) could not be downloaded: " + "; ".join(failures))
    return done


def needed_specs(ex) -> list[WeightSpec]:
    """The weights an extractor loads: none for formula metrics or a randomly initialised test model."""
    if ex.config.get("random_init") or not hasattr(ex, "weight_specs"):
        return []
    return ex.weight_specs()
