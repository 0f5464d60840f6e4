"""Are the reference's faces still there, and still the same faces? OpenCV's Haar frontal-face cascade.

The cascade file ships inside `opencv-python-headless` 4.x (`cv2.data.haarcascades`; OpenCV 5 moved the
cascades out of the main package, so 4.x is required). Per image (memoised on the decoded image, so a
reference shared by the pairs of a chunk is searched once): the face boxes and each one's cascade level
weight (how face-like the last stage found it). Per pair, every reference face is looked for in the degraded
image (the best-overlapping degraded detection), and the reference box is compared with the same box of the
degraded image by two identity-oriented descriptors at 64x64 grey: SSIM, and the chi-square distance of
4x4-cell uniform LBP histograms (the LBPH face-recognition descriptor, Ahonen et al. 2006).

    redetected_share   share of reference faces detected again (IoU >= 0.5 with a degraded detection)
    iou_mean           mean best IoU of the reference faces
    weight_drop        mean reference level weight - weight of the matching degraded detection (0 if none)
    crop_ssim_mean/min SSIM of the face crops, mean and worst face
    lbp_chi2_mean/max  LBP-histogram distance of the face crops, mean and worst face
    faces_added        degraded detections that match no reference face

"No face in the reference" is `no_face` = 1, and the per-face columns then take the value of nothing lost
(share 1, IoU 1, drop 0, SSIM 1, distance 0); `faces_added` is counted either way.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from ..io import DecodedImage, DecodedPair
from ..weights import WeightSpec, located, package_version, resolve
from .base import EXTRACTORS, Column, ExtractorSettings, PairExtractor, WeightSource, scalar_columns

PACKAGE = "opencv-python-headless"
PAIR_COLUMNS = ("no_face", "ref_faces", "face_area", "redetected_share", "iou_mean", "weight_drop",
                "crop_ssim_mean", "crop_ssim_min", "lbp_chi2_mean", "lbp_chi2_max", "faces_added")
CROP = 64
MATCH_IOU = 0.5


def _packaged_cascades() -> Path | None:
    try:
        import cv2
    except ImportError:
        return None
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    return Path(folder) if folder else None


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (n, 4) with every box in b (m, 4); boxes are x, y, w, h."""
    ax0, ay0, ax1, ay1 = a[:, 0:1], a[:, 1:2], a[:, 0:1] + a[:, 2:3], a[:, 1:2] + a[:, 3:4]
    bx0, by0, bx1, by1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    inter = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None) * \
        np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
    union = a[:, 2:3] * a[:, 3:4] + b[:, 2] * b[:, 3] - inter
    return inter / np.maximum(union, 1e-12)


def lbp_histogram(grey: np.ndarray, cells: int = 4) -> np.ndarray:
    """`grey` in [0, 1] -> concatenated, per-cell normalised histograms of uniform LBP codes (P=8, R=1: 10 codes)."""
    from skimage.feature import local_binary_pattern

    codes = local_binary_pattern(np.rint(grey * 255).astype(np.uint8), 8, 1, method="uniform")
    h, w = codes.shape
    hists = []
    for i in range(cells):
        for j in range(cells):
            cell = codes[i * h // cells:(i + 1) * h // cells, j * w // cells:(j + 1) * w // cells]
            hist = np.bincount(cell.astype(np.int64).ravel(), minlength=10).astype(np.float64)
            hists.append(hist / max(hist.sum(), 1.0))
    return np.concatenate(hists)


def chi2(p: np.ndarray, q: np.ndarray) -> float:
    return float(0.5 * np.sum((p - q) ** 2 / np.maximum(p + q, 1e-12)))


@EXTRACTORS.register()
class FacesExtractor(PairExtractor):
    name = "faces"
    version = 1
    batch_size = 16
    class Settings(ExtractorSettings):
        cascade: str = Field("", description="explicit path to haarcascade_frontalface_default.xml; default: cv2.data's")
        scale_factor: float = Field(1.1, gt=1, description="OpenCV detectMultiScale's image pyramid step")
        min_neighbors: int = Field(5, ge=0, description="OpenCV detectMultiScale's neighbours a detection needs")
        min_size: float = Field(0.06, gt=0, le=1, description="smallest face side, as a share of the image's short "
                                                              "side (at least 16 px)")

    def __init__(self, settings=None, **config):
        super().__init__(settings, **config)
        self._cascade = None

    def pair_columns(self) -> list[Column]:
        return [Column(n) for n in PAIR_COLUMNS]

    # --- weights ------------------------------------------------------------------------------------
    def weight_specs(self) -> list[WeightSpec]:
        filename = "haarcascade_frontalface_default.xml"
        folder = _packaged_cascades()
        return [WeightSpec(what=f"Haar frontal-face cascade ({package_version(PACKAGE)})", local_name=filename,
                           download=f"`pip install '{PACKAGE}<5'` (ships the file in cv2.data.haarcascades)",
                           config_path=self.config["cascade"], caches=(folder / filename,) if folder else ())]

    def weight_sources(self) -> list[WeightSource]:
        return [resolve(spec) for spec in self.weight_specs()]

    @property
    def cascade(self):
        if self._cascade is None:
            import cv2

            if not hasattr(cv2, "CascadeClassifier"):
                raise RuntimeError(f"OpenCV {cv2.__version__} has no CascadeClassifier (OpenCV 5 dropped it): "
                                   f"pip install '{PACKAGE}<5'")
            path = located(self.weight_specs()[0])
            cascade = cv2.CascadeClassifier(path)
            if cascade.empty():
                raise RuntimeError(f"{path}: not a readable OpenCV cascade file")
            self._cascade = cascade
        return self._cascade

    def close(self) -> None:
        self._cascade = None

    # --- per image ----------------------------------------------------------------------------------
    @staticmethod
    def _grey(image: DecodedImage) -> np.ndarray:
        return image.cached("grey-uint8", lambda: np.clip(np.rint(image.gray * 255), 0, 255).astype(np.uint8))

    def _faces(self, image: DecodedImage) -> tuple[np.ndarray, np.ndarray]:
        """Face boxes (n, 4) as x, y, w, h and their cascade level weights (n,)."""
        def compute():
            side = max(16, round(self.config["min_size"] * min(image.height, image.width)))
            boxes, _, weights = self.cascade.detectMultiScale3(
                self._grey(image), scaleFactor=self.config["scale_factor"],
                minNeighbors=self.config["min_neighbors"], minSize=(side, side), outputRejectLevels=True)
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            return boxes, np.asarray(weights, dtype=np.float64).reshape(-1)

        return image.cached(("faces", self.config_hash), compute)

    # --- per pair -----------------------------------------------------------------------------------
    def compute_pairs(self, pairs: list[DecodedPair]) -> dict[str, np.ndarray]:
        return scalar_columns([self._pair(p) for p in pairs], PAIR_COLUMNS)

    def _crop(self, image: DecodedImage, box: np.ndarray) -> np.ndarray:
        from PIL import Image

        x, y, w, h = (int(v) for v in box)
        crop = self._grey(image)[y:y + h, x:x + w]
        return np.asarray(Image.fromarray(crop).resize((CROP, CROP), Image.BILINEAR), dtype=np.float64) / 255.0

    def _pair(self, pair: DecodedPair) -> dict[str, float]:
        from skimage.metrics import structural_similarity

        ref_boxes, ref_weights = self._faces(pair.ref)
        dist_boxes, dist_weights = self._faces(pair.dist)
        overlap = iou(ref_boxes, dist_boxes) if len(ref_boxes) and len(dist_boxes) else \
            np.zeros((len(ref_boxes), len(dist_boxes)))
        faces_added = float(np.sum(overlap.max(axis=0, initial=0.0) < MATCH_IOU)) if len(dist_boxes) else 0.0
        if not len(ref_boxes):
            return {"no_face": 1.0, "ref_faces": 0.0, "face_area": 0.0, "redetected_share": 1.0, "iou_mean": 1.0,
                    "weight_drop": 0.0, "crop_ssim_mean": 1.0, "crop_ssim_min": 1.0, "lbp_chi2_mean": 0.0,
                    "lbp_chi2_max": 0.0, "faces_added": faces_added}
        best = overlap.max(axis=1, initial=0.0)
        matched = best >= MATCH_IOU
        match_weight = np.where(matched, dist_weights[overlap.argmax(axis=1)] if len(dist_boxes) else 0.0, 0.0)
        ssim, lbp = [], []
        for box in ref_boxes:
            a, b = self._crop(pair.ref, box), self._crop(pair.dist, box)
            ssim.append(structural_similarity(a, b, data_range=1.0))
            lbp.append(chi2(lbp_histogram(a), lbp_histogram(b)))
        return {
            "no_face": 0.0,
            "ref_faces": float(len(ref_boxes)),
            "face_area": float(np.sum(ref_boxes[:, 2] * ref_boxes[:, 3]) / (pair.ref.height * pair.ref.width)),
            "redetected_share": float(matched.mean()),
            "iou_mean": float(best.mean()),
            "weight_drop": float(np.mean(ref_weights - match_weight)),
            "crop_ssim_mean": float(np.mean(ssim)),
            "crop_ssim_min": float(np.min(ssim)),
            "lbp_chi2_mean": float(np.mean(lbp)),
            "lbp_chi2_max": float(np.max(lbp)),
            "faces_added": faces_added,
        }
