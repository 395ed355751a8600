"""Image decoding for the serving graph, then the official evaluation transform.

TF-Serving runs the exported graph with no Python, so decoding is built from `tf.io` ops: JPEGs
are decoded with the accurate integer DCT, as PIL does, and an image whose header announces more
pixels than a limit is refused before it is decoded. The transform after decoding is
`keras_resnest.preprocessing.eval_transform` (the official crop and bicubic resize, exactly as
PIL computes them), the one every other path of the package uses too.

The model itself normalises (ImageNet mean/std), so the output is float32 RGB 0..255.

Example:
    >>> import numpy as np, tensorflow as tf
    >>> png = tf.io.encode_png(np.zeros((300, 400, 3), np.uint8))
    >>> decode_and_transform(png, 224).shape
    TensorShape([224, 224, 3])
"""
import tensorflow as tf

from keras_resnest.preprocessing import decode_rgb, eval_transform

# The pixel limit of the serving export: far above real photos (a 48 MP camera), far below the
# decompression bombs a few hundred kilobytes of PNG can carry (15000x15000: 3.2 GB decoded).
DEFAULT_MAX_PIXELS = 50_000_000
# Enough of the file for every header below (WebP's VP8 frame header ends at byte 30).
HEADER_BYTES = 32


def _header(image_bytes):
    """The first HEADER_BYTES bytes as int64 `[HEADER_BYTES]`, zero-padded when shorter."""
    head = tf.strings.join([tf.strings.substr(image_bytes, 0, HEADER_BYTES),
                            tf.constant(b"\0" * HEADER_BYTES)])
    return tf.cast(tf.io.decode_raw(tf.strings.substr(head, 0, HEADER_BYTES), tf.uint8), tf.int64)


def _number(header, start, count, big_endian=False):
    """The unsigned integer stored in `count` header bytes from `start`."""
    places = range(count - 1, -1, -1) if big_endian else range(count)
    return sum(header[start + index] * (256 ** place) for index, place in zip(range(count), places))


def _starts_with(header, start, magic):
    return tf.reduce_all(tf.equal(header[start:start + len(magic)],
                                  tf.constant(list(magic), tf.int64)))


def _bmp_side(value):
    """BMP sizes are signed 32-bit (a negative height means rows stored top-down)."""
    return tf.abs(tf.where(value >= 2 ** 31, value - 2 ** 32, value))


def header_dimensions(image_bytes):
    """`[height, width]` (int64) read from the header of a JPEG, PNG, GIF, BMP or WebP string
    without decoding it; `[-1, -1]` for anything else (the decoder then refuses it).

    >>> import numpy as np
    >>> header_dimensions(tf.io.encode_png(np.zeros((300, 400, 3), np.uint8))).numpy()
    array([300, 400])
    """
    header = _header(image_bytes)
    unknown = tf.constant([-1, -1], tf.int64)

    def webp():  # the first chunk: lossy (VP8), lossless (VP8L) or extended (VP8X)
        lossless = _number(header, 21, 4)  # 14 bits of width - 1, then 14 of height - 1
        return tf.case([
            (_starts_with(header, 12, b"VP8 "), lambda: tf.stack(
                [_number(header, 28, 2) % 16384, _number(header, 26, 2) % 16384])),
            (_starts_with(header, 12, b"VP8L"), lambda: tf.stack(
                [(lossless // 16384) % 16384 + 1, lossless % 16384 + 1])),
            (_starts_with(header, 12, b"VP8X"), lambda: tf.stack(
                [_number(header, 27, 3) + 1, _number(header, 24, 3) + 1])),
        ], default=lambda: unknown)

    def bmp():
        core = tf.equal(_number(header, 14, 4), 12)  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return tf.cond(core,
                       lambda: tf.stack([_number(header, 20, 2), _number(header, 18, 2)]),
                       lambda: tf.stack([_bmp_side(_number(header, 22, 4)),
                                         _bmp_side(_number(header, 18, 4))]))

    return tf.case([
        (tf.io.is_jpeg(image_bytes),
         lambda: tf.cast(tf.io.extract_jpeg_shape(image_bytes)[:2], tf.int64)),
        (_starts_with(header, 0, b"\x89PNG\r\n\x1a\n"),
         lambda: tf.stack([_number(header, 20, 4, True), _number(header, 16, 4, True)])),
        (_starts_with(header, 0, b"GIF8"),  # the logical screen every frame is drawn on
         lambda: tf.stack([_number(header, 8, 2), _number(header, 6, 2)])),
        (_starts_with(header, 0, b"BM"), bmp),
        (_starts_with(header, 0, b"RIFF") & _starts_with(header, 8, b"WEBP"), webp),
    ], default=lambda: unknown)


def check_pixel_limit(image_bytes, max_pixels):
    """An op that fails with InvalidArgument when the header announces more than `max_pixels`
    pixels; run it before decoding so that the decoder never allocates such an image."""
    height_width = header_dimensions(image_bytes)
    pixels = height_width[0] * height_width[1]
    message = tf.strings.format(
        "image of {} x {} pixels is over the limit of {} pixels set at export (--max-pixels)",
        (height_width[0], height_width[1], max_pixels))
    return tf.Assert(pixels <= tf.cast(max_pixels, tf.int64), [message], summarize=1)


def decode_image(image_bytes, max_pixels=None):
    """Decode one JPEG/PNG/BMP/GIF (first frame)/WebP string into uint8 RGB `[H, W, 3]`,
    refusing images over `max_pixels` (None: no limit) before decoding them."""
    checks = [] if max_pixels is None else [check_pixel_limit(image_bytes, max_pixels)]
    with tf.control_dependencies(checks):
        image_bytes = tf.identity(image_bytes)
    return decode_rgb(image_bytes)


def decode_and_transform(image_bytes, image_size, max_pixels=None):
    """Decode one encoded image and apply the official evaluation transform."""
    return eval_transform(decode_image(image_bytes, max_pixels), image_size)


def decode_and_transform_batch(image_bytes, image_size, max_pixels=None):
    """Decode and transform a batch `[N]` of encoded images into float32 `[N, size, size, 3]`."""
    return tf.map_fn(
        lambda one: decode_and_transform(one, image_size, max_pixels),
        image_bytes,
        fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
    )
