"""Every kind of awkward image file either decodes by a rule documented in `featurestore.io`, or is
refused with one line naming the file; in a dataset, a bad file never stops the other pairs."""
from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import photo
from PIL import Image

from featurestore import io as fio
from featurestore.errors import SiqaError
from featurestore.io import decode, read_rgb

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)


def png_bytes(arr: np.ndarray, bit_depth: int, color_type: int, height: int | None = None,
              width: int | None = None) -> bytes:
    """A PNG written by hand, for what Pillow cannot write (16-bit RGB) or should never decode (a header
    that claims a huge size)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    h, w = (height, width) if height else arr.shape[:2]
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    raw = b"".join(b"\x00" + row.astype(">u2" if bit_depth == 16 else np.uint8).tobytes() for row in arr)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def refused(path, match: str) -> str:
    with pytest.raises(SiqaError, match=match) as info:
        read_rgb(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


# --- refused, one line naming the file -------------------------------------------------------------

def test_zero_bytes(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    refused(tmp_path / "empty.png", "empty file")


@pytest.mark.parametrize("name,content", [("notes.png", b"just some text\n" * 20),
                                          ("page.jpg", b"<html><body>404</body></html>"),
                                          ("random.webp", RNG.integers(0, 256, 500, dtype=np.uint8).tobytes())])
def test_non_image_with_image_extension(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    refused(tmp_path / name, "not an image file")


@pytest.mark.parametrize("fmt,keep", [("PNG", 0.5), ("JPEG", 0.5), ("PNG", 0.98), ("BMP", 0.5), ("WEBP", 0.5)])
def test_truncated(tmp_path, fmt, keep):
    path = tmp_path / f"cut.{fmt.lower()}"
    Image.fromarray(RGB).save(path, fmt)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    refused(path, "cannot decode image|truncated")


def test_corrupt_png_data(tmp_path):
    path = tmp_path / "corrupt.png"
    Image.fromarray(RGB).save(path)
    data = bytearray(path.read_bytes())
    data[100:140] = bytes(40)  # inside the compressed pixel stream
    path.write_bytes(bytes(data))
    refused(path, "cannot decode image")


def test_float_image_refused(tmp_path):
    Image.fromarray(RGB[..., 0].astype(np.float32) / 255).save(tmp_path / "float.tif")
    refused(tmp_path / "float.tif", "32-bit float")


def test_tiny_image_refused(tmp_path):
    Image.fromarray(RGB[:7, :40]).save(tmp_path / "strip.png")
    refused(tmp_path / "strip.png", "smaller than 8x8")


def test_missing_file_and_folder(tmp_path):
    refused(tmp_path / "gone.png", "file not found")
    (tmp_path / "dir.png").mkdir()
    refused(tmp_path / "dir.png", "cannot read")


def test_decompression_bomb_header_refused_before_decoding(tmp_path):
    # 20000x15000 claimed, a few bytes of data: refused from the header alone, nothing allocated.
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bytes(np.zeros((1, 1), np.uint8), 8, 0, height=15000, width=20000))
    message = refused(path, "decode limit")
    assert "20000x15000" in message


def test_file_changed_after_hashing(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "a.png")
    sha = fio.sha256_file(tmp_path / "a.png")
    assert decode(tmp_path / "a.png", sha).sha256 == sha
    Image.fromarray(255 - RGB).save(tmp_path / "a.png")
    with pytest.raises(SiqaError, match="a.png: file changed"):
        decode(tmp_path / "a.png", sha)


# --- decoded by a rule -----------------------------------------------------------------------------

def test_grey_and_bilevel_become_three_equal_channels(tmp_path):
    grey = RGB[..., 0]
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(grey > 127).save(tmp_path / "bw.png")
    assert np.array_equal(read_rgb(tmp_path / "grey.png"), np.repeat(grey[..., None], 3, axis=2))
    bw = read_rgb(tmp_path / "bw.png")
    assert np.array_equal(bw[..., 0], np.where(grey > 127, 255, 0)) and set(np.unique(bw)) <= {0, 255}


def test_palette(tmp_path):
    pal = Image.fromarray(RGB).convert("P")
    pal.save(tmp_path / "pal.png")
    assert np.array_equal(read_rgb(tmp_path / "pal.png"), np.asarray(pal.convert("RGB")))


def test_palette_with_transparent_index_goes_on_white(tmp_path):
    pal = Image.fromarray(RGB).convert("P")
    index = np.asarray(pal)
    pal.save(tmp_path / "palt.png", transparency=int(index[0, 0]))
    out = read_rgb(tmp_path / "palt.png")
    clear = index == index[0, 0]
    assert (out[clear] == 255).all()
    assert np.array_equal(out[~clear], np.asarray(pal.convert("RGB"))[~clear])


def test_alpha_is_composited_on_white(tmp_path):
    alpha = np.zeros(RGB.shape[:2], np.uint8)
    alpha[:, 20:40] = 255
    alpha[:, 40:] = 128
    Image.fromarray(np.dstack([RGB, alpha])).save(tmp_path / "rgba.png")
    Image.fromarray(np.dstack([RGB[..., 0], alpha])).save(tmp_path / "la.png")  # LA
    out = read_rgb(tmp_path / "rgba.png").astype(int)
    assert (out[:, :20] == 255).all()
    assert np.array_equal(out[:, 20:40], RGB[:, 20:40])
    blend = RGB[:, 40:].astype(int) * 128 / 255 + 255 * 127 / 255
    assert np.abs(out[:, 40:] - blend).max() <= 1
    la = read_rgb(tmp_path / "la.png")
    assert (la[:, :20] == 255).all() and np.array_equal(la[:, 20:40, 1], RGB[:, 20:40, 0])


def test_cmyk_jpeg(tmp_path):
    Image.fromarray(RGB).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as im:
        assert im.mode == "CMYK"
    out = read_rgb(tmp_path / "cmyk.jpg")
    assert out.shape == RGB.shape and np.abs(out.astype(int) - RGB).mean() < 12


def test_16_bit_grey_uses_the_full_16_bit_range(tmp_path):
    values = np.array([[0, 128, 129, 257, 32896, 65535, 255, 1000]] * 8, np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I")
    out = read_rgb(tmp_path / "g16.png")
    assert list(out[0, :, 0]) == [0, 0, 1, 1, 128, 255, 1, 4]  # round(v / 257), also for a dark image
    dark = (RGB[..., 0].astype(np.uint16))  # every value <= 255: still 16-bit data, so nearly black
    Image.fromarray(dark).save(tmp_path / "dark16.png")
    assert read_rgb(tmp_path / "dark16.png").max() <= 1


def test_16_bit_rgb_png_keeps_the_high_byte(tmp_path):
    rgb16 = RNG.integers(0, 65536, (16, 24, 3)).astype(np.uint16)
    (tmp_path / "rgb48.png").write_bytes(png_bytes(rgb16, 16, 2))
    assert np.array_equal(read_rgb(tmp_path / "rgb48.png"), (rgb16 >> 8).astype(np.uint8))


# EXIF 2.3 orientation tag, as "what to do to the stored pixels to display them" (np.rot90 k=-1: 90° clockwise).
EXPECTED_ORIENTATION = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],                         # mirror horizontal
    3: lambda a: np.rot90(a, k=2),                   # rotate 180
    4: lambda a: a[::-1],                            # mirror vertical
    5: lambda a: np.rot90(a[:, ::-1], k=1),          # mirror horizontal, rotate 270 clockwise
    6: lambda a: np.rot90(a, k=-1),                  # rotate 90 clockwise
    7: lambda a: np.rot90(a[:, ::-1], k=-1),         # mirror horizontal, rotate 90 clockwise
    8: lambda a: np.rot90(a, k=1),                   # rotate 270 clockwise
}


@pytest.mark.parametrize("orientation", sorted(EXPECTED_ORIENTATION))
def test_exif_orientation_is_applied(tmp_path, orientation):
    im = Image.fromarray(RGB)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(tmp_path / "o.png", exif=exif)  # PNG: lossless, so the pixels can be compared exactly
    assert np.array_equal(read_rgb(tmp_path / "o.png"), EXPECTED_ORIENTATION[orientation](RGB))


def test_exif_rotated_jpeg(tmp_path):
    picture = photo("astronaut", 64)  # smooth content: JPEG keeps it close
    im = Image.fromarray(picture)
    exif = im.getexif()
    exif[0x0112] = 8
    im.save(tmp_path / "o.jpg", exif=exif, quality=95)
    out = read_rgb(tmp_path / "o.jpg")
    error = {k: np.abs(out.astype(int) - np.rot90(picture, k=k)).mean() for k in (1, -1)}
    assert out.shape == (64, 48, 3) and error[1] < 8 < 4 * error[1] < error[-1]


def test_multi_frame_file_gives_its_first_frame(tmp_path):
    frames = [Image.fromarray(RGB), Image.fromarray(255 - RGB)]
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    assert np.array_equal(read_rgb(tmp_path / "pages.tif"), RGB)


def test_downscale_rule_and_orientation_after_it(tmp_path):
    big = np.asarray(Image.fromarray(RGB).resize((640, 480)))
    im = Image.fromarray(big)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "big.png", exif=exif)
    out = read_rgb(tmp_path / "big.png", max_pixels=10_000)
    s = (10_000 / (640 * 480)) ** 0.5
    assert out.shape == (int(640 * s), int(480 * s), 3)  # floor(W*s) x floor(H*s), then rotated
    assert out.shape[0] * out.shape[1] <= 10_000


def gradient(width: int, height: int) -> np.ndarray:
    a = np.zeros((height, width, 3), np.uint8)
    a[..., 0] = (np.arange(width) * 255 // (width - 1))[None, :]
    a[..., 1] = (np.arange(height) * 255 // (height - 1))[:, None]
    a[..., 2] = 90
    return a


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_huge_12000x9000_is_decoded_within_the_pixel_budget(tmp_path, fmt):
    path = tmp_path / f"huge.{fmt.lower()}"
    Image.fromarray(gradient(12000, 9000)).save(path, fmt, **({"compress_level": 1} if fmt == "PNG" else {}))
    out = read_rgb(path)
    s = (fio.MAX_PIXELS / (12000 * 9000)) ** 0.5
    assert out.shape == (int(9000 * s), int(12000 * s), 3)
    assert out.shape[0] * out.shape[1] <= fio.MAX_PIXELS
    # content survives: the horizontal and vertical ramps are still ramps
    assert np.abs(out[..., 0].mean(axis=0) - np.linspace(0, 255, out.shape[1])).max() < 6
    assert np.abs(out[..., 1].mean(axis=1) - np.linspace(0, 255, out.shape[0])).max() < 6


# --- in a dataset: bad files are reported, every other pair is extracted -------------------------------

def break_files(seiqa_dir):
    """Replace some images of the fixture dataset by bad files; returns path -> what it is."""
    dist, ref = seiqa_dir / "Train" / "Dist", seiqa_dir / "Test" / "Ref"
    (dist / "000001.png").write_bytes(b"")
    (dist / "000002.png").write_text("this is not an image, only its name says so")
    data = (dist / "000003.png").read_bytes()
    (dist / "000003.png").write_bytes(data[:len(data) // 2])
    Image.fromarray(RGB[:5, :5]).save(ref / "000007.png")  # a reference too small for any metric
    # a JPEG saved under .png is not a bad file: content decides the format
    Image.open(dist / "000004.png").convert("RGB").save(dist / "000005.png", "JPEG")
    return {dist / "000001.png": "empty file", dist / "000002.png": "not an image file",
            dist / "000003.png": "truncated", ref / "000007.png": "smaller than 8x8"}


def test_bad_files_in_a_dataset_are_listed_and_the_other_pairs_extracted(tmp_path, seiqa_dir):
    from store_worker import extractors

    from featurestore.datasets import load_pairs
    from featurestore.sql import query
    from featurestore.store import FeatureStore

    bad = break_files(seiqa_dir)
    summary = FeatureStore(tmp_path / "store").extract(load_pairs(seiqa_dir), extractors(), progress=False)
    assert summary.computed["toymse/pair"] == 4 and summary.computed["toymean/pair"] == 4
    assert set(summary.failures) == {str(p) for p in bad}
    for path, why in bad.items():
        assert why in summary.failures[str(path)] and "\n" not in summary.failures[str(path)]
    text = "\n".join(summary.lines())
    assert "4 failure(s)" in text and all(f"{p}: " in text for p in bad)
    df = query(tmp_path / "store", "SELECT name, toymse_mse FROM features ORDER BY name")
    assert df.toymse_mse.notna().sum() == 4
    assert set(df.name[df.toymse_mse.notna()]) == {"000004.png", "000005.png", "000006.png", "000008.png"}


def test_a_pair_that_breaks_an_extractor_costs_only_itself(tmp_path, seiqa_dir):
    from toy_extractors import ToyMean, ToyMse

    from featurestore.datasets import load_pairs
    from featurestore.store import FeatureStore

    table = load_pairs(seiqa_dir)
    victim = table.df.iloc[2]

    class Picky(ToyMse):
        name = "picky_mse"

        def compute_pairs(self, pairs):
            if any(p.dist.sha256 == victim.dist_sha256 for p in pairs):
                raise ValueError("cannot handle this one\nsecond line of the message")
            return super().compute_pairs(pairs)

    class PickyImage(ToyMean):
        name = "picky_mean"

        def compute_images(self, images):
            if any(im.sha256 == victim.dist_sha256 for im in images):
                raise RuntimeError("bad image for this model")
            return super().compute_images(images)

    summary = FeatureStore(tmp_path / "store").extract(table, [Picky(batch_size=4), PickyImage(batch_size=4)], progress=False)
    assert summary.computed["picky_mse/pair"] == 7  # the three batch-mates of the victim were retried alone
    assert summary.computed["picky_mean/image"] == 9 and summary.computed["picky_mean/pair"] == 7
    assert summary.failures == {
        f"{victim.dist_path} [picky_mse, reference {victim.ref_path}]": "ValueError: cannot handle this one",
        f"{victim.dist_path} [picky_mean]": "RuntimeError: bad image for this model",
    }


def test_pairs_of_different_sizes_are_resized_to_the_reference_and_counted(tmp_path, seiqa_dir):
    from store_worker import extractors
    from toy_extractors import ToyMean

    from featurestore.datasets import load_pairs
    from featurestore.store import FeatureStore

    dist = seiqa_dir / "Train" / "Dist"
    originals = {}
    for name, size in (("000001.png", (128, 96)), ("000002.png", (40, 30)), ("000003.png", (48, 64))):
        im = Image.open(dist / name).convert("RGB").resize(size)
        im.save(dist / name)
        originals[name] = np.asarray(im)
    store = FeatureStore(tmp_path / "store")
    table = load_pairs(seiqa_dir)
    summary = store.extract(table, extractors(), progress=False)  # ToyMse asserts equal shapes
    assert not summary.failures and summary.computed["toymse/pair"] == 8
    assert summary.resized_pairs == 3
    assert any("3 pair(s) with a degraded image of another size" in line for line in summary.lines())
    assert store.extract(table, extractors(), progress=False).resized_pairs == 0  # counted when computed
    # image-level features see the degraded image as it is, not resized
    means = store.read(store.folder(ToyMean(), "image"))
    stored = dict(zip(means.column(0).to_pylist(), means.column("mean").to_pylist()))
    for name, pixels in originals.items():
        sha = table.df.set_index("name").dist_sha256[name]
        assert np.allclose(stored[sha], (pixels.astype(np.float32) / 255).mean(axis=(0, 1)), atol=1e-6)


def test_strict_turns_failures_into_an_error_exit(tmp_path, seiqa_dir, capsys):
    from toy_extractors import ToyMse

    import cli
    from featurestore.extractors import EXTRACTORS

    with EXTRACTORS.registered(ToyMse):  # a config may name it while this test runs
        config = tmp_path / "toy.toml"
        config.write_text(f"[extractors.{ToyMse.name}]\n")
        bad = break_files(seiqa_dir)
        args = ["features", "--data", str(seiqa_dir), "--store", str(tmp_path / "store"), "--config", str(config), "--quiet"]
        cli.main(args)  # without --strict: the good pairs are stored, the summary names every bad file
        out = capsys.readouterr().out
        assert "4 failure(s)" in out and all(f"{p}: " in out for p in bad)
        with pytest.raises(SystemExit) as exit_info:
            cli.main(args + ["--strict"])  # bad files are never stored, so a rerun reports them again
        assert exit_info.value.code == 1  # a failure of the work (2 is for usage errors)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("siqa: error: ") and "4 failure(s)" in err


def test_importing_siqa_leaves_pillows_bomb_limit_alone():
    code = ("from PIL import Image; default = Image.MAX_IMAGE_PIXELS\n"
            "import cli, siqa, featurestore.io, featurestore.store, blend.report\n"
            "from featurestore.extractors import EXTRACTORS; EXTRACTORS.names()\n"
            "assert Image.MAX_IMAGE_PIXELS == default and default is not None, Image.MAX_IMAGE_PIXELS")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_decode_lifts_pillows_limit_only_while_it_runs(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # a user's own, much stricter policy
    with ThreadPoolExecutor(4) as pool:  # decodes overlapping in threads, as the store's prefetcher runs them
        shapes = list(pool.map(lambda _: fio.read_rgb(path).shape, range(16)))
    assert shapes == [(64, 64, 3)] * 16  # siqa's decode applies its own limits, not Pillow's global one
    assert Image.MAX_IMAGE_PIXELS == 100  # and puts the user's policy back
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)

