"""Learned full-reference metrics through pyiqa: LPIPS (alex, vgg), DISTS, TOPIQ-FR.

Pair-level, not image-level: each compares the two images' deep feature maps position by position (LPIPS),
by their local statistics (DISTS) or by cross-attention between them (TOPIQ-FR), so the per-image state worth
caching would be whole multi-scale feature pyramids (tens of MB per image at native resolution) — far more
than the one number per pair they produce. The pair is the unit of caching.

Weights: pyiqa would download its checkpoint and torchvision's ImageNet backbone while building the network.
Here the networks are built without any download (torchvision's builders are told `weights=None` for the
duration of the constructor) and every file is loaded from the path `featurestore.weights` resolved, with a
check that every layer got its weights — the only way `SIQA_WEIGHTS_DIR` and the pre-flight check can work.

Input: the images at native size, aspect kept, only scaled down when larger than the metric's `size`
(long side for LPIPS and TOPIQ-FR; short side 256 for DISTS, as its authors evaluate it). Values stay on
each metric's own scale (LPIPS/DISTS: lower is closer; TOPIQ-FR: higher is better).
Resize policy against the reference: pyiqa's `create_metric` never resizes these metrics, so only images
larger than `size` differ from it, by design (bounded memory and time on large photos). Within `size`, siqa's
values are pyiqa's to < 1e-7 on the same weights and pixels (tests/test_reference_equivalence.py);
`siqa doctor` lifts the bound to compare with the authors' published values at native resolution.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar, Literal
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import Field

from ..devices import Runtime, device_rgb, to_host
from ..weights import WeightSpec, hf_cached, torch_hub_checkpoints
from .base import EXTRACTORS, Column, PairExtractor
from .deep import BatchSize, DeepExtractor, DeepSettings, Precision

PYIQA_REPO = "chaofengc/IQA-PyTorch-Weights"


class PyiqaSettings(DeepSettings):
    # the learned metrics were calibrated in fp32; bf16 would move their values
    precision: Precision = Field("fp32", description="autocast precision: fp32 (the metrics' own), auto, bf16 or "
                                                     "fp16; not hashed")
    batch_size: BatchSize = Field("auto", description="pairs per forward pass: auto = 8 on a CPU, from the free "
                                                       "GPU memory on a GPU; not hashed")
    size: int = Field(1024, ge=16, description="image side the pairs are resized to at most (aspect kept)")
    weights: dict[str, str] = Field({}, description="weight file name -> explicit path, e.g. "
                                                    "{\"vgg16-397923af.pth\" = \"/w/vgg16.pth\"}")


def pyiqa_spec(what: str, url: str, explicit: dict) -> WeightSpec:
    """A checkpoint pyiqa would fetch from its Hugging Face repo into `$TORCH_HOME/hub/pyiqa`."""
    filename = os.path.basename(url)
    caches = [Path(torch.hub.get_dir()) / "pyiqa" / filename]
    cached = hf_cached(PYIQA_REPO, filename)
    if cached is not None:
        caches.append(cached)
    return WeightSpec(what, f"{PYIQA_REPO}/{filename}", url, explicit.get(filename, ""), tuple(caches))


def torchvision_spec(what: str, arch: str, explicit: dict) -> WeightSpec:
    """ImageNet weights torchvision would fetch into `$TORCH_HOME/hub/checkpoints`."""
    import torchvision

    url = torchvision.models.get_model_weights(arch)["IMAGENET1K_V1"].url
    filename = os.path.basename(url)
    return WeightSpec(what, filename, url, explicit.get(filename, ""), (torch_hub_checkpoints() / filename,))


@contextlib.contextmanager
def torchvision_without_download(*archs: str):
    """Within the block, `torchvision.models.<arch>(weights=...)` builds an untrained network instead of
    downloading (pyiqa's constructors ask for ImageNet weights unconditionally). pyiqa keeps only the
    convolutional `features`, so only they are materialised: the classifier (100M+ parameters for VGG16)
    is built on the meta device and never allocated."""
    import torchvision

    def features_only(builder):
        def build(*args, **kwargs):
            with torch.device("meta"):
                model = builder(weights=None)
            features = model.features.to_empty(device="cpu")
            for layer in features.modules():
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()
            return SimpleNamespace(features=features)
        return build

    with contextlib.ExitStack() as stack:
        for arch in archs:
            stack.enter_context(mock.patch.object(torchvision.models, arch,
                                                  features_only(getattr(torchvision.models, arch))))
        yield


def load_torchvision_features(module: torch.nn.Module, path: str) -> None:
    """Copy torchvision `features.<i>.*` weights into a network whose slices keep torchvision's layer indices
    (pyiqa's `slice1.0`, `stage2.5`, ...), and fail if any convolution was left untrained."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    filled, convs = 0, 0
    for name, layer in module.named_modules():
        if not isinstance(layer, torch.nn.Conv2d):
            continue
        convs += 1
        index = name.rsplit(".", 1)[-1]
        weight, bias = state.get(f"features.{index}.weight"), state.get(f"features.{index}.bias")
        if weight is None or weight.shape != layer.weight.shape:
            continue
        layer.weight.data.copy_(weight)
        if bias is not None and layer.bias is not None:
            layer.bias.data.copy_(bias)
        filled += 1
    if filled != convs:
        raise ValueError(f"{path}: only {filled} of {convs} convolutions found in this torchvision checkpoint")


def load_checkpoint(module: torch.nn.Module, path: str, must_fill: tuple[str, ...] = ("",)) -> None:
    """Load a pyiqa checkpoint (optionally wrapped in {'params': ...}); every parameter whose name starts
    with one of `must_fill` ("" = all) must come from the file.

    pyiqa registers some layers under two names (LPIPS keeps `lin0`..`lin4` and the ModuleList `lins.0`..
    `lins.4`, the same parameters), and the published head files name only one of them: a name the file
    lacks counts as filled when the tensor behind it was loaded under its other name."""
    state = torch.load(path, map_location="cpu", weights_only=True)  # the LPIPS heads were saved on CUDA
    if isinstance(state, dict) and "params" in state:
        state = state["params"]
    result = module.load_state_dict(state, strict=False)
    tensors = module.state_dict(keep_vars=True)
    loaded = {id(tensors[k]) for k in state if k in tensors}
    unfilled = [k for k in result.missing_keys if k.startswith(must_fill) and id(tensors[k]) not in loaded]
    if unfilled or result.unexpected_keys:
        raise ValueError(f"{path}: does not fit the network (missing {unfilled[:3]}, "
                         f"unexpected {result.unexpected_keys[:3]})")


def fit_size(height: int, width: int, size: int, rule: str) -> tuple[int, int]:
    """Downscale-only target keeping the aspect ratio: `rule` says which side `size` bounds."""
    side = max(height, width) if rule == "max_side" else min(height, width)
    if side <= size:
        return height, width
    scale = size / side
    return max(8, round(height * scale)), max(8, round(width * scale))


class PyiqaPairMetric(DeepExtractor, PairExtractor):
    """Pair-level extractor running one or more pyiqa networks on (dist, ref) batches of equal shape.

    On a GPU the batch size is measured on pairs of the largest shape `size` lets through (`probe_shape`), and
    a shape group larger in pixels than that many such pairs is split (a very elongated image under DISTS'
    short-side rule can exceed it)."""

    size_rule: ClassVar[str] = "max_side"
    cpu_batch_size = 8
    max_batch_size = 64

    def __init__(self, settings=None, **config):
        super().__init__(settings, **config)
        side = self.config["size"]
        # max_side: a square of `size` is the largest input; short_side: a 2:1 photo at `size` on its short side
        self.probe_shape = (side, side) if self.size_rule == "max_side" else (side, 2 * side)

    def networks(self) -> list[str]:
        """Column names, one per network."""
        raise NotImplementedError

    def build(self, column: str, runtime: Runtime) -> torch.nn.Module:
        raise NotImplementedError

    def pair_columns(self) -> list[Column]:
        return [Column(c) for c in self.networks()]

    def load(self, runtime: Runtime) -> dict:
        import pyiqa  # noqa: F401  (registers the architectures)

        return {c: runtime.prepare(self.build(c, runtime)) for c in self.networks()}

    def compute_pairs(self, pairs) -> dict[str, np.ndarray]:
        rt = self.runtime
        groups: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(pairs):
            groups.setdefault(fit_size(p.ref.height, p.ref.width, self.config["size"], self.size_rule), []).append(i)
        batches = list(groups.items())
        if rt.device.type == "cuda" and not self.probing:
            batches = self._within_memory(batches)
        parts: dict[str, list] = {c: [] for c in self.networks()}
        order: list[int] = []
        for shape, idx in batches:
            ref = self._batch([pairs[i].ref for i in idx], shape, rt)
            dist = self._batch([pairs[i].dist for i in idx], shape, rt)
            with rt.inference():
                for c, net in self.loaded.items():
                    parts[c].append(net(dist, ref).float().flatten())
            order += idx
        values = to_host({c: torch.cat(v) for c, v in parts.items()})  # one transfer for every group
        out = {c: np.zeros(len(pairs)) for c in self.networks()}
        for c in out:
            out[c][order] = values[c]
        return out

    def _within_memory(self, groups: list[tuple[tuple[int, int], list[int]]]) -> list[tuple[tuple[int, int], list]]:
        """Shape groups cut so that none holds more pixels than `batch_size` pairs of `probe_shape`."""
        budget = self.batch_size * self.probe_shape[0] * self.probe_shape[1]
        out = []
        for shape, idx in groups:
            step = max(1, budget // (shape[0] * shape[1]))
            out += [(shape, idx[i:i + step]) for i in range(0, len(idx), step)]
        return out

    @staticmethod
    def _batch(images: list, shape: tuple[int, int], rt: Runtime) -> torch.Tensor:
        """N x 3 x H x W in [0, 1]; downscaled (antialiased bicubic, Pillow on the CPU) to `shape` if larger."""
        if rt.device.type == "cpu":
            rgbs = [im.rgb if im.rgb.shape[:2] == shape else
                    np.asarray(Image.fromarray(im.rgb).resize(shape[::-1], Image.BICUBIC)) for im in images]
            x = torch.stack([torch.tensor(a, dtype=torch.uint8) for a in rgbs])
        else:
            x = torch.stack([device_rgb(im, rt.device) for im in images])  # each image uploaded once
        x = x.permute(0, 3, 1, 2).float() / 255.0
        if tuple(x.shape[2:]) != shape:
            x = F.interpolate(x, size=shape, mode="bicubic", antialias=True, align_corners=False).clamp_(0, 1)
        return rt.to_input(x)


@EXTRACTORS.register()
class LpipsExtractor(PyiqaPairMetric):
    name = "lpips"
    version = 1
    _TORCHVISION = {"alex": "alexnet", "vgg": "vgg16"}

    class Settings(PyiqaSettings):
        nets: list[Literal["alex", "vgg"]] = Field(["alex", "vgg"], min_length=1,
                                                    description="LPIPS backbones, one column each: alex, vgg")

    def networks(self) -> list[str]:
        return list(self.config["nets"])

    def _specs(self, net: str) -> tuple[WeightSpec, WeightSpec]:
        from pyiqa.archs.lpips_arch import default_model_urls

        arch = self._TORCHVISION[net]
        return (torchvision_spec(f"torchvision {arch} ImageNet (LPIPS backbone)", arch, self.config["weights"]),
                pyiqa_spec(f"LPIPS v0.1 {net} linear layers", default_model_urls[f"0.1_{net}"], self.config["weights"]))

    def weight_specs(self) -> list[WeightSpec]:
        return [s for net in self.config["nets"] for s in self._specs(net)]

    def build(self, column: str, runtime: Runtime) -> torch.nn.Module:
        from pyiqa.archs.lpips_arch import LPIPS

        with torchvision_without_download(self._TORCHVISION[column]):
            net = LPIPS(net=column, version="0.1", pretrained=False)
        if not self.config["random_init"]:
            backbone, lins = self._specs(column)
            load_torchvision_features(net.net, self.weight_path(backbone))
            load_checkpoint(net, self.weight_path(lins), must_fill=("lin",))
        return net


@EXTRACTORS.register()
class DistsExtractor(PyiqaPairMetric):
    name = "dists"
    version = 1
    size_rule = "short_side"
    class Settings(PyiqaSettings):
        size: int = Field(256, ge=16, description="short side the pairs are resized to (DISTS' own 256)")

    def networks(self) -> list[str]:
        return ["score"]

    def weight_specs(self) -> list[WeightSpec]:
        from pyiqa.archs.dists_arch import default_model_urls

        return [torchvision_spec("torchvision vgg16 ImageNet (DISTS backbone)", "vgg16", self.config["weights"]),
                pyiqa_spec("DISTS alpha/beta", default_model_urls["url"], self.config["weights"])]

    def build(self, column: str, runtime: Runtime) -> torch.nn.Module:
        from pyiqa.archs.dists_arch import DISTS

        with torchvision_without_download("vgg16"):
            net = DISTS(pretrained=False)
        if not self.config["random_init"]:
            backbone, head = self.weight_specs()
            load_torchvision_features(net, self.weight_path(backbone))
            load_checkpoint(net, self.weight_path(head), must_fill=("alpha", "beta"))
        return net


@EXTRACTORS.register()
class TopiqFrExtractor(PyiqaPairMetric):
    name = "topiq_fr"
    version = 1
    class Settings(PyiqaSettings):
        model_name: str = Field("cfanet_fr_kadid_res50", description="pyiqa checkpoint (KADID-trained); also "
                                                                     "cfanet_fr_pipal_res50")
        semantic_model_name: str = Field("resnet50", description="timm backbone the checkpoint was trained with")

    def networks(self) -> list[str]:
        return ["score"]

    def weight_specs(self) -> list[WeightSpec]:
        from pyiqa.archs.topiq_arch import default_model_urls

        name = self.config["model_name"]
        if name not in default_model_urls:
            raise ValueError(f"unknown TOPIQ checkpoint {name!r}")
        return [pyiqa_spec(f"TOPIQ-FR {name} (includes its {self.config['semantic_model_name']} backbone)",
                           default_model_urls[name], self.config["weights"])]

    def build(self, column: str, runtime: Runtime) -> torch.nn.Module:
        from pyiqa.archs.topiq_arch import CFANet

        net = CFANet(semantic_model_name=self.config["semantic_model_name"], model_name=self.config["model_name"],
                     backbone_pretrain=False, pretrained=False, use_ref=True)
        if not self.config["random_init"]:
            load_checkpoint(net, self.weight_path(self.weight_specs()[0]))
        return net
