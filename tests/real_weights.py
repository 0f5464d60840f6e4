"""Weight files laid out exactly where the libraries look, real wherever a real file installs offline.

Real (from the package registries, in the `test` extra):
- the LPIPS v0.1 linear heads that the `lpips` 0.1.4 wheel ships (`lpips/weights/v0.1/{alex,vgg}.pth`,
  byte-identical to pyiqa's `LPIPS_v0.1_alex-df73285e.pth` / `LPIPS_v0.1_vgg-a78928a0.pth`: the suffix is
  the file's sha256 prefix, checked below);
- DISTS alpha/beta from `DISTS_pytorch` 0.1 (`weights.pt` = pyiqa's `DISTS_weights-f5e65c96.pth`).
Random (no offline source): torchvision's ImageNet backbones and the TOPIQ-FR checkpoint. The backbone files
carry every tensor of torchvision's checkpoint under its own name and shape — the convolutions random, the
classifier (unused by LPIPS/DISTS, 100M+ values for VGG16) as a zero tensor expanded with stride 0, so the
file stays a few MB while torchvision's strict `load_state_dict` still accepts it.

File names are the ones the libraries' own download would produce: the basename of torchvision's
`IMAGENET1K_V1` URL under `$TORCH_HOME/hub/checkpoints`, the basename of pyiqa's `default_model_urls` entry
under `$TORCH_HOME/hub/pyiqa` (pyiqa's `DEFAULT_CACHE_DIR`).
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import torch

CALIB_PAIRS = ["I03", "I04", "I06", "I08", "I19"]


def lpips_head(net: str) -> Path:
    """The real LPIPS v0.1 head file of `net` that the `lpips` wheel ships."""
    import lpips

    return Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"


def dists_head() -> Path:
    """The real DISTS alpha/beta file that the `DISTS_pytorch` wheel ships."""
    import DISTS_pytorch

    return Path(DISTS_pytorch.__file__).parent / "weights.pt"


def torchvision_filename(arch: str) -> str:
    import torchvision

    return os.path.basename(torchvision.models.get_model_weights(arch)["IMAGENET1K_V1"].url)


def pyiqa_filename(url: str) -> str:
    return os.path.basename(url)


def random_torchvision_checkpoint(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every key of torchvision's ImageNet checkpoint of `arch`: random `features.*`, zero stride-0 rest."""
    import torchvision

    torch.manual_seed(seed)
    with torch.device("meta"):
        model = getattr(torchvision.models, arch)(weights=None)
    features = model.features.to_empty(device="cpu")
    for layer in features.modules():
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    state = {f"features.{k}": v.detach().clone() for k, v in features.state_dict().items()}
    for k, v in model.state_dict().items():
        if not k.startswith("features."):
            state[k] = torch.zeros(1).expand(v.shape)
    return state


def save(obj, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def copy_real(source: Path, path: Path, sha_prefix: str = "") -> Path:
    if sha_prefix:
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        assert digest.startswith(sha_prefix), f"{source}: sha256 {digest[:12]}, pyiqa's file is {sha_prefix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, path)
    return path


def lpips_files(torch_home: Path, nets=("alex", "vgg")) -> None:
    """Backbones and the real heads of LPIPS `nets`, where torchvision and pyiqa look under `torch_home`."""
    from pyiqa.archs.lpips_arch import default_model_urls

    arch = {"alex": "alexnet", "vgg": "vgg16"}
    for net in nets:
        backbone = torch_home / "hub" / "checkpoints" / torchvision_filename(arch[net])
        if not backbone.exists():
            save(random_torchvision_checkpoint(arch[net]), backbone)
        name = pyiqa_filename(default_model_urls[f"0.1_{net}"])
        copy_real(lpips_head(net), torch_home / "hub" / "pyiqa" / name, name.rsplit("-", 1)[1].split(".")[0])


def dists_files(torch_home: Path) -> None:
    from pyiqa.archs.dists_arch import default_model_urls

    backbone = torch_home / "hub" / "checkpoints" / torchvision_filename("vgg16")
    if not backbone.exists():
        save(random_torchvision_checkpoint("vgg16"), backbone)
    name = pyiqa_filename(default_model_urls["url"])
    copy_real(dists_head(), torch_home / "hub" / "pyiqa" / name, name.rsplit("-", 1)[1].split(".")[0])


def topiq_files(torch_home: Path, model_name: str = "cfanet_fr_kadid_res50",
                semantic_model_name: str = "resnet50", seed: int = 0) -> None:
    """A random TOPIQ-FR checkpoint ({'params': state}) of the named architecture under pyiqa's file name."""
    from pyiqa.archs.topiq_arch import CFANet, default_model_urls

    torch.manual_seed(seed)
    net = CFANet(semantic_model_name=semantic_model_name, model_name=model_name, backbone_pretrain=False,
                 pretrained=False, use_ref=True)
    save({"params": net.state_dict()}, torch_home / "hub" / "pyiqa" / pyiqa_filename(default_model_urls[model_name]))


def use_torch_home(monkeypatch, torch_home: Path) -> None:
    """Point torch.hub and pyiqa (whose cache folder is fixed when it is imported) at `torch_home`."""
    from pyiqa.utils import download_util

    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", str(torch_home / "hub" / "pyiqa"))
