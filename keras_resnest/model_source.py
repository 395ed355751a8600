"""The Keras model an export starts from: a named ResNeSt with weights, or a saved `.keras` model.

Example:
    >>> model = load_model_for_export("resnest14d", weights="none", image_size=64)
    >>> model.input_shape
    (None, 64, 64, 3)
"""
import json
import zipfile
from pathlib import Path

import keras_resnest
from keras_resnest import classifier
from keras_resnest.models.configs import MODEL_CONFIGS, resolve_model_name

NO_WEIGHTS = ("none", "random")


def default_image_size(model_name):
    """The official evaluation crop of a named model (224 for ResNeSt-50, 256 for -101, ...)."""
    return MODEL_CONFIGS[resolve_model_name(model_name)].default_size


def is_keras_model_file(weights):
    """True for a saved `.keras` model: the file is the model, not weights for `model_name`."""
    return weights is not None and str(weights).endswith(".keras")


def model_name_before_loading(model_name, weights):
    """The `.name` of the model `load_model_for_export(model_name, weights)` returns, found
    without building or loading anything (it is TF-Serving's default model name, and so part
    of the output path, which is checked before the slow build). None if it cannot be read.
    """
    if not is_keras_model_file(weights):
        return resolve_model_name(model_name)  # create_model names a model by its canonical name
    try:
        # A .keras file is a zip archive whose config.json holds the model's config.
        with zipfile.ZipFile(weights) as archive:
            return json.loads(archive.read("config.json"))["config"]["name"]
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile):
        return None  # loading the file reports what is wrong with it


def load_model_for_export(model_name, weights="imagenet", image_size=None):
    """Build `model_name` for `image_size` x `image_size` inputs with `weights`, or load a model.

    Args:
        model_name: a name from `keras_resnest.list_models()` or an alias (`resnest50d`);
            ignored when `weights` is a `.keras` file (the file holds the architecture).
        weights: "imagenet", "none" (random initialisation, for testing the pipeline), a
            weights file accepted by `create_model`, or a fine-tuned `.keras` model.
        image_size: input size; default: the model's official evaluation crop, or for a
            `.keras` file the size it was saved with.
    """
    if is_keras_model_file(weights):
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"--weights {path}: no such .keras model file")
        if not zipfile.is_zipfile(path):  # Keras would call it "File not found"
            raise ValueError(f"--weights {path}: not a .keras model (expected a zip archive)")
        # safe_mode (the default) refuses arbitrary code; ResNeSt layers are registered.
        # keras_resnest.load_model also renames the layers of 0.1.0 files ("layer3.5").
        model = keras_resnest.load_model(path, compile=False)
        if image_size is not None and classifier.fixed_image_size(model) is None:
            return _rebuild_for_size(model, image_size)
        classifier.resolve_image_size(model, image_size)  # a different fixed size: refused
        return model
    model_name = resolve_model_name(model_name)
    if weights is not None and str(weights).lower() in NO_WEIGHTS:
        weights = None
    size = int(image_size) if image_size is not None else default_image_size(model_name)
    return keras_resnest.create_model(model_name, weights=weights, input_shape=(size, size, 3))


def _rebuild_for_size(model, image_size):
    """A copy of a size-agnostic functional model with a fixed square input (same weights)."""
    config = model.get_config()
    input_layer = config["layers"][0]
    input_layer["config"]["batch_shape"] = [None, int(image_size), int(image_size), 3]
    rebuilt = model.__class__.from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt
