"""`ResNeStImageClassifier` and its preprocessing for keras-hub.

The image converter applies the official evaluation transform (`scripts/torch/verify.py`,
`ECenterCrop`): a centred square crop of `size / (size + 32)` of the short image side, resized to
`size x size` with antialiased bicubic interpolation, then the ImageNet mean/std. It resizes in
one float pass where PIL resizes through uint8 twice; `keras_resnest.export.image_transform`
reproduces PIL exactly for serving, and the tests bound the difference between the two.
"""
import keras
from keras import ops
from keras_hub.layers import ImageConverter
from keras_hub.models import ImageClassifier, ImageClassifierPreprocessor

from keras_resnest.export.image_transform import center_crop_box, static_center_crop_box
from keras_resnest.hub.backbone import ResNeStBackbone
from keras_resnest.models.resnest import IMAGENET_MEAN, IMAGENET_STD

# x * scale + offset == (x / 255 - mean) / std
IMAGENET_SCALE = [1.0 / (255.0 * std) for std in IMAGENET_STD]
IMAGENET_OFFSET = [-mean / std for mean, std in zip(IMAGENET_MEAN, IMAGENET_STD)]


@keras.saving.register_keras_serializable(package="keras_resnest")
class ResNeStImageConverter(ImageConverter):
    """0..255 RGB images -> the official evaluation crop, resized and normalised.

    Args:
        image_size: `(height, width)` of the model input (square for the official crop);
            None leaves the images' size alone and only normalises.
        official_crop: crop `size / (size + 32)` of the short side before resizing, as the
            official evaluation does; False resizes the whole (aspect-cropped) image.
        Other arguments as `keras_hub.layers.ImageConverter`; the defaults are the official
        ImageNet normalisation and antialiased bicubic resizing.

    >>> import numpy as np
    >>> converter = ResNeStImageConverter(image_size=(224, 224))
    >>> mean_colour = np.ones((1, 256, 320, 3), "float32") * 255 * np.float32(IMAGENET_MEAN)
    >>> out = keras.ops.convert_to_numpy(converter(mean_colour))
    >>> out.shape, bool(np.abs(out).max() < 1e-3)   # 224 px crop; the mean normalises to 0
    ((1, 224, 224, 3), True)
    """

    backbone_cls = ResNeStBackbone

    def __init__(self, image_size=None, scale=IMAGENET_SCALE, offset=IMAGENET_OFFSET,
                 interpolation="bicubic", antialias=True, official_crop=True, **kwargs):
        super().__init__(image_size=image_size, scale=scale, offset=offset,
                         interpolation=interpolation, antialias=antialias, **kwargs)
        self.official_crop = official_crop

    def _call_python(self, inputs):
        if self.official_crop and self.image_size is not None and not isinstance(
                inputs, (dict, list, tuple)):
            inputs = self._official_center_crop(ops.convert_to_tensor(inputs))
        return super()._call_python(inputs)

    def _official_center_crop(self, images):
        height, width = images.shape[-3], images.shape[-2]
        size = self.image_size[0]
        if height is None or width is None:
            # Unknown sizes only happen in TensorFlow graphs (tf.data).
            import tensorflow as tf

            shape = tf.shape(images)
            top, left, crop_h, crop_w = center_crop_box(shape[-3], shape[-2], size)
            return images[..., top:top + crop_h, left:left + crop_w, :]
        top, left, crop_h, crop_w = static_center_crop_box(height, width, size)
        return images[..., top:top + crop_h, left:left + crop_w, :]

    def get_config(self):
        config = super().get_config()
        config["official_crop"] = self.official_crop
        return config

    @classmethod
    def from_preset(cls, preset, **kwargs):
        from keras_resnest.hub.presets import resolve_preset

        return super().from_preset(resolve_preset(preset), **kwargs)


@keras.saving.register_keras_serializable(package="keras_resnest")
class ResNeStImageClassifierPreprocessor(ImageClassifierPreprocessor):
    """keras-hub's image classifier preprocessor with `ResNeStImageConverter`."""

    backbone_cls = ResNeStBackbone
    image_converter_cls = ResNeStImageConverter

    @classmethod
    def from_preset(cls, preset, **kwargs):
        from keras_resnest.hub.presets import resolve_preset

        return super().from_preset(resolve_preset(preset), **kwargs)


@keras.saving.register_keras_serializable(package="keras_resnest")
class ResNeStImageClassifier(ImageClassifier):
    """keras-hub's `ImageClassifier` on a `ResNeStBackbone` (logits by default).

    Example (downloads and converts the official weights once):
        classifier = ResNeStImageClassifier.from_preset("resnest50_imagenet")
        classifier.predict(images_0_to_255)  # any size: the converter crops and resizes
    """

    backbone_cls = ResNeStBackbone
    preprocessor_cls = ResNeStImageClassifierPreprocessor

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """keras-hub's `from_preset`; also takes the names in `keras_resnest.hub.PRESETS`."""
        from keras_resnest.hub.presets import resolve_preset

        return super().from_preset(resolve_preset(preset), load_weights=load_weights, **kwargs)
