"""The official ResNeSt evaluation transform, as TensorFlow graph ops: the one implementation
that training validation, `keras-resnest predict`, the serving graph, the TFLite/ONNX reports
and calibration, and the keras-hub image converter all use. Decoding is `keras_resnest.images`
(Python) and `keras_resnest.image_decoding` (graph ops).

The official `scripts/torch/verify.py` transform (`ECenterCrop`) does, with PIL:

1. take a centred square crop whose side is `size / (size + 32)` of the short image side;
   the corner is rounded like `int(round(...))` and the far edge like PIL's `crop` (both
   round half to even, as `tf.round` does), computed in float64 like Python;
2. resize it to `size x size` with bicubic interpolation (Keys kernel, a = -0.5), widening
   the kernel when shrinking the way PIL does (`antialias=True`);
3. round and clip to 0..255 after each of the two resize passes, because PIL resizes
   horizontally then vertically through uint8 images.

The models normalise (ImageNet mean/std) themselves, so the output is float32 RGB 0..255.
The ops run eagerly, inside `tf.function`, in `tf.data` pipelines and in exported graphs.

Example:
    >>> import numpy as np
    >>> eval_transform(np.zeros((300, 400, 3), np.uint8), 224).shape
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


def eval_transform(images, image_size):
    """The official evaluation transform of decoded RGB images.

    Args:
        images (tf.Tensor or np.ndarray): `[H, W, 3]` or a batch `[N, H, W, 3]` of one size, any
            dtype, values 0..255.
        image_size (int): Side of the square output.

    Returns:
        tf.Tensor: float32 `[image_size, image_size, 3]` (or `[N, image_size, image_size,
            3]`) with integral values in 0..255.
    """
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    top, left, crop_height, crop_width = center_crop_box(shape[-3], shape[-2], image_size)
    crop = images[..., top:top + crop_height, left:left + crop_width, :]
    # PIL resamples horizontally first into a uint8 image, then vertically; rounding and
    # clipping between the passes matters where bicubic overshoots on sharp edges.
    wide = _resize_to_pixels(tf.cast(crop, tf.float32), [crop_height, image_size])
    resized = _resize_to_pixels(wide, [image_size, image_size])
    static_shape = images.shape[:-3].concatenate([image_size, image_size, 3])
    return tf.ensure_shape(resized, static_shape)


def _resize_to_pixels(images, size):
    resized = tf.image.resize(images, size, method="bicubic", antialias=True)
    return tf.clip_by_value(tf.round(resized), 0.0, 255.0)
