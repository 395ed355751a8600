"""keras-hub presets of the 13 ImageNet models: `"<model>_imagenet"`, e.g. "resnest50_imagenet".

keras-hub serves its own presets from Kaggle; ours come through keras_resnest's ImageNet
weights instead (the official file, downloaded once, SHA-256 checked, converted without torch
and cached; `keras_resnest.weights.pretrained`). On first use a preset is written from them as
a regular keras-hub preset directory (`save_to_preset`) in the Keras cache,
`$KERAS_HOME/keras_resnest_presets/<preset>/`, so every keras-hub loader reads it the usual
way afterwards.

The names are registered with keras-hub as its own presets are (`register_presets`, in
`keras_resnest.hub`), so after `import keras_resnest.hub` keras-hub's base classes find them
too: `keras_hub.models.ImageClassifier.from_preset("resnest50_imagenet")`. keras-hub resolves a
registered name to its entry's "kaggle_handle" when it reads a file; our entries compute that
handle on access: the local preset directory, written on first use.

Example:
    >>> sorted(PRESETS)[:2]
    ['resnest101_imagenet', 'resnest14d_imagenet']
"""
import contextlib
import os
import shutil
import tempfile

from keras_resnest.models.configs import MODEL_CONFIGS
from keras_resnest.weights import pretrained

PRESET_SUFFIX = "_imagenet"
PRESETS_SUBDIR = "keras_resnest_presets"
# The last file keras-hub's saver writes: a directory holding it is complete.
COMPLETE_MARKER = "task.weights.h5"

PRESETS = {
    f"{name}{PRESET_SUFFIX}": {
        "metadata": {
            "description": (f"{name} pre-trained on ImageNet-1k by the ResNeSt authors, "
                            f"evaluated at {config.default_size}x{config.default_size}."),
            "model_name": name,
            "image_size": config.default_size,
        },
    }
    for name, config in MODEL_CONFIGS.items()
}


class LocalPreset(dict):
    """A keras-hub preset entry (`{"metadata": ...}`) whose "kaggle_handle", read by keras-hub's
    `get_file` for each file of a registered preset, is our local preset directory, written on
    first use (so registering downloads nothing, and `KERAS_HOME` is read when it is used)."""

    def __init__(self, name, entry):
        super().__init__(entry)
        self.name = name

    def __missing__(self, key):
        if key == "kaggle_handle":
            return preset_directory(self.name)
        raise KeyError(key)


def register_with_keras_hub(backbone_cls):
    """Registers `PRESETS` with keras-hub for `backbone_cls`, as keras-hub registers its own
    (`keras_hub.src.utils.preset_utils.register_presets`, the one way it offers: 0.32 has no
    public API for it)."""
    from keras_hub.src.utils.preset_utils import register_presets

    register_presets({name: LocalPreset(name, entry) for name, entry in PRESETS.items()},
                     backbone_cls)


def presets_root():
    """`$KERAS_HOME/keras_resnest_presets` (beside the weights cache)."""
    return os.path.join(os.path.dirname(pretrained.cache_dir()), PRESETS_SUBDIR)


def resolve_preset(preset):
    """A name from `PRESETS` -> its local preset directory (written on first use); any other
    preset (a directory, `kaggle://`, `hf://`) is returned unchanged for keras-hub."""
    if isinstance(preset, str) and preset in PRESETS:
        return preset_directory(preset)
    return preset


def preset_directory(preset):
    """The keras-hub preset directory of one of `PRESETS`, written on first use."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(sorted(PRESETS))}")
    directory = os.path.join(presets_root(), preset)
    if not os.path.isfile(os.path.join(directory, COMPLETE_MARKER)):
        _write_preset(preset, directory)
    return directory


def copy_backbone_weights(source, backbone):
    """Copies the weights of a keras_resnest model into a `ResNeStBackbone` of its architecture
    (the layers have the same names)."""
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())
    return backbone


def default_preprocessor(model_name):
    """Our preprocessor at the evaluation size of `model_name`."""
    from keras_resnest.hub.classifier import (
        ResNeStImageClassifierPreprocessor,
        ResNeStImageConverter,
    )

    size = MODEL_CONFIGS[model_name].default_size
    return ResNeStImageClassifierPreprocessor(
        image_converter=ResNeStImageConverter(image_size=(size, size)))


def build_classifier(model_name, weights="imagenet", num_classes=pretrained.IMAGENET_CLASSES,
                     cls=None, **kwargs):
    """A `ResNeStImageClassifier` of `model_name` holding `weights`.

    Args:
        model_name: str. A canonical model name.
        weights: str or None. Any `weights=` of `create_model` ("imagenet", "hf://...", a file).
            Defaults to "imagenet".
        num_classes: int. The head's size; with another size than the checkpoint's the head
            keeps its initialisation. Defaults to 1000.
        cls: the classifier class, a `ResNeStImageClassifier` subclass. Defaults to None
            (`ResNeStImageClassifier`).
        **kwargs: passed to the classifier (e.g. `activation`, `preprocessor`).
    """
    from keras_resnest.hub.backbone import ResNeStBackbone
    from keras_resnest.hub.classifier import ResNeStImageClassifier
    from keras_resnest.models import create_model

    source = create_model(model_name, weights=weights, classes=num_classes,
                          classifier_activation=None)
    backbone = copy_backbone_weights(source, ResNeStBackbone.from_model_name(model_name))
    kwargs.setdefault("preprocessor", default_preprocessor(model_name))
    classifier = (cls or ResNeStImageClassifier)(backbone, num_classes=num_classes, **kwargs)
    classifier.output_dense.set_weights(source.get_layer("fc").get_weights())
    return classifier


def build_imagenet_classifier(model_name):
    """A `ResNeStImageClassifier` holding the official ImageNet weights of `model_name`."""
    return build_classifier(model_name, weights="imagenet")


def _write_preset(preset, directory):
    classifier = build_imagenet_classifier(PRESETS[preset]["metadata"]["model_name"])
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    # Written beside the final directory and renamed: a preset is complete or absent.
    partial = tempfile.mkdtemp(prefix=f".{preset}.partial-", dir=os.path.dirname(directory))
    try:
        classifier.save_to_preset(partial)
        if os.path.isdir(directory):  # an incomplete leftover, or another process was faster
            if os.path.isfile(os.path.join(directory, COMPLETE_MARKER)):
                return
            shutil.rmtree(directory)
        os.rename(partial, directory)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(partial)
