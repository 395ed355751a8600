"""keras-resnest: ResNeSt (Split-Attention Networks) for Keras 3, identical to the official
PyTorch models.

>>> import keras_resnest
>>> model = keras_resnest.ResNeSt50(weights=None)

`import keras_resnest` imports Keras and registers every serializable class of the package (the
ResNeSt layers and the quantization-aware layers), so `keras.saving.load_model` reads the
`.keras` files the package writes in any program that imported it; the keras-hub classes
register when `keras_resnest.hub` is imported.

The one exception is the `keras-resnest` command (`keras_resnest_cli`): it answers `--help`
without Keras and imports TensorFlow with its start-up lines hidden before anything else does
(`keras_resnest.quiet_start`), then the names below (`import_api`).
"""
import importlib
import sys

__version__ = "0.1.0"

_PUBLIC_NAMES = {
    "keras_resnest.models": ("ResNeSt14", "ResNeSt26", "ResNeSt50", "ResNeSt101", "ResNeSt200",
                             "ResNeSt269", "create_model", "list_models"),
    "keras_resnest.imagenet": ("decode_predictions", "imagenet_classes", "preprocess_input"),
    "keras_resnest.porting": ("load_torch_state_dict",),
    "keras_resnest.model_files": ("load_model",),
}
# The command-line entry point, which defers Keras until its arguments parse.
COMMAND_LINE_MODULE = "keras_resnest_cli"

__all__ = sorted(name for names in _PUBLIC_NAMES.values() for name in names)


def import_api():
    """Imports the public names (and with them Keras and the layers, which registers them).

    Names already bound are kept: a second call (every command makes one) changes nothing.
    """
    for module_name, names in _PUBLIC_NAMES.items():
        module = importlib.import_module(module_name)
        for name in names:
            globals().setdefault(name, getattr(module, name))


def _command_line_is_starting():
    """Whether this import is the command line's: `keras_resnest_cli` is imported, or Python is
    locating `python -m keras_resnest[.training]` (sys.argv[0] is "-m" while it does, and the
    package's `__main__` then starts the command line)."""
    return COMMAND_LINE_MODULE in sys.modules or getattr(sys, "argv", [])[:1] == ["-m"]


if not _command_line_is_starting():
    import_api()
