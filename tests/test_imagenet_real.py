"""Real-weight semantic sanity: EfficientNet-Lite0's packaged ImageNet weights on real photos (skimage.data)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from featurestore.extractors import create
from featurestore.io import DecodedImage

from conftest import photo

PHOTOS = ("coffee", "chelsea", "astronaut", "rocket")


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def paste(base: np.ndarray, obj: np.ndarray) -> np.ndarray:
    """Paste `obj` scaled to half the width of `base` into its centre: a new object, most pixels untouched."""
    h, w = base.shape[:2]
    small = np.asarray(Image.fromarray(obj).resize((w // 2, h // 2), Image.BICUBIC))
    out = base.copy()
    out[h // 4:h // 4 + h // 2, w // 4:w // 4 + w // 2] = small
    return out


@pytest.fixture(scope="module")
def imagenet():
    extractor = create("imagenet")
    assert "efficientnet-lite0-57934424.pth" in extractor.weight_sources()[0].found
    return extractor


def pair_values(extractor, pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Pair columns for [(ref, dist), ...], all images in one batch."""
    images = [DecodedImage(str(i), rgb) for i, rgb in enumerate(x for pair in pairs for x in pair)]
    cols = extractor.compute_images(images)
    return extractor.derive_pairs({k: v[0::2] for k, v in cols.items()}, {k: v[1::2] for k, v in cols.items()})


def test_heavy_jpeg_is_closer_than_another_photo(imagenet):
    refs = [photo(name, 256) for name in PHOTOS]
    others = refs[1:] + refs[:1]
    v = pair_values(imagenet, [(r, jpeg(r, 10)) for r in refs] + list(zip(refs, others)))
    n = len(refs)
    for i, name in enumerate(PHOTOS):
        assert v["embed_cos"][i] > v["embed_cos"][n + i], name
        assert v["js"][i] < v["js"][n + i], name
        assert v["deep_dist"][i] < v["deep_dist"][n + i], name


def test_pasted_object_moves_classes_more_than_mild_noise(imagenet):
    cases = [("coffee", "chelsea"), ("astronaut", "rocket"), ("chelsea", "coffee")]
    rng = np.random.default_rng(0)
    pairs = []
    for base, obj in cases:
        ref = photo(base, 256)
        noisy = np.clip(ref + rng.normal(0, 5, ref.shape), 0, 255).astype(np.uint8)
        pairs += [(ref, paste(ref, photo(obj, 256))), (ref, noisy)]
    v = pair_values(imagenet, pairs)
    for i, case in enumerate(cases):
        edit, noise = 2 * i, 2 * i + 1
        assert v["kl"][edit] > v["kl"][noise], case
        assert v["js"][edit] > v["js"][noise], case
        assert v["embed_cos"][edit] < v["embed_cos"][noise], case


def test_recognises_the_photos(imagenet):
    cols = imagenet.compute_images([DecodedImage(n, photo(n, 256)) for n in ("coffee", "chelsea")])
    top = cols["probs"].argmax(axis=1)
    assert top[0] in (967, 968, 504)  # espresso / cup / coffee mug
    assert 281 <= top[1] <= 285      # a domestic cat class


@pytest.mark.parametrize("name", ["imagenet", "regions"])
def test_channels_last_on_cpu_changes_only_rounding(name):
    """The Lite extractors run in channels_last on a CPU (2x faster there); their real-weight values are
    those of the default memory format to float32 rounding, so stores computed either way agree."""
    from featurestore.devices import Runtime

    fast, plain = create(name), create(name)
    assert fast.runtime.channels_last and fast.runtime.device.type == "cpu"
    plain._runtime = Runtime.create("cpu", "auto")  # the contiguous format every other network runs in
    assert not plain.runtime.channels_last
    refs = [photo(n, 256) for n in PHOTOS[:2]]
    pairs = [(r, jpeg(r, 20)) for r in refs] + [(refs[0], paste(refs[0], refs[1]))]
    if name == "imagenet":
        got, want = pair_values(fast, pairs), pair_values(plain, pairs)
    else:
        from featurestore.io import DecodedPair

        def values(ex):
            return ex.compute_pairs([DecodedPair(str(i), DecodedImage(f"r{i}", r), DecodedImage(f"d{i}", d), False)
                                     for i, (r, d) in enumerate(pairs)])
        got, want = values(fast), values(plain)
    assert got.keys() == want.keys()
    for column in want:
        np.testing.assert_allclose(got[column], want[column], rtol=1e-3, atol=1e-5, err_msg=column)


@pytest.mark.parametrize("channels_last", [True, False])
def test_same_padding_in_the_convolution_is_the_packages_network_bit_for_bit(channels_last):
    """`build_lite` lets each TF-"same" convolution pad inside the convolution where both sides get the same padding,
    instead of padding a copy first: with the packaged weights its feature maps and logits are the package's own
    network's, bit for bit, on sides odd and even (stride 2 pads them differently), in both memory formats."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    from featurestore.extractors.imagenet import SamePaddingInConv, build_lite

    path = create("imagenet").weight_sources()[0].found
    ours = build_lite("efficientnet-lite0", path).eval()
    package = EfficientNet.from_name("efficientnet-lite0", image_size=None).eval()
    package.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    assert sum(isinstance(m, SamePaddingInConv) for m in ours.modules()) > 40
    assert not any(isinstance(m, SamePaddingInConv) for m in package.modules())
    if channels_last:
        ours, package = (net.to(memory_format=torch.channels_last) for net in (ours, package))
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for shape in ((2, 3, 224, 224), (1, 3, 183, 275), (1, 3, 314, 470), (1, 3, 97, 131)):
            x = torch.randn(*shape, generator=gen)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            assert torch.equal(ours.extract_features(x), package.extract_features(x)), shape
            assert torch.equal(ours(x), package(x)), shape
