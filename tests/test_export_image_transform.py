"""The in-graph decode + official evaluation transform against the official PIL pipeline.

The official `scripts/torch/verify.py` transform (ECenterCrop) is written with PIL
(`keras_resnest.weights.reference.official_eval_crop`, line for line: crop `size/(size+32)` of
the short side at `int(round(...))`, resize with `Image.BICUBIC`). The TF-graph version
(decoding here, then
`keras_resnest.preprocessing.eval_transform`) must give the same pixels up to one grey level.
"""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_resnest import image_decoding, preprocessing
from keras_resnest.export import image_transform
from keras_resnest.weights.reference import official_eval_crop

from tests.helpers import export_helpers as helpers


def official_eval_transform(data, size):
    """ECenterCrop of resnest's verify.py (PIL), on encoded image bytes; float32 HWC."""
    return official_eval_crop(Image.open(io.BytesIO(data)), size)


CASES = [
    ((97, 131), 64, "JPEG"),
    ((97, 131), 64, "PNG"),
    ((300, 400), 224, "JPEG"),
    ((480, 333), 224, "PNG"),
    ((50, 60), 128, "JPEG"),
    ((64, 64), 64, "PNG"),
    ((200, 120), 96, "PNG"),
]


@pytest.mark.parametrize("shape, size, image_format", CASES)
def test_graph_transform_matches_official_pil_transform(shape, size, image_format):
    image = helpers.natural_image(*shape, seed=sum(shape))
    data = helpers.encode(
        image, image_format, **({"quality": 90} if image_format == "JPEG" else {})
    )
    expected = official_eval_transform(data, size)
    actual = image_transform.decode_and_transform(tf.constant(data), size).numpy()
    assert actual.shape == (size, size, 3) and actual.dtype == np.float32
    difference = np.abs(actual - expected)
    # Same pixels except rare one-level rounding differences (PIL uses fixed-point weights):
    # "under 0.1% of the pixel values" (docs/export.md);
    # `python -m benchmarks.image_transform_report` prints the share of each case (worst 0.017%).
    assert difference.max() <= 1.0
    assert np.mean(difference > 0) < 0.001


def test_grayscale_and_rgba_inputs_become_rgb_like_pil():
    rgb = helpers.natural_image(90, 70, seed=5)
    gray = helpers.encode(rgb[..., 0], "PNG")
    rgba = helpers.encode(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), "PNG")
    gray_jpeg = helpers.encode(rgb[..., 1], "JPEG", quality=90)
    for data in (gray, rgba, gray_jpeg):
        actual = image_transform.decode_and_transform(tf.constant(data), 64).numpy()
        assert np.abs(actual - official_eval_transform(data, 64)).max() <= 1.0


def test_crop_box_rounds_like_python_and_pil():
    for size in (32, 64, 224, 256, 320, 416):
        for height in range(33, 700, 7):
            for width in (height, height + 1, 2 * height + 3, max(33, height // 2)):
                crop = float(size) / (size + 32) * min(width, height)
                top = int(round((height - crop) / 2.0))
                left = int(round((width - crop) / 2.0))
                # PIL.Image.crop rounds each coordinate of the float box.
                bottom, right = round(top + crop), round(left + crop)
                expected = [top, left, bottom - top, right - left]
                box = preprocessing.center_crop_box(height, width, size)
                assert [int(v) for v in box] == expected, (height, width, size)
                static = preprocessing.static_center_crop_box(height, width, size)
                assert list(static) == expected, (height, width, size)


@pytest.mark.parametrize(
    "fmt, options",
    [
        ("JPEG", {}),
        ("PNG", {}),
        ("GIF", {}),
        ("BMP", {}),
        ("WEBP", {"lossless": False}),
        ("WEBP", {"lossless": True}),
    ],
)
@pytest.mark.parametrize("channels", [3, 4])
def test_header_dimensions_match_the_decoded_image(fmt, options, channels):
    if fmt in ("JPEG", "BMP") and channels == 4:
        channels = 1  # no alpha in these formats: grey instead
    rng = np.random.default_rng(0)
    for height, width in ((1, 1), (37, 53), (300, 1000)):
        pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels).save(
            buffer, fmt, **options
        )
        data = tf.constant(buffer.getvalue())
        assert image_decoding.header_dimensions(data).numpy().tolist() == [height, width]
        if not (fmt == "WEBP" and channels == 4):  # TF's decoder refuses RGB from RGBA WebP
            assert image_decoding.decode_image(data).shape[:2] == (height, width)


def test_header_dimensions_of_top_down_bmp_truncated_and_unknown_bytes():
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(buffer, "BMP")
    top_down = bytearray(buffer.getvalue())
    top_down[22:26] = (-20).to_bytes(4, "little", signed=True)  # rows stored top-down
    assert image_decoding.header_dimensions(tf.constant(bytes(top_down))).numpy().tolist() == [
        20,
        30,
    ]
    for data in (b"", b"not an image", b"\x89PNG", b"II*\x00 a TIFF"):
        assert image_decoding.header_dimensions(tf.constant(data)).numpy().tolist() == [-1, -1]


def test_pixel_limit_refuses_before_decoding_in_a_graph():
    transform = tf.function(
        lambda files: image_transform.decode_and_transform_batch(
            files, 32, max_pixels=tf.constant(1200, tf.int64)
        )
    )
    small = helpers.encode(helpers.natural_image(30, 40, 0), "PNG")  # 1200 pixels: at the limit
    assert transform(tf.constant([small])).shape == (1, 32, 32, 3)
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP"):
        big = helpers.encode(helpers.natural_image(31, 40, 0), fmt)
        with pytest.raises(
            tf.errors.InvalidArgumentError, match="31 x 40 pixels is over the limit of 1200 pixels"
        ):
            transform(tf.constant([small, big]))


def test_batch_transform_handles_mixed_sizes_and_formats():
    files = helpers.sample_encoded_images()
    batch = image_transform.decode_and_transform_batch(tf.constant(files), 64).numpy()
    assert batch.shape == (len(files), 64, 64, 3)
    for data, image in zip(files, batch):
        np.testing.assert_array_equal(
            image, image_transform.decode_and_transform(tf.constant(data), 64).numpy()
        )


def test_undecodable_bytes_raise():
    with pytest.raises(tf.errors.InvalidArgumentError):
        image_transform.decode_and_transform(tf.constant(b"not an image"), 64)


@pytest.mark.parametrize("shape, size, image_format", CASES[:4])
def test_graph_transform_matches_the_predict_command(shape, size, image_format, tmp_path):
    """The served graph and `keras-resnest predict` prepare images alike."""
    from keras_resnest.predict import load_images

    image = helpers.natural_image(*shape, seed=sum(shape) + 1)
    data = helpers.encode(image, image_format)
    path = tmp_path / f"image.{image_format.lower()}"
    path.write_bytes(data)
    expected = load_images([path], size)[0]
    actual = image_transform.decode_and_transform(tf.constant(data), size).numpy()
    # PNG: identical (one transform); JPEG: PIL's and TensorFlow's decoders may differ.
    assert np.abs(actual - expected).max() <= (0.0 if image_format == "PNG" else 1.0)
