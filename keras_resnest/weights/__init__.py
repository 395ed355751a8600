"""Weights for keras_resnest models (placeholder until the pretrained-weights work lands)."""
import os


def apply_weights(model, weights, *, model_name):
    """Loads `weights` into `model`: None, "imagenet" or a path to Keras weights."""
    if weights is None:
        return
    if weights == "imagenet":
        raise ValueError(
            f'weights="imagenet" for {model_name!r} is not available yet: pretrained weights '
            "arrive with the weights work. Pass weights=None or a path to a .weights.h5 file."
        )
    if not os.path.exists(weights):
        raise ValueError(f"weights={weights!r}: expected None, 'imagenet' or an existing file.")
    model.load_weights(weights)
