"""keras-resnest: ResNeSt (Split-Attention Networks) for Keras 3, identical to the official
PyTorch models.

>>> import keras_resnest
>>> model = keras_resnest.ResNeSt50(weights=None)

The public names load on first use (PEP 562), so `import keras_resnest` alone does not import
Keras or TensorFlow: the `keras-resnest` command answers `--help` at once and can hide
TensorFlow's start-up lines before TensorFlow loads (`keras_resnest.quiet_start`).
"""
import importlib

__version__ = "0.1.0"

_PUBLIC_NAMES = {
    "keras_resnest.models": ("ResNeSt14", "ResNeSt26", "ResNeSt50", "ResNeSt101", "ResNeSt200",
                             "ResNeSt269", "create_model", "list_models"),
    "keras_resnest.imagenet": ("decode_predictions", "imagenet_classes", "preprocess_input"),
    "keras_resnest.porting": ("load_torch_state_dict",),
    "keras_resnest.model_files": ("load_model",),
}
_MODULE_OF = {name: module for module, names in _PUBLIC_NAMES.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'keras_resnest' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
