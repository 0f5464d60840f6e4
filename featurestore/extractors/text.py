"""Is the reference's text still there and still readable? PP-OCRv4 detection + recognition (rapidocr).

`rapidocr-onnxruntime` 1.4.4 ships the PP-OCRv4 detection and recognition ONNX files inside its wheel
(Chinese + English), so this runs on a machine that reaches no model hub; its 3.x successor `rapidocr`
downloads models at run time and is not used.

Per image (memoised on the decoded image, so a reference shared by the pairs of a chunk is read once): the
text boxes and their strings and confidences (boxes kept above `text_score`), and the boxes detected alone
(no score filter) for coverage. Per pair, each reference box is cut out of the degraded image with the same
perspective crop the OCR uses and recognised again; then

    char_similarity       area-weighted mean over reference boxes of 1 - edit distance / longer length
                          (case and spaces ignored: the recogniser merges or splits spaces at random)
    char_similarity_min   the worst box
    detected_area_share   share of the reference text area that detection still finds in the degraded image
    confidence_drop       area-weighted mean of reference confidence - confidence of the degraded reading
    words_lost/gained     reference words that no degraded reading matches (character similarity < 0.8),
                          and degraded words matching no reference word, per reference word; a "word" is
                          what the recogniser separates by a space, and it often merges printed words
    new_text_area         text detected in the degraded image outside the reference boxes, per image area

"No text in the reference" is the feature `no_text` = 1; the others then take the value of nothing lost
(similarity 1, share 1, drops 0), so a model reads "no text" from one column instead of a NaN hole.
"""
from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import numpy as np
from pydantic import Field

from ..io import DecodedImage, DecodedPair
from ..threads import thread_budget
from ..weights import WeightSpec, located, package_version, resolve
from .base import EXTRACTORS, Column, ExtractorSettings, PairExtractor, WeightSource, scalar_columns

PACKAGE = "rapidocr-onnxruntime"
MODEL_FILES = {"det": "ch_PP-OCRv4_det_infer.onnx", "rec": "ch_PP-OCRv4_rec_infer.onnx"}
PAIR_COLUMNS = ("no_text", "ref_boxes", "ref_text_area", "char_similarity", "char_similarity_min",
                "detected_area_share", "confidence_drop", "words_lost", "words_gained", "new_text_area")


def _package_models() -> Path | None:
    spec = find_spec("rapidocr_onnxruntime")
    return Path(spec.origin).parent / "models" if spec is not None and spec.origin else None


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insert, delete, substitute all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def char_similarity(a: str, b: str) -> float:
    """1 - normalised edit distance of the two strings, case and whitespace ignored; two empties are equal."""
    a, b = "".join(a.split()).casefold(), "".join(b.split()).casefold()
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1.0 - edit_distance(a, b) / longest


def unmatched(words: list[str], others: list[str], threshold: float = 0.8) -> int:
    """How many of `words` match none of `others` (character similarity below `threshold`, each of
    `others` used once): a misread letter keeps a word, another word does not."""
    free = list(others)
    count = 0
    for word in words:
        scores = [char_similarity(word, o) for o in free]
        if scores and max(scores) >= threshold:
            free.pop(int(np.argmax(scores)))
        else:
            count += 1
    return count


def polygon_mask(shape: tuple[int, int], boxes) -> np.ndarray:
    import cv2

    mask = np.zeros(shape, dtype=np.uint8)
    if len(boxes):
        cv2.fillPoly(mask, [np.round(np.asarray(b)).astype(np.int32) for b in boxes], 1)
    return mask.astype(bool)


def polygon_area(box) -> float:
    x, y = np.asarray(box, dtype=np.float64).T
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


@EXTRACTORS.register()
class TextExtractor(PairExtractor):
    name = "text"
    version = 1
    batch_size = 8
    class Settings(ExtractorSettings):
        det_limit_side_len: int = Field(320, ge=32, description="detection input: short side scaled up to this "
                                                                "(PP-OCR's 736 reads small text better, ~6x slower)")
        text_score: float = Field(0.5, ge=0, le=1, description="reference boxes read with lower confidence are not text")
        det_model: str = Field("", description="explicit path to the detection ONNX file; default: the rapidocr wheel's")
        rec_model: str = Field("", description="explicit path to the recognition ONNX file; default: the rapidocr "
                                               "wheel's")

    def __init__(self, settings=None, **config):
        super().__init__(settings, **config)
        self._engine = None

    def pair_columns(self) -> list[Column]:
        return [Column(n) for n in PAIR_COLUMNS]

    # --- weights ------------------------------------------------------------------------------------
    def weight_specs(self) -> list[WeightSpec]:
        models = _package_models()
        return [WeightSpec(what=f"PP-OCRv4 text {'detection' if part == 'det' else 'recognition'} "
                                f"({package_version(PACKAGE)})",
                           local_name=filename, download=f"`pip install {PACKAGE}==1.4.4` (ships the file)",
                           config_path=self.config[f"{part}_model"],
                           caches=(models / filename,) if models else ())
                for part, filename in MODEL_FILES.items()]

    def weight_sources(self) -> list[WeightSource]:
        return [resolve(spec) for spec in self.weight_specs()]

    @property
    def engine(self):
        if self._engine is None:
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError as exc:
                raise RuntimeError(f"text extractor needs `pip install {PACKAGE}==1.4.4` ({exc})") from None
            det, rec = (located(spec) for spec in self.weight_specs())
            threads = thread_budget()  # one per worker process of the parallel executor; else onnxruntime's default
            pools = {"intra_op_num_threads": threads, "inter_op_num_threads": 1} if threads else {}
            self._engine = RapidOCR(det_model_path=det, rec_model_path=rec, text_score=self.config["text_score"],
                                    det_limit_side_len=self.config["det_limit_side_len"], print_verbose=False,
                                    **pools)
        return self._engine

    def close(self) -> None:
        self._engine = None

    # --- per image ----------------------------------------------------------------------------------
    def _read(self, image: DecodedImage) -> dict:
        """Boxes (4x2 corner points), strings and confidences of the text read in `image`."""
        def compute():
            result, _ = self.engine(np.ascontiguousarray(image.rgb[..., ::-1]), use_cls=False)
            result = result or []
            return {"boxes": [np.asarray(r[0], dtype=np.float32) for r in result],
                    "texts": [str(r[1]) for r in result], "scores": [float(r[2]) for r in result]}

        return image.cached(("text-read", self.config_hash), compute)

    def _detected(self, image: DecodedImage) -> np.ndarray:
        """Mask of every pixel inside a detected text box (detection only, no recognition threshold)."""
        def compute():
            boxes, _ = self.engine(np.ascontiguousarray(image.rgb[..., ::-1]), use_cls=False, use_rec=False)
            return polygon_mask((image.height, image.width), boxes or [])

        return image.cached(("text-detected", self.config_hash), compute)

    def _recognise(self, image: DecodedImage, boxes: list[np.ndarray]) -> list[tuple[str, float]]:
        """Read `image` inside each of `boxes` (the reference's), with the OCR's own perspective crop."""
        crops = self.engine.get_crop_img_list(np.ascontiguousarray(image.rgb[..., ::-1]),
                                              [b.copy() for b in boxes])
        readings, _ = self.engine.text_rec(crops)
        return [(str(r[0]), float(r[1])) for r in readings]

    # --- per pair -----------------------------------------------------------------------------------
    def compute_pairs(self, pairs: list[DecodedPair]) -> dict[str, np.ndarray]:
        return scalar_columns([self._pair(p) for p in pairs], PAIR_COLUMNS)

    def _pair(self, pair: DecodedPair) -> dict[str, float]:
        ref = self._read(pair.ref)
        shape = (pair.ref.height, pair.ref.width)
        detected = self._detected(pair.dist)
        ref_mask = polygon_mask(shape, ref["boxes"])
        new_text_area = float((detected & ~ref_mask).mean())
        if not ref["boxes"]:
            return {"no_text": 1.0, "ref_boxes": 0.0, "ref_text_area": 0.0, "char_similarity": 1.0,
                    "char_similarity_min": 1.0, "detected_area_share": 1.0, "confidence_drop": 0.0,
                    "words_lost": 0.0, "words_gained": 0.0, "new_text_area": new_text_area}
        readings = self._recognise(pair.dist, ref["boxes"])
        weights = np.array([max(polygon_area(b), 1.0) for b in ref["boxes"]])
        weights /= weights.sum()
        similarity = np.array([char_similarity(t, d) for t, (d, _) in zip(ref["texts"], readings)])
        drop = np.array([s - d for s, (_, d) in zip(ref["scores"], readings)])
        ref_words = [w for t in ref["texts"] for w in t.split()]
        dist_words = [w for d, _ in readings for w in d.split()]
        n_words = max(len(ref_words), 1)
        return {
            "no_text": 0.0,
            "ref_boxes": float(len(ref["boxes"])),
            "ref_text_area": float(ref_mask.mean()),
            "char_similarity": float(weights @ similarity),
            "char_similarity_min": float(similarity.min()),
            "detected_area_share": float((detected & ref_mask).sum() / max(ref_mask.sum(), 1)),
            "confidence_drop": float(weights @ drop),
            "words_lost": unmatched(ref_words, dist_words) / n_words,
            "words_gained": unmatched(dist_words, ref_words) / n_words,
            "new_text_area": new_text_area,
        }
