"""`ResNeStImageClassifier` and its preprocessing for keras-hub.

The image converter applies the official evaluation transform
(`keras_resnest.preprocessing.eval_transform`, the one every path of the package uses: a centred
square crop of `size / (size + 32)` of the short image side, resized to `size x size` with
antialiased bicubic interpolation as PIL does), then the ImageNet mean/std.
"""
import keras
import tensorflow as tf
from keras import ops
from keras_hub.layers import ImageConverter
from keras_hub.models import ImageClassifier, ImageClassifierPreprocessor

from keras_resnest.hub.backbone import ResNeStBackbone
from keras_resnest.hub.loading import PresetNames
from keras_resnest.models.resnest import IMAGENET_MEAN, IMAGENET_STD
from keras_resnest.preprocessing import eval_transform

# x * scale + offset == (x / 255 - mean) / std
IMAGENET_SCALE = [1.0 / (255.0 * std) for std in IMAGENET_STD]
IMAGENET_OFFSET = [-mean / std for mean, std in zip(IMAGENET_MEAN, IMAGENET_STD)]


@keras.saving.register_keras_serializable(package="keras_resnest")
class ResNeStImageConverter(PresetNames, ImageConverter):
    """0..255 RGB images -> the official evaluation crop, resized and normalised.

    Args:
        image_size (tuple of int or None): `(height, width)` of the model input (square for the
            official crop); None leaves the images' size alone and only normalises.
        official_crop (bool): crop `size / (size + 32)` of the short side before resizing, as the
            official evaluation does; False resizes the whole (aspect-cropped) image.

    Other arguments are those of `keras_hub.layers.ImageConverter`; the defaults are the
    official ImageNet normalisation and antialiased bicubic resizing.

    >>> import numpy as np
    >>> converter = ResNeStImageConverter(image_size=(224, 224))
    >>> grey = np.full((1, 256, 320, 3), 128, "float32")
    >>> out = keras.ops.convert_to_numpy(converter(grey))
    >>> normalised = (128 / 255 - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    >>> out.shape, bool(np.abs(out - normalised).max() < 1e-5)   # 224 px crop, normalised
    ((1, 224, 224, 3), True)
    """

    backbone_cls = ResNeStBackbone

    def __init__(self, image_size=None, scale=IMAGENET_SCALE, offset=IMAGENET_OFFSET,
                 interpolation="bicubic", antialias=True, official_crop=True, **kwargs):
        super().__init__(image_size=image_size, scale=scale, offset=offset,
                         interpolation=interpolation, antialias=antialias, **kwargs)
        self.official_crop = official_crop

    def call(self, inputs):
        if self.official_crop and self.image_size is not None and not isinstance(
                inputs, (dict, list, tuple)):
            # The official crop and resize; keras-hub's own resize then keeps the size as is.
            inputs = self._official_transform(inputs)
        return super().call(inputs)

    def _official_transform(self, images):
        # TensorFlow ops: in tf.data (any backend) they stay graph ops; eagerly on another
        # backend the result goes back as that backend's tensor.
        if keras.backend.backend() == "tensorflow" or not tf.executing_eagerly():
            return eval_transform(images, self.image_size[0])
        return ops.convert_to_tensor(
            eval_transform(ops.convert_to_numpy(images), self.image_size[0]).numpy())

    def get_config(self):
        config = super().get_config()
        config["official_crop"] = self.official_crop
        return config


@keras.saving.register_keras_serializable(package="keras_resnest")
class ResNeStImageClassifierPreprocessor(PresetNames, ImageClassifierPreprocessor):
    """keras-hub's image classifier preprocessor with `ResNeStImageConverter`."""

    backbone_cls = ResNeStBackbone
    image_converter_cls = ResNeStImageConverter


@keras.saving.register_keras_serializable(package="keras_resnest")
class ResNeStImageClassifier(PresetNames, ImageClassifier):
    """keras-hub's `ImageClassifier` on a `ResNeStBackbone` (logits by default).

    Example (downloads and converts the official weights once):
        classifier = ResNeStImageClassifier.from_preset("resnest50_imagenet")
        classifier.predict(images_0_to_255)  # any size: the converter crops and resizes
    """

    backbone_cls = ResNeStBackbone
    preprocessor_cls = ResNeStImageClassifierPreprocessor
