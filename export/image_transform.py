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


def decode_image(image_bytes):
    """Decode one JPEG/PNG/BMP/GIF (first frame) string into uint8 RGB `[H, W, 3]`."""
    # PIL decodes JPEG with the accurate integer DCT; TF's default (fast) DCT differs from it
    # by about one grey level per pixel, so JPEGs get their own decoder call.
    image = tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.io.decode_jpeg(image_bytes, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False),
    )
    image.set_shape([None, None, 3])
    return image


def decode_and_transform(image_bytes, image_size):
    """Decode one encoded image and apply the official evaluation transform."""
    return eval_transform(decode_image(image_bytes), image_size)


def decode_and_transform_batch(image_bytes, image_size):
    """Decode and transform a batch `[N]` of encoded images into float32 `[N, size, size, 3]`."""
    return tf.map_fn(
        lambda one: decode_and_transform(one, image_size),
        image_bytes,
        fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
    )
