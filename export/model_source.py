"""The Keras model an export starts from: a named ResNeSt with weights, or a saved `.keras` model.

Example:
    >>> model = load_model_for_export("resnest14d", weights="none", image_size=64)
    >>> model.input_shape
    (None, 64, 64, 3)
"""
from pathlib import Path

import keras

import keras_resnest
from keras_resnest.export import classifier
from keras_resnest.models.configs import MODEL_CONFIGS

NO_WEIGHTS = ("none", "random")


def default_image_size(model_name):
    """The official evaluation crop of a named model (224 for ResNeSt-50, 256 for -101, ...)."""
    config = MODEL_CONFIGS.get(model_name)
    return config.default_size if config is not None else 224


def load_model_for_export(model_name, weights="imagenet", image_size=None):
    """Build `model_name` for `image_size` x `image_size` inputs with `weights`, or load a model.

    Args:
        model_name: a name from `keras_resnest.list_models()`; ignored when `weights` is a
            `.keras` file (the file holds the architecture).
        weights: "imagenet", "none" (random initialisation, for testing the pipeline), a
            weights file accepted by `create_model`, or a fine-tuned `.keras` model.
        image_size: input size; default: the model's official evaluation crop, or for a
            `.keras` file the size it was saved with.
    """
    if weights is not None and str(weights).endswith(".keras"):
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"--weights {path}: no such .keras model file")
        # safe_mode (the default) refuses arbitrary code; ResNeSt layers are registered.
        model = keras.saving.load_model(path, compile=False)
        if image_size is not None and classifier.fixed_image_size(model) is None:
            return _rebuild_for_size(model, image_size)
        classifier.resolve_image_size(model, image_size)  # a different fixed size: refused
        return model
    if model_name not in keras_resnest.list_models():
        raise ValueError(
            f"unknown model {model_name!r}; expected one of {', '.join(keras_resnest.list_models())}"
        )
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
