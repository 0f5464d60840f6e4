"""Demo data: a small SeIQA-layout dataset made from real photos that ship inside installed packages.

The photos are scikit-image's `skimage.data` samples and scikit-learn's `load_sample_images` (china,
flower), resized to `size` pixels on the long side with the aspect ratio kept. Each photo carries a
hand-drawn box around its main object (the astronaut's face, the coffee cup, the cat's face, ...), so the
meaning-changing edits hit what a person would name when describing the picture.

Some references also carry content a person reads or recognises:
- a sign: words rendered on a plate with matplotlib's DejaVu Sans Bold (the font ships with matplotlib,
  so the demo stays byte-reproducible);
- a face: the astronaut's own, or a framed portrait of a real face from scikit-image's LFW subset
  (`skimage.data.lfw_subset`, 25x25 grey crops, upscaled) hung in the scene.
Text and face edits apply only to references with that content; the swapped-in faces come from the LFW
subset too, from a pool of faces that belongs to one split only.

Every photo belongs to exactly one split, so no reference (and no pasted donor object) is shared between
Train, Val and Test; real SeIQA may reuse references across splits, this demo does not. Each reference
serves several pairs, one degradation at one level per pair.

Label rule (synthetic, not human opinions): every degradation has a *kind* and three graded levels, and

    score = 5 - (BASE_DAMAGE[kind] + level),   level in {1, 2, 3}

    kind          degradations                     BASE_DAMAGE   scores for levels 1, 2, 3
    photometric   gaussian_blur, gaussian_noise,       -1        5, 4, 3
                  jpeg
    attribute     object_recolour, text_blurred,        1        3, 2, 1
                  face_blurred
    layout        patch_shuffle                         1        3, 2, 1
    object        object_removed, object_pasted,        2        2, 1, 0
                  text_erased, text_changed,
                  face_swapped

Why: blur, noise and JPEG leave every object, colour and relation in place, so the meaning survives and
only legibility suffers; recolouring an object or shuffling patches keeps the objects but falsifies an
attribute or the layout, and blurring the sign or the face makes its words or its person unreadable;
removing an object or covering it with one from another photo, erasing or changing words, or putting
another person's face in place changes what the picture shows. So a meaning-changing edit scores lower
than a photometric one even where its pixel error is smaller. Levels grow the affected area (a third, two thirds, all of the object box; a third, two thirds,
all of the words) or the strength (blur sigma, noise std, JPEG quality, hue rotation, face blend), so the
score falls monotonically with the level.
Train labels are these integers 0..5; `demo_meta.csv` at the dataset root lists every pair's reference
photo, degradation, level and rule score, including Val and Test, for transparency, and for a localized edit
(object, text and face edits) the box of the pixels it changed in the degraded image (`box_x0, box_y0, box_x1,
box_y1`, exclusive end; empty for blur, noise, JPEG and patch shuffles, which touch the whole image): the known
answer an explanation's map is checked against.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import color, transform
from tqdm import tqdm

from ..errors import SiqaError
from ..reproducible import reproducible_xlsx
from . import SEIQA_DIRS

LEVELS = (1, 2, 3)
BASE_DAMAGE = {"photometric": -1, "attribute": 1, "layout": 1, "object": 2}
META_FILE = "demo_meta.csv"
#: where a localized edit landed in the degraded image, in pixels (exclusive end); empty for whole-image ones
BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")
# Spatial parameters are tuned at 256 px and scale with `size`, so a bigger demo degrades alike.
REFERENCE_SIZE = 256


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        image = getattr(data, name)()
        return image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


@dataclass(frozen=True)
class Sign:
    """Words on a plate whose top-left corner sits at `at` (fractions of the image); `font_px` at 256 px."""

    words: tuple[str, ...]
    at: tuple[float, float]
    font_px: int = 15
    ink: tuple[int, int, int] = (20, 20, 20)
    plate: tuple[int, int, int] = (245, 242, 230)


@dataclass(frozen=True)
class DemoPhoto:
    """A packaged photo, the split it belongs to, its main object's box as (x0, y0, x1, y1) fractions, and
    optionally a sign, its own face's box (fractions) or a portrait (LFW face index, (x0, y0, side) as
    fractions of the width) hung in it."""

    name: str
    split: str
    load: Callable[[], np.ndarray]
    object_box: tuple[float, float, float, float]
    sign: Sign | None = None
    face_box: tuple[float, float, float, float] | None = None
    portrait: tuple[int, tuple[float, float, float]] | None = None


PHOTOS = (
    DemoPhoto("astronaut", "train", _skimage("astronaut"), (0.20, 0.02, 0.60, 0.36),
              sign=Sign(("EARTH", "ORBIT", "1984"), (0.03, 0.86)), face_box=(0.336, 0.121, 0.543, 0.328)),
    DemoPhoto("coffee", "train", _skimage("coffee"), (0.26, 0.00, 0.74, 0.52),
              sign=Sign(("CAFE", "OPEN", "24H"), (0.04, 0.80))),
    DemoPhoto("chelsea", "train", _skimage("chelsea"), (0.30, 0.10, 0.88, 0.95)),
    DemoPhoto("motorcycle", "train", _skimage("stereo_motorcycle"), (0.04, 0.30, 0.92, 0.96),
              sign=Sign(("SPEED", "LIMIT", "50"), (0.52, 0.04))),
    DemoPhoto("china", "train", _sklearn("china.jpg"), (0.05, 0.05, 0.50, 0.85),
              sign=Sign(("NO", "PARKING", "HERE"), (0.50, 0.82))),
    DemoPhoto("camera", "train", _skimage("camera"), (0.02, 0.12, 0.74, 0.95), portrait=(3, (0.70, 0.04, 0.26))),
    DemoPhoto("coins", "train", _skimage("coins"), (0.05, 0.27, 0.55, 0.58), portrait=(8, (0.66, 0.60, 0.28))),
    DemoPhoto("hubble_deep_field", "train", _skimage("hubble_deep_field"), (0.05, 0.42, 0.28, 0.62)),
    DemoPhoto("immunohistochemistry", "val", _skimage("immunohistochemistry"), (0.48, 0.60, 0.88, 0.99),
              portrait=(5, (0.06, 0.06, 0.28))),
    DemoPhoto("retina", "val", _skimage("retina"), (0.10, 0.33, 0.33, 0.56),
              sign=Sign(("LEFT", "EYE", "SCAN"), (0.52, 0.86))),
    DemoPhoto("rocket", "test", _skimage("rocket"), (0.46, 0.12, 0.58, 1.00),
              sign=Sign(("LAUNCH", "PAD", "39A"), (0.62, 0.06))),
    DemoPhoto("flower", "test", _sklearn("flower.jpg"), (0.26, 0.08, 0.69, 0.86), portrait=(7, (0.72, 0.06, 0.24))),
    DemoPhoto("text", "test", _skimage("text"), (0.30, 0.15, 0.75, 0.90)),
)
#: LFW faces that may be swapped in, per split (none is a portrait above, none serves two splits)
FACE_DONORS = {"train": (10, 11, 12, 14), "val": (15, 16), "test": (17, 18)}
#: words a changed sign may show instead (same letters count where possible)
OTHER_WORDS = ("EXIT", "WEST", "GOLD", "MOON", "CLOSED", "NORTH", "SOUTH", "STORE", "HOTEL", "FERRY", "BANK",
               "1971", "77", "12", "MARS", "SEA", "TAXI", "ZONE", "TOUR", "DRAW")


@dataclass(frozen=True)
class SignLayout:
    """A sign as drawn in one reference: the plate's pixel box, and each word's text and top-left corner."""

    plate_box: tuple[int, int, int, int]
    words: tuple[str, ...]
    origins: tuple[tuple[int, int], ...]
    font_px: int
    ink: tuple[int, int, int]
    plate: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    """What a degradation may look at: the reference pixels, its object box in pixels, a donor photo
    of the same split whose object `object_pasted` borrows, its sign and face (if any), and a donor face
    (grey, HxW uint8) of the same split for `face_swapped`."""

    rgb: np.ndarray  # HxWx3 uint8
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, exclusive end
    donor: Scene | None = None
    sign: SignLayout | None = None
    face: tuple[int, int, int, int] | None = None
    donor_face: np.ndarray | None = None

    @property
    def scale(self) -> float:
        return max(self.rgb.shape[:2]) / REFERENCE_SIZE


@dataclass(frozen=True)
class Degradation:
    name: str
    kind: str
    apply: Callable[[Scene, int, np.random.Generator], np.ndarray]
    needs: str = ""  # "sign" or "face": applies only to references with that content
    localized: bool = False  # edits one place (an object, a sign, a face), not the whole image

    def applies_to(self, photo: DemoPhoto) -> bool:
        return {"": True, "sign": photo.sign is not None,
                "face": photo.face_box is not None or photo.portrait is not None}[self.needs]

    def score(self, level: int) -> int:
        return 5 - (BASE_DAMAGE[self.kind] + level)


DEGRADATIONS: dict[str, Degradation] = {}


def degradation(name: str, kind: str, needs: str = "", localized: bool = False):
    """Register `fn(scene, level, rng) -> HxWx3 uint8` under `name`; `kind` sets its label cost, `needs`
    the content ("sign", "face") a reference must have for it, `localized` whether it edits one place (its
    box is then recorded in `demo_meta.csv`)."""
    if kind not in BASE_DAMAGE:
        raise ValueError(f"unknown degradation kind {kind!r}")

    def register(fn):
        DEGRADATIONS[name] = Degradation(name, kind, fn, needs, localized)
        return fn

    return register


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


@degradation("gaussian_blur", "photometric")
def gaussian_blur(scene: Scene, level: int, rng: np.random.Generator) -> np.ndarray:
    sigma = (0.8, 1.8, 3.5)[level - 1] * scene.scale
    return _to_uint8(ndimage.gaussian_filter(scene.rgb.astype(np.float64), sigma=(sigma, sigma, 0)))


@degradation("gaussian_noise", "photometric")
def gaussian_noise(scene: Scene, level: int, rng: np.random.Generator) -> np.ndarray:
    std = (6.0, 15.0, 32.0)[level - 1]
    return _to_uint8(scene.rgb + rng.normal(0.0, std, scene.rgb.shape))


@degradation("jpeg", "photometric")
def jpeg(scene: Scene, level: int, rng: np.random.Generator) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(scene.rgb).save(buffer, format="JPEG", quality=(50, 20, 8)[level - 1])
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def _level_fraction(level: int) -> float:
    """Share of the object an edit covers: a third, two thirds, all of it."""
    return level / len(LEVELS)


def _fill_hole(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Push-pull fill: average the known pixels down a 2x pyramid until the hole vanishes, then
    interpolate back up, so the hole takes the smooth colours of its surroundings."""
    if not hole.any() or min(hole.shape) < 2:
        return image
    weight = (~hole).astype(np.float64)
    h, w = hole.shape
    ph, pw = h + h % 2, w + w % 2
    padded_weight = np.pad(weight, ((0, ph - h), (0, pw - w)))
    padded_sum = np.pad(image * weight[..., None], ((0, ph - h), (0, pw - w), (0, 0)))
    coarse_weight = padded_weight.reshape(ph // 2, 2, pw // 2, 2).sum(axis=(1, 3))
    coarse_sum = padded_sum.reshape(ph // 2, 2, pw // 2, 2, 3).sum(axis=(1, 3))
    coarse = coarse_sum / np.maximum(coarse_weight, 1e-12)[..., None]
    coarse = _fill_hole(coarse, coarse_weight == 0)
    upsampled = transform.resize(coarse, (ph, pw, 3), order=1, mode="edge", anti_aliasing=False)[:h, :w]
    return np.where(hole[..., None], upsampled, image)


def _sub_box(scene: Scene, level: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A full-height strip of the object box whose width is the level's fraction, at a random offset."""
    x0, y0, x1, y1 = scene.box
    width = max(1, round((x1 - x0) * _level_fraction(level)))
    left = x0 + int(rng.integers(0, x1 - x0 - width + 1))
    return left, y0, left + width, y1


@degradation("object_removed", "object", localized=True)
def object_removed(scene: Scene, level: int, rng: np.random.Generator) -> np.ndarray:
    x0, y0, x1, y1 = _sub_box(scene, level, rng)
    hole = np.zeros(scene.rgb.shape[:2], dtype=bool)
    hole[y0:y1, x0:x1] = True
    filled = _fill_hole(scene.rgb.astype(np.float64), hole)
    # Inpainted regions in the wild are smooth but not flat: keep a little sensor-like grain.
    grain = rng.normal(0.0, 3.0, filled.shape) * hole[..., None]
    return _to_uint8(filled + grain)


@degradation("object_pasted", "object", localized=True)
def object_pasted(scene: Scene, level: int, rng: np.random.Generator) -> np.ndarray:
    if scene.donor is None:
        raise ValueError("object_pasted needs a donor photo")
    dx0, dy0, dx1, dy1 = scene.donor.box
    donor_object = scene.donor.rgb[dy0:dy1, dx0:dx1]
    x0, y0, x1, y1 = scene.box
    height, width = scene.rgb.shape[:2]
    # The pasted object keeps its own aspect ratio and covers the level's share of the target's area.
    area = (x1 - x0) * (y1 - y0) * _level_fraction(level)
    aspect = donor_object.shape[1] / donor_object.shape[0]
    paste_w = int(np.clip(round((area * aspect) ** 0.5), 4, width))
    paste_h = int(np.clip(round((area / aspect) ** 0.5), 4, height))
    jitter = rng.uniform(-0.15, 0.15, size=2) * (x1 - x0, y1 - y0)
    centre_x, centre_y = (x0 + x1) / 2 + jitter[0], (y0 + y1) / 2 + jitter[1]
    left = int(np.clip(round(centre_x - paste_w / 2), 0, width - paste_w))
    top = int(np.clip(round(centre_y - paste_h / 2), 0, height - paste_h))
    pasted = Image.fromarray(donor_object).resize((paste_w, paste_h), Image.LANCZOS)
    out = scene.rgb.copy()
    out[top : top + paste_h, left : left + paste_w] = np.asarray(pasted)
    return out


@degradation("patch_shuffle", "layout")
def patch_shuffle(scene: Scene, level: int, rng: np.random.Generator) -> np.ndarray:
    patch = max(8, round(32 * scene.scale))
    rows, cols = scene.rgb.shape[0] // patch, scene.rgb.shape[1] // patch
    count = max(2, round(rows * cols * (0.25, 0.5, 1.0)[level - 1]))
    chosen = rng.permutation(rows * cols)[:count]
    moved_to = np.roll(chosen, 1)  # a cyclic shift of a random order moves every chosen patch
    out = scene.rgb.copy()
    for source, target in zip(chosen, moved_to):
        sr, sc = divmod(int(source), cols)
        tr, tc = divmod(int(target), cols)
        out[tr * patch : (tr + 1) * patch, tc * patch : (tc + 1) * patch] = scene.rgb[
            sr * patch : (sr + 1) * patch, sc * patch : (sc + 1) * patch
        ]
    return out


@degradation("object_recolour", "attribute", localized=True)
def object_recolour(scene: Scene, level: int, rng: np.random.Generator) -> np.ndarray:
    x0, y0, x1, y1 = scene.box
    yy, xx = np.mgrid[: scene.rgb.shape[0], : scene.rgb.shape[1]]
    # An ellipse inscribed in the box follows the object better than the box, which holds background corners.
    inside = ((xx + 0.5 - (x0 + x1) / 2) / ((x1 - x0) / 2)) ** 2 + ((yy + 0.5 - (y0 + y1) / 2) / ((y1 - y0) / 2)) ** 2
    mask = ndimage.gaussian_filter((inside <= 1).astype(np.float64), 2.0 * scene.scale)[..., None]
    hsv = color.rgb2hsv(scene.rgb)
    hsv[..., 0] = (hsv[..., 0] + (1 / 6, 1 / 3, 1 / 2)[level - 1] + rng.uniform(-0.02, 0.02)) % 1.0
    if hsv[..., 1][inside <= 1].mean() < 0.1:  # a grey object has no hue to rotate: tint it instead
        hsv[..., 1] = np.maximum(hsv[..., 1], 0.45)
    recoloured = color.hsv2rgb(hsv) * 255.0
    return _to_uint8(mask * recoloured + (1 - mask) * scene.rgb)


def font(px: int):
    """matplotlib's DejaVu Sans Bold at `px` pixels (the file ships inside matplotlib)."""
    import matplotlib
    from PIL import ImageFont

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"), px)


def layout_sign(sign: Sign, width: int, height: int, scale: float) -> SignLayout:
    """Where `sign`'s plate and words go in an image of `width` x `height` (kept inside the image)."""
    px = max(8, round(sign.font_px * scale))
    face = font(px)
    space, pad = face.getlength(" "), max(2, round(0.35 * px))
    lengths = [face.getlength(w) for w in sign.words]
    plate_w = round(sum(lengths) + space * (len(lengths) - 1) + 2 * pad)
    plate_h = round(px * 1.25 + 2 * pad)
    x0 = int(np.clip(round(sign.at[0] * width), 0, max(0, width - plate_w)))
    y0 = int(np.clip(round(sign.at[1] * height), 0, max(0, height - plate_h)))
    origins, x = [], x0 + pad
    for length in lengths:
        origins.append((round(x), y0 + pad))
        x += length + space
    return SignLayout((x0, y0, min(width, x0 + plate_w), min(height, y0 + plate_h)), sign.words, tuple(origins),
                      px, sign.ink, sign.plate)


def draw_sign(rgb: np.ndarray, layout: SignLayout, words: tuple[str, ...] | None = None) -> np.ndarray:
    """`rgb` with the plate repainted and `words` (default: the sign's own; "" leaves a word's place
    empty) written at the sign's word positions."""
    from PIL import ImageDraw

    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = layout.plate_box
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=layout.plate)
    face = font(layout.font_px)
    for word, origin in zip(layout.words if words is None else words, layout.origins):
        if word:
            draw.text(origin, word, font=face, fill=layout.ink)
    return np.asarray(image)


def _chosen_words(layout: SignLayout, level: int, rng: np.random.Generator) -> list[int]:
    """Indices of the level's share of the sign's words (at least one), in random order."""
    count = max(1, round(len(layout.words) * _level_fraction(level)))
    return sorted(int(i) for i in rng.permutation(len(layout.words))[:count])


@degradation("text_blurred", "attribute", needs="sign", localized=True)
def text_blurred(scene: Scene, level: int, rng: np.random.Generator) -> np.ndarray:
    x0, y0, x1, y1 = scene.sign.plate_box
    sigma = (1.2, 2.0, 3.2)[level - 1] * scene.scale
    out = scene.rgb.astype(np.float64)
    out[y0:y1, x0:x1] = ndimage.gaussian_filter(out[y0:y1, x0:x1], sigma=(sigma, sigma, 0), mode="nearest")
    return _to_uint8(out)


@degradation("text_erased", "object", needs="sign", localized=True)
def text_erased(scene: Scene, level: int, rng: np.random.Generator) -> np.ndarray:
    erased = set(_chosen_words(scene.sign, level, rng))
    return draw_sign(scene.rgb, scene.sign, tuple("" if i in erased else w for i, w in enumerate(scene.sign.words)))


@degradation("text_changed", "object", needs="sign", localized=True)
def text_changed(scene: Scene, level: int, rng: np.random.Generator) -> np.ndarray:
    changed = set(_chosen_words(scene.sign, level, rng))
    words = list(scene.sign.words)
    for i in changed:
        # another word of about the same length, so the new sign fits the plate
        fits = [w for w in OTHER_WORDS if w != words[i] and abs(len(w) - len(words[i])) <= 1] or list(OTHER_WORDS)
        words[i] = fits[int(rng.integers(len(fits)))]
    return draw_sign(scene.rgb, scene.sign, tuple(words))


def _face_mask(scene: Scene) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The face box and a soft elliptical mask over it (HxWx1 in [0, 1])."""
    x0, y0, x1, y1 = scene.face
    yy, xx = np.mgrid[: scene.rgb.shape[0], : scene.rgb.shape[1]]
    inside = ((xx + 0.5 - (x0 + x1) / 2) / ((x1 - x0) / 2)) ** 2 + ((yy + 0.5 - (y0 + y1) / 2) / ((y1 - y0) / 2)) ** 2
    return scene.face, ndimage.gaussian_filter((inside <= 1.1).astype(np.float64), 1.5 * scene.scale)[..., None]


@degradation("face_blurred", "attribute", needs="face", localized=True)
def face_blurred(scene: Scene, level: int, rng: np.random.Generator) -> np.ndarray:
    (x0, y0, x1, y1), mask = _face_mask(scene)
    sigma = (0.05, 0.09, 0.15)[level - 1] * (x1 - x0)
    blurred = ndimage.gaussian_filter(scene.rgb.astype(np.float64), sigma=(sigma, sigma, 0))
    return _to_uint8(mask * blurred + (1 - mask) * scene.rgb)


@degradation("face_swapped", "object", needs="face", localized=True)
def face_swapped(scene: Scene, level: int, rng: np.random.Generator) -> np.ndarray:
    if scene.donor_face is None:
        raise ValueError("face_swapped needs a donor face")
    (x0, y0, x1, y1), mask = _face_mask(scene)
    region = scene.rgb[y0:y1, x0:x1].astype(np.float64)
    donor = np.asarray(Image.fromarray(scene.donor_face).resize((x1 - x0, y1 - y0), Image.BICUBIC), np.float64)
    # the donor keeps the replaced face's brightness and contrast per channel, so only who it is changes
    donor = (donor - donor.mean()) / max(donor.std(), 1e-6)
    matched = donor[..., None] * region.std(axis=(0, 1)) + region.mean(axis=(0, 1))
    swapped = scene.rgb.astype(np.float64)
    swapped[y0:y1, x0:x1] = matched
    alpha = (0.45, 0.75, 1.0)[level - 1]
    return _to_uint8(alpha * mask * swapped + (1 - alpha * mask) * scene.rgb)


@dataclass(frozen=True)
class PlannedPair:
    name: str
    split: str
    photo: str
    donor: str
    degradation: str
    level: int

    @property
    def score(self) -> int:
        return DEGRADATIONS[self.degradation].score(self.level)


def _combination_cycle(rng: np.random.Generator) -> list[tuple[str, int]]:
    """Every (degradation, level) once, in blocks that each hold every degradation once, so even a short
    split sees every family and a long one sees every level."""
    names = sorted(DEGRADATIONS)
    cycle = []
    for block in range(len(LEVELS)):
        for index in rng.permutation(len(names)):
            cycle.append((names[index], LEVELS[(block + index) % len(LEVELS)]))
    return cycle


def plan_pairs(counts: dict[str, int], seed: int) -> list[PlannedPair]:
    """Which reference, donor, degradation and level each pair gets; names run 000001... across splits."""
    plan = []
    for split_index, split in enumerate(SEIQA_DIRS):
        photos = [p for p in PHOTOS if p.split == split]
        rng = np.random.default_rng([seed, split_index])
        cycle = _combination_cycle(rng)
        for i in range(counts[split]):
            name, level = cycle[i % len(cycle)]
            eligible = [p.name for p in photos if DEGRADATIONS[name].applies_to(p)]
            if not eligible:
                raise ValueError(f"no {split} photo has the content {name} needs")
            # Shift the photo each time the cycle wraps: when len(cycle) is a multiple of len(eligible),
            # pair i and pair i + len(cycle) would otherwise repeat the same photo, degradation and level.
            photo = eligible[(i + i // len(cycle)) % len(eligible)]
            others = [p.name for p in photos if p.name != photo]
            donor = others[int(rng.integers(len(others)))]
            plan.append(PlannedPair(f"{len(plan) + 1:06d}.png", split, photo, donor, name, level))
    return plan


def load_photo(photo: DemoPhoto, size: int) -> Scene:
    """The packaged photo as RGB uint8, `size` px on its long side, with its object box in pixels."""
    array = photo.load()
    if array.dtype != np.uint8:
        raise ValueError(f"packaged photo {photo.name} is {array.dtype}, expected uint8")
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    image = Image.fromarray(np.ascontiguousarray(array[..., :3]))
    scale = size / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
    def pixels(fractions):
        fx0, fy0, fx1, fy1 = fractions
        return round(fx0 * image.width), round(fy0 * image.height), round(fx1 * image.width), round(fy1 * image.height)

    rgb, scale = np.asarray(image), size / REFERENCE_SIZE
    face = pixels(photo.face_box) if photo.face_box else None
    if photo.portrait is not None:
        rgb, face = _hang_portrait(rgb, *photo.portrait, scale)
    sign = layout_sign(photo.sign, image.width, image.height, scale) if photo.sign else None
    if sign is not None:
        rgb = draw_sign(rgb, sign)
    return Scene(rgb, pixels(photo.object_box), sign=sign, face=face)


def lfw_face(index: int) -> np.ndarray:
    """Face `index` of scikit-image's LFW subset (the first 100 of its 200 crops are faces), grey uint8."""
    from skimage import data

    return np.clip(np.rint(data.lfw_subset()[index] * 255), 0, 255).astype(np.uint8)


def _hang_portrait(rgb: np.ndarray, index: int, place: tuple[float, float, float], scale: float):
    """`rgb` with LFW face `index` in a dark frame at (x0, y0, side) fractions of the width; and the
    face's pixel box."""
    height, width = rgb.shape[:2]
    side = max(16, round(place[2] * width))
    border = max(1, round(3 * scale))
    x0 = int(np.clip(round(place[0] * width), 0, width - side))
    y0 = int(np.clip(round(place[1] * width), 0, height - side))
    out = rgb.copy()
    out[y0:y0 + side, x0:x0 + side] = (40, 30, 25)
    inner = side - 2 * border
    face = np.asarray(Image.fromarray(lfw_face(index)).resize((inner, inner), Image.BICUBIC))
    out[y0 + border:y0 + border + inner, x0 + border:x0 + border + inner] = face[..., None]
    return out, (x0 + border, y0 + border, x0 + border + inner, y0 + border + inner)


def edited_box(reference: np.ndarray, edited: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), exclusive end, of the pixels an edit changed: exactly where it landed, whatever
    random offset or soft mask edge it drew."""
    rows, cols = np.nonzero(np.any(reference != edited, axis=-1))
    if not len(rows):
        raise ValueError("the edit changed no pixel")
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def _png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def write_scores_xlsx(path: Path, rows: list[tuple[str, int]]) -> None:
    """SeIQA's `<Split>_scores.xlsx`: a header row, then `name, score`; byte-identical for equal rows."""
    path.write_bytes(reproducible_xlsx([("name", "score"), *rows]))


def _prepare_out(out: Path) -> None:
    """Replace an earlier demo in `out`, but never clobber a folder that holds something else."""
    if out.exists() and not out.is_dir():
        raise SiqaError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / META_FILE).is_file():
            raise SiqaError(f"{out}: folder is not empty and holds no earlier demo ({META_FILE}); choose another --out")
        for folder in SEIQA_DIRS.values():
            shutil.rmtree(out / folder, ignore_errors=True)
        (out / META_FILE).unlink()
    out.mkdir(parents=True, exist_ok=True)


def make_demo_dataset(
    out: Path,
    n_train: int = 72,
    n_val: int = 12,
    n_test: int = 24,
    seed: int = 0,
    size: int = 256,
    progress: bool = False,
) -> dict:
    """Write a SeIQA-layout demo dataset to `out` (see the module docstring for the label rule) and
    return a summary: pair counts per split, references per split, Train score counts, degradations."""
    out = Path(out)
    counts = {"train": n_train, "val": n_val, "test": n_test}
    if n_train < 1 or n_val < 0 or n_test < 0:
        raise SiqaError(f"{out}: demo needs n_train >= 1 and n_val, n_test >= 0 (got {n_train}, {n_val}, {n_test})")
    if size < 64:
        raise SiqaError(f"{out}: demo image size must be at least 64 px (got {size})")
    _prepare_out(out)

    scenes = {photo.name: load_photo(photo, size) for photo in PHOTOS if counts[photo.split] > 0}
    reference_png = {name: _png_bytes(scene.rgb) for name, scene in scenes.items()}
    plan = plan_pairs(counts, seed)
    for split, n in counts.items():
        if n:
            (out / SEIQA_DIRS[split] / "Ref").mkdir(parents=True)
            (out / SEIQA_DIRS[split] / "Dist").mkdir(parents=True)

    boxes = {}
    for index, pair in enumerate(tqdm(plan, desc="demo pairs", unit="pair", disable=not progress)):
        rng = np.random.default_rng([seed, len(SEIQA_DIRS) + index])
        donor_face = lfw_face(int(rng.choice(FACE_DONORS[pair.split])))
        scene = dataclasses.replace(scenes[pair.photo], donor=scenes[pair.donor], donor_face=donor_face)
        distorted = DEGRADATIONS[pair.degradation].apply(scene, pair.level, rng)
        if DEGRADATIONS[pair.degradation].localized:
            boxes[pair.name] = edited_box(scene.rgb, distorted)
        folder = out / SEIQA_DIRS[pair.split]
        (folder / "Ref" / pair.name).write_bytes(reference_png[pair.photo])
        (folder / "Dist" / pair.name).write_bytes(_png_bytes(distorted))

    train = [pair for pair in plan if pair.split == "train"]
    write_scores_xlsx(out / "Train" / "Train_scores.xlsx", [(pair.name, pair.score) for pair in train])
    with open(out / META_FILE, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["name", "split", "reference", "donor", "degradation", "kind", "level", "score", *BOX_COLUMNS])
        for pair in plan:
            kind = DEGRADATIONS[pair.degradation].kind
            donor = pair.donor if pair.degradation == "object_pasted" else ""
            writer.writerow([pair.name, pair.split, pair.photo, donor, pair.degradation, kind, pair.level, pair.score,
                             *boxes.get(pair.name, ("",) * len(BOX_COLUMNS))])

    return {
        "out": str(out),
        "pairs": {SEIQA_DIRS[split]: n for split, n in counts.items()},
        "references": {
            SEIQA_DIRS[split]: sorted({pair.photo for pair in plan if pair.split == split}) for split in counts
        },
        "train_score_counts": {score: sum(pair.score == score for pair in train) for score in range(6)},
        "degradations": sorted(DEGRADATIONS),
    }
