"""Image decoding for the serving graph, then the official evaluation transform.

TF-Serving runs the exported graph with no Python, so decoding is built from `tf.io` ops
(`keras_resnest.image_decoding`: the pixels of `keras_resnest.images`, and an image whose header
announces more pixels than a limit is refused before it is decoded). The transform after it is
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

from keras_resnest.image_decoding import decode_image
from keras_resnest.preprocessing import eval_transform


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
