"""Where in the degraded image the meaning changed: a semantic difference map per pair.

The map is built from the spatial signals siqa's extractors already compute with real weights that run
offline, each a per-pixel value in [0, 1] on the degraded image's grid (the reference's size: a pair's
degraded image is resized to it when they differ):

    classes   Jensen-Shannon divergence (/ ln 2) of the EfficientNet-Lite ImageNet class distributions of
              reference and degraded image at each cell of the final feature map (the `regions`
              extractor's network and head, each cell pooled with its 3x3 neighbourhood for context)
    features  1 - cosine of the unit-normalised stride-16 feature vectors of the same network, halved
              (an LPIPS-like map of what the network sees change, one level below the classes)
    text      each reference OCR box (PP-OCRv4, the `text` extractor's engine) weighted by how much of its
              text the degraded image no longer reads there: 1 - character similarity
    faces     each reference face (the `faces` extractor's Haar cascade) weighted by 1 where the degraded
              image no longer shows a face there, else by 1 - SSIM of the two face crops
    patches   when a `dino` extractor with its weights is given (a run that uses DINO): (1 - cosine) / 2 of the
              reference's and degraded image's patch tokens, per cell of its grid at its first input size

The map is the per-pixel mean of the signals: where several of them agree (the network sees new classes and
new features, the words no longer read) the change is surest, and a sign or a face that changed stands out
however little the network saw move there. Its peak is where the meaning changed most, and `concentration`
(share of the map's mass in its top 10% of pixels) says whether the change sits in one place (an object,
a sign, a face) or is spread over the image (blur, noise, JPEG: about 0.1 when it is even).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch.nn.functional as F
from PIL import Image

from .devices import model_batches
from .extractors.deep import js_divergence
from .extractors.faces import MATCH_IOU, FacesExtractor, iou
from .extractors.imagenet import MEAN, STD
from .extractors.regions import RegionsExtractor
from .extractors.text import TextExtractor, char_similarity, polygon_mask
from .io import DecodedImage, DecodedPair

SIGNALS = ("classes", "features", "text", "faces")  # always there; "patches" joins them with a DINO extractor
#: the EfficientNet-Lite block whose output is the stride-16 feature map (see `imagenet.TAPS`)
STRIDE16_BLOCK = 10
TOP_SHARE = 0.1  # `concentration`: the share of pixels whose mass is measured


@dataclass
class SemanticMap:
    """The map (H x W float32 in [0, 1], the degraded image's pixels) and the signals it is the mean of."""

    values: np.ndarray
    signals: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def peak(self) -> tuple[int, int]:
        """(x, y) of the largest value (the first one in row order on ties)."""
        y, x = np.unravel_index(int(np.argmax(self.values)), self.values.shape)
        return int(x), int(y)

    def points_into(self, box: tuple[int, int, int, int], margin: int = 8) -> bool:
        """The pointing game: whether the peak lies in `box` (x0, y0, x1, y1, exclusive end) widened by `margin` px."""
        x, y = self.peak
        x0, y0, x1, y1 = box
        return x0 - margin <= x < x1 + margin and y0 - margin <= y < y1 + margin

    @property
    def concentration(self) -> float:
        """Share of the map's mass in its top TOP_SHARE of pixels: 1 when the change sits in a tenth of the
        image or less, TOP_SHARE when it is spread evenly (and for an empty map)."""
        flat = np.sort(self.values.ravel().astype(np.float64))[::-1]
        total = flat.sum()
        if total <= 0:
            return TOP_SHARE
        return float(flat[: max(1, round(TOP_SHARE * flat.size))].sum() / total)


def _upsample(cells: np.ndarray, height: int, width: int) -> np.ndarray:
    """A coarse grid of values stretched bilinearly over `height` x `width` pixels (cell centres kept)."""
    return np.asarray(Image.fromarray(cells.astype(np.float32), mode="F").resize((width, height), Image.BILINEAR),
                      dtype=np.float32)


class SemanticMapper:
    """Computes `SemanticMap`s with the networks of the `regions`, `text` and `faces` extractors (built with
    default settings unless given): the weights are the ones those extractors load, shipped in pip packages."""

    def __init__(self, regions: RegionsExtractor | None = None, text: TextExtractor | None = None,
                 faces: FacesExtractor | None = None, patches=None):
        """`patches`: a `dino` extractor whose patch tokens add the `patches` signal (None: no such signal)."""
        self.regions = regions or RegionsExtractor()
        self.text = text or TextExtractor()
        self.faces = faces or FacesExtractor()
        self.patches = patches

    def extractors(self) -> list:
        """The extractors whose weights the maps need (for `featurestore.weights.check_weights`)."""
        return [self.regions, self.text, self.faces, *([self.patches] if self.patches is not None else [])]

    def close(self) -> None:
        for extractor in self.extractors():
            extractor.close()

    # --- network signals -----------------------------------------------------------------------------
    def _network_maps(self, image: DecodedImage) -> tuple[np.ndarray, np.ndarray]:
        """(stride-16 unit feature vectors C x h x w, final-map class distributions 1000 x h' x w') of `image`,
        memoised on it."""
        def compute():
            net, runtime = self.regions.loaded, self.regions.runtime
            with runtime.inference():
                [(_, batch)] = model_batches([image], self.regions.config["size"], "keep", MEAN, STD, runtime)
                h = net._swish(net._bn0(net._conv_stem(batch)))
                for index, block in enumerate(net._blocks):
                    h = block(h)
                    if index == STRIDE16_BLOCK:
                        mid = F.normalize(h.float(), dim=1)
                final = net._swish(net._bn1(net._conv_head(h))).float()
                # each cell with its neighbours: a class is recognised from an object, not from 32 px of it
                context = F.avg_pool2d(final, 3, stride=1, padding=1, count_include_pad=False)
                logits = net._fc(context.permute(0, 2, 3, 1).to(net._fc.weight.dtype)).float()
                probs = logits.softmax(-1).permute(0, 3, 1, 2)
            return mid[0].cpu().numpy(), probs[0].cpu().numpy().astype(np.float64)

        return image.cached(("semantic-map-network", self.regions.config_hash), compute)

    def _network_signals(self, pair: DecodedPair) -> dict[str, np.ndarray]:
        (ref_mid, ref_probs), (dist_mid, dist_probs) = self._network_maps(pair.ref), self._network_maps(pair.dist)
        js = js_divergence(ref_probs.transpose(1, 2, 0), dist_probs.transpose(1, 2, 0)) / math.log(2)
        distance = (1.0 - np.sum(ref_mid * dist_mid, axis=0)) / 2.0
        h, w = pair.dist.height, pair.dist.width
        return {"classes": np.clip(_upsample(js, h, w), 0, 1), "features": np.clip(_upsample(distance, h, w), 0, 1)}

    # --- text and faces ------------------------------------------------------------------------------
    def _text_signal(self, pair: DecodedPair) -> np.ndarray:
        out = np.zeros((pair.dist.height, pair.dist.width), dtype=np.float32)
        read = self.text._read(pair.ref)
        if read["boxes"]:
            readings = self.text._recognise(pair.dist, read["boxes"])
            for box, said, (now, _) in zip(read["boxes"], read["texts"], readings):
                lost = 1.0 - char_similarity(said, now)
                mask = polygon_mask(out.shape, [box])
                out[mask] = np.maximum(out[mask], lost)
        return out

    def _face_signal(self, pair: DecodedPair) -> np.ndarray:
        from skimage.metrics import structural_similarity

        out = np.zeros((pair.dist.height, pair.dist.width), dtype=np.float32)
        ref_boxes, _ = self.faces._faces(pair.ref)
        dist_boxes, _ = self.faces._faces(pair.dist)
        for box in ref_boxes:
            found = len(dist_boxes) and iou(box[None], dist_boxes).max() >= MATCH_IOU
            ssim = structural_similarity(self.faces._crop(pair.ref, box), self.faces._crop(pair.dist, box),
                                         data_range=1.0)
            changed = float(np.clip(1.0 - ssim, 0, 1)) if found else 1.0
            x, y, w, h = (int(v) for v in box)
            out[y:y + h, x:x + w] = np.maximum(out[y:y + h, x:x + w], changed)
        return out

    def _patch_signal(self, pair: DecodedPair) -> np.ndarray:
        size, grid = self.patches.config["sizes"][0], self.patches.config["grid"]
        tokens = self.patches.compute_images([pair.ref, pair.dist])[f"s{size}_patches"].reshape(2, grid * grid, -1)
        ref, dist = (t / np.maximum(np.linalg.norm(t, axis=-1, keepdims=True), 1e-12) for t in tokens.astype(np.float64))
        dissimilarity = ((1.0 - np.sum(ref * dist, axis=-1)) / 2.0).reshape(grid, grid)
        return np.clip(_upsample(dissimilarity, pair.dist.height, pair.dist.width), 0, 1)

    # --- the map -------------------------------------------------------------------------------------
    def map(self, pair: DecodedPair) -> SemanticMap:
        signals = self._network_signals(pair)
        signals["text"] = self._text_signal(pair)
        signals["faces"] = self._face_signal(pair)
        if self.patches is not None:
            signals["patches"] = self._patch_signal(pair)
        return SemanticMap(np.mean(list(signals.values()), axis=0, dtype=np.float32), signals)


def patch_extractor(extractors) -> object | None:
    """The first `dino` extractor among `extractors` whose weights are on this machine (random init counts:
    tests), for the `patches` signal; None when there is none."""
    return next((e for e in extractors
                 if e.name == "dino" and all(source.found for source in e.weight_sources())), None)


def decoded_pair(ref_path: str, dist_path: str) -> DecodedPair:
    """The pair as the store's extractors see it (decoded, oriented, the degraded image at the reference's size)."""
    from .io import decode, match_size

    ref, dist = decode(ref_path), decode(dist_path)
    dist, resized = match_size(ref, dist)
    return DecodedPair(f"{ref.sha256}:{dist.sha256}", ref, dist, resized)


__all__ = ["SIGNALS", "SemanticMap", "SemanticMapper", "decoded_pair", "patch_extractor"]
