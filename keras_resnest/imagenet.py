"""ImageNet preprocessing and class names (shipped in the package: no download)."""
import functools
import json
from importlib import resources

import numpy as np
from keras import ops

from keras_resnest.models.resnest import IMAGENET_MEAN, IMAGENET_STD

NUM_CLASSES = 1000


@functools.lru_cache(maxsize=1)
def imagenet_classes():
    """[(wordnet_id, name), ...] for the 1000 ImageNet classes, in class-index order."""
    text = resources.files("keras_resnest").joinpath("data/imagenet_classes.json").read_text()
    return [tuple(entry) for entry in json.loads(text)["classes"]]


def preprocess_input(x):
    """Normalises RGB images in 0..255 (channels last) with the ImageNet mean and std.

    Only needed for models built with `include_preprocessing=False`; by default the models
    normalise inside. Accepts numpy arrays and tensors; returns the same kind, float32.

    Example:
    >>> import numpy as np
    >>> preprocess_input(np.full((1, 2, 2, 3), 255.0)).round(3)[0, 0, 0]
    array([2.249, 2.429, 2.64 ], dtype=float32)
    """
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) < 1 or shape[-1] != 3:
        raise ValueError(
            f"preprocess_input expects RGB images with 3 channels last, e.g. (batch, height, "
            f"width, 3); got shape {shape}.")
    mean = np.asarray(IMAGENET_MEAN, "float32") * 255.0
    std = np.asarray(IMAGENET_STD, "float32") * 255.0
    if isinstance(x, np.ndarray):
        return (x.astype("float32") - mean) / std
    return (ops.cast(x, "float32") - mean) / std


def decode_predictions(preds, top=5):
    """Top classes of a batch of ImageNet predictions, keras.applications style.

    Returns one list per image of `(wordnet_id, class_name, score)` tuples, best first.

    Example:
    >>> import numpy as np
    >>> scores = np.zeros((1, 1000)); scores[0, 1] = 1.0
    >>> decode_predictions(scores, top=1)
    [[('n01443537', 'goldfish', 1.0)]]
    """
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != NUM_CLASSES:
        raise ValueError(
            f"decode_predictions expects a batch of ImageNet predictions of shape (samples, "
            f"{NUM_CLASSES}); got shape {preds.shape}.")
    if not 1 <= top <= NUM_CLASSES:
        raise ValueError(f"top must be between 1 and {NUM_CLASSES}, got {top}.")
    classes = imagenet_classes()
    results = []
    for row in preds:
        best = np.argsort(-row, kind="stable")[:top]
        results.append([(*classes[i], float(row[i])) for i in best])
    return results
