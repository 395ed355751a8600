"""Image transforms of the ResNeSt recipe, as tf.data-friendly functions.

* Training: the inception-style random resized crop (the official `ERandomCrop`: area 10%-100%
  of the image, aspect ratio 3/4..4/3, bilinear resize) and a horizontal flip, then optionally
  Keras 3's `RandAugment`.
* Validation: the official evaluation transform, `keras_resnest.preprocessing.eval_transform`
  (the one predict, the serving graph and the keras-hub converter use).
* Batch level: Keras 3's `MixUp` and `CutMix` on one-hot labels (when both are on, each batch gets
  one of them at random, as timm's mixup switch does).

AutoAugment is not in Keras 3 (nor keras-hub; tensorflow-addons is dead and tf-models-official
pins another TensorFlow). This package substitutes Keras 3's `RandAugment` for it, which the
ResNeSt training scripts also offer (`--rand-aug`) and which needs no learned policy.

All images are float32 RGB in 0..255 (the model normalises inside).

Example:
    >>> import tensorflow as tf
    >>> from keras_resnest.training.augment import random_resized_crop
    >>> image = tf.random.uniform((300, 400, 3), 0, 255)
    >>> random_resized_crop(image, 224).shape
    TensorShape([224, 224, 3])
"""
import hashlib

import tensorflow as tf

# AugmentConfig is defined with the run's configuration (TensorFlow-free, for the command's
# --help) and is used here: `augment.AugmentConfig` stays the name the pipeline's callers know.
from keras_resnest.training.config import MIN_AREA, AugmentConfig  # noqa: F401

# Official ERandomCrop bounds (resnest/torch/transforms/transforms.py).
ASPECT_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def op_seed(seed, name):
    """The seed of one random op, derived from the run's `seed`; None (unseeded) stays None.

    The one place op seeds come from. TensorFlow reads an op seed of 0 as "pick one at random",
    and under op determinism `sample_distorted_bounding_box` refuses it outright, so `--seed 0`
    must not reach an op as 0. Hashing (seed, name) gives a non-zero seed in [1, 2**31 - 1],
    the same in every process, and a different one per op: ops sharing one seed would draw
    from the same random stream (a crop and a flip in lockstep).

    >>> op_seed(0, "crop") != 0 and op_seed(0, "crop") != op_seed(0, "flip"), op_seed(None, "crop")
    (True, None)
    """
    if seed is None:
        return None
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**31 - 1) + 1


def random_resized_crop(image, size, min_area=MIN_AREA, seed=None):
    """Crops a random box (area fraction in [min_area, 1], aspect 3/4..4/3), resizes to `size`."""
    shape = tf.shape(image)
    # sample_distorted_bounding_box implements exactly the inception sampling with up to 100
    # attempts and falls back to the whole image, as torchvision's RandomResizedCrop does.
    begin, crop_size, _ = tf.image.sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=(1, 1, 4)),
        min_object_covered=0.0,
        aspect_ratio_range=ASPECT_RATIO,
        area_range=(min_area, 1.0),
        max_attempts=100,
        use_image_if_no_bounding_boxes=True,
        seed=0 if seed is None else seed,
    )
    crop = tf.slice(image, begin, crop_size)
    resized = tf.image.resize(crop, (size, size), method="bilinear", antialias=False)
    return tf.reshape(resized, (size, size, 3))


def make_image_augmenter(config, size, seed=None):
    """Returns `fn(image) -> image` for one training image (crop, flip, RandAugment).

    `seed`: the run's seed for a repeatable run (each op gets its own `op_seed`), None for fresh
    randomness.
    """
    import keras

    rand_augment = (
        keras.layers.RandAugment(
            value_range=(0, 255), num_ops=2, factor=0.5, seed=op_seed(seed, "randaugment")
        )
        if config.randaugment
        else None
    )

    def augment(image):
        image = random_resized_crop(image, size, config.min_area, seed=op_seed(seed, "crop"))
        if config.flip:
            image = tf.image.random_flip_left_right(image, seed=op_seed(seed, "flip"))
        if rand_augment is not None:
            image = rand_augment(image, training=True)
        return tf.cast(image, tf.float32)

    return augment


def make_batch_mixer(config, seed=None):
    """Returns `fn(images, onehot_labels) -> (images, soft_labels)`, or None when both are off.

    `seed`: the run's seed (each op gets its own `op_seed`), or None.
    """
    import keras

    mixup = (
        keras.layers.MixUp(alpha=config.mixup_alpha, seed=op_seed(seed, "mixup"))
        if config.mixup_alpha
        else None
    )
    cutmix = (
        keras.layers.CutMix(factor=config.cutmix_alpha, seed=op_seed(seed, "cutmix"))
        if config.cutmix_alpha
        else None
    )
    if mixup is None and cutmix is None:
        return None

    def apply(layer, images, labels):
        mixed = layer({"images": images, "labels": labels}, training=True)
        return mixed["images"], tf.cast(mixed["labels"], tf.float32)

    def mix(images, labels):
        if mixup is None:
            return apply(cutmix, images, labels)
        if cutmix is None:
            return apply(mixup, images, labels)
        use_mixup = tf.random.uniform((), seed=op_seed(seed, "mix-switch")) < 0.5
        return tf.cond(
            use_mixup,
            lambda: apply(mixup, images, labels),
            lambda: apply(cutmix, images, labels),
        )

    return mix
