"""Weights for keras_resnest models: `weights=` of every constructor, checkpoint reading
without torch, and the official ImageNet weights.

`weights=` accepts
* None: random initialisation;
* "imagenet": the official weights (downloaded, SHA-256 checked, converted and cached once;
  see `keras_resnest.weights.pretrained`);
* "hf://<owner>/<name>[@<revision>]": a timm repository on the Hugging Face Hub
  (`keras_resnest.weights.hf_hub`);
* a PyTorch `.pth`/`.pt`, `.safetensors` or `.npz` state dict (official or timm names),
  converted on load without torch;
* a Keras `.weights.h5` or `.keras` file.

With `include_top=False` or another `classes`, the head of a checkpoint is not loaded.

Example:
    >>> from keras_resnest.weights import read_state_dict
    >>> state = read_state_dict("resnest50-528c19ca.pth")   # doctest: +SKIP
"""
import os

from keras_resnest.weights.checkpoints import (
    CheckpointError,
    UnsafeCheckpointError,
    is_torch_free_checkpoint,
    read_checkpoint,
    read_state_dict,
)

KERAS_SUFFIXES = (".weights.h5", ".keras", ".h5")


def apply_weights(model, weights, *, model_name, build_imagenet_model=None):
    """Loads `weights` into `model`; see the module docstring.

    Args:
        model (keras.Model): A model built as `model_name`.
        weights (str or None): None, "imagenet", `"hf://<owner>/<name>[@<revision>]"` or a
            checkpoint / Keras weights file.
        model_name (str): The canonical name `model` was built as.
        build_imagenet_model (callable or None): returns a new ImageNet-head `model_name` model,
            into which `weights="imagenet"` converts the official checkpoint when `model` has
            another head (the model builder passes it: this package does not import it). Defaults to
            None.
    """
    if weights is None:
        return None
    if weights == "imagenet":
        from keras_resnest.weights.pretrained import load_imagenet_weights

        return load_imagenet_weights(model, model_name, build_imagenet_model)
    if isinstance(weights, str) and weights.startswith("hf://"):
        from keras_resnest.weights.hf_hub import load_hub_weights

        return load_hub_weights(model, weights, model_name)
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise ValueError(f"weights={weights!r}: expected None, 'imagenet', 'hf://<owner>/<name>' "
                         "or an existing file.")
    if is_torch_free_checkpoint(path):
        from keras_resnest.porting import load_torch_state_dict

        return load_torch_state_dict(model, read_state_dict(path, lazy=True),
                                     strict=True)
    if path.lower().endswith(KERAS_SUFFIXES):
        from keras_resnest.weights.pretrained import load_keras_weights

        return load_keras_weights(model, path)
    raise ValueError(
        f"weights={weights!r}: unsupported file type; expected .pth/.pt, .safetensors, .npz "
        "(converted on load) or a Keras .weights.h5/.keras file.")


__all__ = ["CheckpointError", "UnsafeCheckpointError", "apply_weights", "read_checkpoint",
           "read_state_dict"]
