"""Image decoding as TensorFlow graph ops, for the paths that cannot run Python: training's
tf.data pipelines and the serving signature.

It gives the pixels `keras_resnest.images.read_image` gives (JPEG up to the decoders' rounding),
and refuses an image whose header declares more pixels than a limit before decoding it, so a
decompression bomb never allocates its pixels.

Example:
    >>> import numpy as np
    >>> header_dimensions(tf.io.encode_png(np.zeros((300, 400, 3), np.uint8))).numpy()
    array([300, 400])
"""
import tensorflow as tf

# Enough of the file for every header below (WebP's VP8 frame header ends at byte 30, a BMP's
# compression field at 34).
HEADER_BYTES = 34


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


def decode_rgb(image_bytes):
    """One encoded JPEG/PNG/BMP/GIF (first frame)/WebP image -> uint8 RGB `[H, W, 3]`, decoded
    as PIL decodes it: PIL uses the accurate integer DCT for JPEGs, where TensorFlow's default
    (fast) DCT differs by about one grey level per pixel, and looks 8-bit BMPs up in their
    palette, where TensorFlow's BMP decoder returns the palette indices."""
    header = _header(image_bytes)
    bmp = _starts_with(header, 0, b"BM")
    # What keras_resnest.images reads of BMPs (see its _bmp_reason): TensorFlow's decoder
    # would read a compressed one as if it were not, and give wrong pixels without an error.
    compression = _number(header, 30, 4)
    supported = tf.logical_not(bmp) | (tf.equal(compression, 0) | tf.equal(compression, 3))
    check = tf.Assert(supported, ["a compressed BMP; expected an uncompressed BMP"])
    with tf.control_dependencies([check]):
        image_bytes = tf.identity(image_bytes)
    palette_bmp = bmp & tf.equal(_number(header, 28, 2), 8)
    image = tf.case([
        (tf.io.is_jpeg(image_bytes),
         lambda: tf.io.decode_jpeg(image_bytes, channels=3, dct_method="INTEGER_ACCURATE")),
        (palette_bmp, lambda: _bmp_palette_lookup(image_bytes)),
    ], default=lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False))
    image.set_shape([None, None, 3])
    return image


def _bmp_palette_lookup(image_bytes):
    """An 8-bit BMP's pixels through its colour table (BGRX entries after the info header;
    `colours used`, or 256 when 0). An index past the table fails like a damaged file."""
    info = tf.cast(tf.io.decode_raw(tf.strings.substr(image_bytes, 14, 40), tf.uint8), tf.int64)
    start = 14 + _number(info, 0, 4)
    colours = _number(info, 32, 4)
    colours = tf.where(tf.equal(colours, 0), tf.constant(256, tf.int64), colours)
    table = tf.io.decode_raw(tf.strings.substr(image_bytes, start, 4 * colours), tf.uint8)
    table = tf.reshape(table, [-1, 4])[:, 2::-1]  # BGRX -> RGB
    indices = tf.io.decode_bmp(image_bytes, channels=0)[..., 0]
    return tf.gather(table, tf.cast(indices, tf.int32))
