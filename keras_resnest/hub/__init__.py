"""ResNeSt as a keras-hub model: a `FeaturePyramidBackbone` for keras-hub's task models
(`DeepLabV3ImageSegmenter`, `RetinaNetObjectDetector`, ...), an `ImageClassifier` with the
official evaluation transform, and presets for the 13 ImageNet models, registered with
keras-hub (`keras_hub.models.ImageClassifier.from_preset("resnest50_imagenet")` finds them).
`from_preset` also reads timm's repositories on the Hugging Face Hub (`"hf://timm/resnest50d.in1k"`;
`keras_resnest.hub.loading`).

Needs keras-hub: `pip install "keras-resnest[hub]"`.

Example:
    >>> from keras_resnest.hub import ResNeStBackbone
    >>> backbone = ResNeStBackbone.from_model_name("resnest14d", output_stride=8)
    >>> sorted(backbone.pyramid_outputs)
    ['P2', 'P3']
"""
try:
    import keras_hub  # noqa: F401
except ImportError as error:  # keras-hub is an optional extra
    raise ImportError(
        'keras_resnest.hub needs keras-hub, which is not installed: '
        'pip install "keras-resnest[hub]"') from error

from keras_resnest.hub.backbone import ResNeStBackbone
from keras_resnest.hub.classifier import (
    ResNeStImageClassifier,
    ResNeStImageClassifierPreprocessor,
    ResNeStImageConverter,
)
from keras_resnest.hub.loading import preset_directory, register_with_keras_hub
from keras_resnest.hub.presets import PRESETS
from keras_resnest.hub.retinanet import initialise_heads_as_retinanet

# keras-hub's own from_preset (keras_hub.models.ImageClassifier, Backbone, ...) finds our
# preset names from here on, as it finds its built-in ones; presets are written with this
# classifier. Every submodule's import runs this file first, so no preset is read before.
register_with_keras_hub(ResNeStImageClassifier)

__all__ = ["PRESETS", "ResNeStBackbone", "ResNeStImageClassifier",
           "ResNeStImageClassifierPreprocessor", "ResNeStImageConverter",
           "initialise_heads_as_retinanet", "preset_directory"]
