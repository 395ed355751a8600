"""Image decoding and the official ResNeSt evaluation transform, as TensorFlow graph ops.

TF-Serving runs the exported graph with no Python, so the transform that the official
`scripts/torch/verify.py` does with PIL (`ECenterCrop`) is rebuilt here from `tf.image` ops:

1. take a centred square crop whose side is `size / (size + 32)` of the short image side;
   the corner is rounded like `int(round(...))` and the far edge like PIL's `crop` (both
   round half to even, as `tf.round` does), computed in float64 like Python;
2. resize it to `size x size` with bicubic interpolation (Keys kernel, a = -0.5), widening
   the kernel when shrinking the way PIL does (`antialias=True`);
3. round and clip to 0..255 after each of the two resize passes, because PIL resizes
   horizontally then vertically through uint8 images.

JPEGs are decoded with the accurate integer DCT, as PIL does.

The model itself normalises (ImageNet mean/std), so the output is float32 RGB 0..255.

Example:
    >>> import numpy as np, tensorflow as tf
    >>> png = tf.io.encode_png(np.zeros((300, 400, 3), np.uint8))
    >>> decode_and_transform(png, 224).shape
    TensorShape([224, 224, 3])
"""
import tensorflow as tf

# ECenterCrop keeps `size / (size + CROP_MARGIN)` of the short side (224 -> 0.875).
CROP_MARGIN = 32


def _crop_box(height, width, image_size, minimum, round_half_even):
    """The crop arithmetic, once, for TensorFlow tensors and for Python numbers alike."""
    crop = image_size / (image_size + CROP_MARGIN) * minimum(height, width)
    top = round_half_even((height - crop) / 2.0)
    left = round_half_even((width - crop) / 2.0)
    # PIL's crop rounds the (float) far edge of the box, not the crop size.
    bottom = round_half_even(top + crop)
    right = round_half_even(left + crop)
    return top, left, bottom - top, right - left


def center_crop_box(height, width, image_size):
    """The official crop `(top, left, crop_height, crop_width)` for an image, as int32 tensors."""
    box = _crop_box(tf.cast(height, tf.float64), tf.cast(width, tf.float64), float(image_size),
                    tf.minimum, tf.round)
    return [tf.cast(value, tf.int32) for value in box]


def static_center_crop_box(height, width, image_size):
    """`center_crop_box` for a known image size, as Python ints (Python's `round` also rounds
    half to even).

    >>> static_center_crop_box(256, 320, 224)   # the crop keeps 224/256 of the short side
    (16, 48, 224, 224)
    """
    return _crop_box(height, width, image_size, min, round)


def eval_transform(image, image_size):
    """Official evaluation transform of one decoded RGB image `[H, W, 3]` (any dtype).

    Returns float32 `[image_size, image_size, 3]` with integral values in 0..255.
    """
    shape = tf.shape(image)
    top, left, crop_height, crop_width = center_crop_box(shape[0], shape[1], image_size)
    crop = tf.image.crop_to_bounding_box(image, top, left, crop_height, crop_width)
    # PIL resamples horizontally first into a uint8 image, then vertically; rounding and
    # clipping between the passes matters where bicubic overshoots on sharp edges.
    wide = _resize_to_pixels(tf.cast(crop, tf.float32), [crop_height, image_size])
    return _resize_to_pixels(wide, [image_size, image_size])


def _resize_to_pixels(image, size):
    resized = tf.image.resize(image, size, method="bicubic", antialias=True)
    return tf.clip_by_value(tf.round(resized), 0.0, 255.0)


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
    # PIL decodes JPEG with the accurate integer DCT; TF's default (fast) DCT differs from it
    # by about one grey level per pixel, so JPEGs get their own decoder call.
    image = tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.io.decode_jpeg(image_bytes, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False),
    )
    image.set_shape([None, None, 3])
    return image


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
