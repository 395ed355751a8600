"""The one image reader (`keras_resnest.images`) against the graph decoder of training and
serving (`keras_resnest.image_decoding`), the official PIL transform, and fuzzed files."""
import io
import time
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_resnest import image_decoding, images
from keras_resnest.weights.reference import official_eval_crop

from tests.helpers import odd_images

LIMIT = images.DEFAULT_MAX_PIXELS


def graph_pixels(data):
    """What training and the serving signature decode (both call `decode_image` with the
    limit), or None where the graph refuses the file."""
    try:
        return image_decoding.decode_image(tf.constant(data), LIMIT).numpy()
    except tf.errors.OpError:
        return None


@pytest.mark.parametrize("name, data", odd_images.valid_files(),
                         ids=[name for name, _ in odd_images.valid_files()])
def test_every_claimed_format_gives_the_graph_decoders_pixels(name, data):
    read = images.read_image(data)
    assert read.ok, read.reason
    assert read.pixels.dtype == np.uint8 and read.pixels.shape[2] == 3
    # Both decoders run libjpeg with the accurate integer DCT: equal here; the test below
    # bounds the known one-level rounding on photos.
    np.testing.assert_array_equal(read.pixels, graph_pixels(data))


def test_jpeg_pixels_within_one_grey_level_of_the_graph_on_a_photo_like_image():
    data = odd_images.encode(odd_images.picture(120, 170, seed=3), "JPEG", quality=85,
                             subsampling=2)
    difference = np.abs(images.read_image(data).pixels.astype(int) - graph_pixels(data))
    assert difference.max() <= 1


def test_sixteen_bit_png_keeps_the_high_byte_on_every_path():
    gradient = odd_images.grey16_gradient()
    data = odd_images.encode(gradient, "PNG")
    expected = np.repeat((gradient >> 8).astype(np.uint8)[..., None], 3, axis=2)
    np.testing.assert_array_equal(images.read_image(data).pixels, expected)
    np.testing.assert_array_equal(graph_pixels(data), expected)
    # What PIL alone gives: a 16-bit grey PNG clipped to 255 (the old `predict` pixels).
    assert (np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) == 255).mean() > 0.9


@pytest.mark.parametrize("name", ["rgba.png", "palette.png", "grey_alpha.png", "cmyk.jpg",
                                  "animated.gif", "one_pixel_high.png", "one_pixel.bmp"])
def test_odd_modes_become_rgb_as_the_official_transform_makes_them(name):
    data = odd_images.odd_files()[name]
    read = images.read_image(data)
    assert read.ok, read.reason
    np.testing.assert_array_equal(read.pixels, np.asarray(Image.open(io.BytesIO(data))
                                                          .convert("RGB")))
    np.testing.assert_array_equal(read.pixels, graph_pixels(data))


def test_an_animation_gives_its_first_frame():
    pixels = images.read_image(odd_images.animated_gif()).pixels
    assert (pixels == [255, 0, 0]).all()


@pytest.mark.parametrize("name, reason", [
    ("bomb_header.png", "declares 20000x20000 pixels; the limit is 50000000 pixels"),
    ("truncated.jpg", "cannot decode the image (Truncated File Read)"),
    ("truncated.qoi", "a QOI image; expected a JPEG, PNG, GIF, BMP or WebP image"),
    ("image.tiff", "a TIFF image; expected a JPEG, PNG, GIF, BMP or WebP image"),
    ("one_bit.bmp", "a BMP of 1 bits per pixel; expected an uncompressed BMP of 8, 24 or 32 bits "
                    "per pixel"),
    ("empty.png", "empty file"),
    ("text.jpg", "not a JPEG, PNG, GIF, BMP or WebP image"),
])
def test_unusable_files_give_one_line_reasons_that_the_graph_agrees_with(name, reason):
    data = odd_images.odd_files()[name]
    assert images.read_image(data).reason == reason
    assert images.inspect_image(data) == reason  # each fails in its header
    assert graph_pixels(data) is None


def test_a_bomb_is_refused_from_its_header_without_allocating():
    bomb = odd_images.png_bomb(8000)  # 64 MP of real data, ~80 KB of zlib
    start = time.perf_counter()
    assert images.read_image(bomb).reason == (
        "declares 8000x8000 pixels; the limit is 50000000 pixels")
    assert time.perf_counter() - start < 0.5  # decoding it would take seconds
    assert images.read_image(bomb, max_pixels=100_000_000).ok


def test_paths_and_open_files_read_like_bytes(tmp_path):
    data = odd_images.odd_files()["palette.png"]
    path = tmp_path / "a.png"
    path.write_bytes(data)
    expected = images.read_image(data).pixels
    np.testing.assert_array_equal(images.read_image(path).pixels, expected)
    np.testing.assert_array_equal(images.read_image(str(path)).pixels, expected)
    with open(path, "rb") as handle:
        np.testing.assert_array_equal(images.read_image(handle).pixels, expected)
    assert images.read_image(tmp_path / "missing.png").reason == "no such file"
    assert images.read_image(tmp_path).reason == "a folder, not an image file"


def test_a_tiny_image_gets_the_official_transform_or_a_reason():
    data = odd_images.odd_files()["one_pixel_high.png"]
    image, reason = images.read_for_eval(data, 224)
    assert reason is None
    official = official_eval_crop(Image.open(io.BytesIO(data)), 224)
    assert np.abs(image - official).max() <= 1
    # At 32 the official crop of a 1-pixel side rounds to nothing, and PIL cannot resize it.
    image, reason = images.read_for_eval(data, 32)
    assert image is None
    assert reason == "64x1 pixels is too small for the 32-pixel evaluation crop (it crops to " \
                     "nothing)"


def test_fuzzed_files_give_pixels_or_a_reason_never_an_exception():
    files = odd_images.fuzzed_files(per_format=200, seed=29)
    outcomes = Counter()
    for name, data in files:
        read = images.read_image(data)  # an exception fails the test with the file's name
        assert read.ok != (read.reason is not None), name
        if read.ok:
            assert read.pixels.dtype == np.uint8 and read.pixels.ndim == 3, name
        else:
            assert "\n" not in read.reason and len(read.reason) <= 200, (name, read.reason)
        outcomes[name.split("_")[0], read.ok] += 1
    print(sorted(outcomes.items()))  # the counts per format (pytest -s)
    for image_format in odd_images.FORMAT_VARIANTS:
        key = image_format.lower()
        # Both outcomes occur for every format: the mutations reach past the header checks.
        assert outcomes[key, True] > 0 and outcomes[key, False] > 0, (key, outcomes)
