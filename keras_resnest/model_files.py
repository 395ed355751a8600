"""Loading `.keras` model files on every Keras backend, old ones included.

keras-resnest 0.1.0 named its layers with the PyTorch module names as they are ("conv1.0",
"layer3.5"). Keras' PyTorch backend refuses such names (`KeyError: parameter name can't contain
"."`: every variable becomes a torch parameter named by its path), so the layers are now named
with "_" for "." ("conv1_0", "layer3_5"; `keras_resnest.porting.keras_layer_name`).

Only the `.keras` config holds layer names: the weights (`model.weights.h5` inside a `.keras`
file, and every `.weights.h5`) are stored by layer class and order, so weights files of either
naming load into either model unchanged. `load_model` renames the layers of an old `.keras`
file while loading (with a warning that says so); `upgrade_model_file` writes a renamed copy.

Example:
    >>> import keras_resnest
    >>> model = keras_resnest.load_model("fine_tuned.keras")   # doctest: +SKIP
"""
import json
import os
import shutil
import tempfile
import warnings
import zipfile

CONFIG_MEMBER = "config.json"


def _legacy_layer_names(config):
    """Dotted layer names anywhere in a (nested) model config."""
    names = set()
    if isinstance(config, dict):
        name = config.get("name")
        if "class_name" in config and isinstance(name, str) and "." in name:
            names.add(name)
        inner = config.get("config")
        if isinstance(inner, dict) and isinstance(inner.get("name"), str) \
                and "." in inner["name"] and "class_name" in config:
            names.add(inner["name"])
        for value in config.values():
            names |= _legacy_layer_names(value)
    elif isinstance(config, list):
        for value in config:
            names |= _legacy_layer_names(value)
    return names


def _renamed(config, mapping):
    if isinstance(config, dict):
        return {key: _renamed(value, mapping) for key, value in config.items()}
    if isinstance(config, list):
        return [_renamed(value, mapping) for value in config]
    if isinstance(config, str):
        return mapping.get(config, config)
    return config


def upgrade_config(config):
    """(config with dotted layer names renamed, {old: new}); `config` is not modified."""
    from keras_resnest.porting import keras_layer_name

    mapping = {name: keras_layer_name(name) for name in _legacy_layer_names(config)}
    if not mapping:
        return config, mapping
    return _renamed(config, mapping), mapping


def upgrade_model_file(path, output):
    """Writes `path` (a `.keras` file) to `output` with its layers renamed; returns {old: new}.

    The archive's other members (weights, metadata, assets) are copied unchanged.
    """
    with zipfile.ZipFile(path) as source:
        config, mapping = upgrade_config(json.loads(source.read(CONFIG_MEMBER)))
        with zipfile.ZipFile(output, "w", zipfile.ZIP_STORED) as target:
            for info in source.infolist():
                if info.filename == CONFIG_MEMBER:
                    target.writestr(info, json.dumps(config))
                else:
                    with source.open(info) as member, target.open(info, "w") as copy:
                        shutil.copyfileobj(member, copy, 1 << 20)
    return mapping


def has_legacy_names(path):
    """True for a `.keras` file with dotted layer names (saved by keras-resnest 0.1.0)."""
    with zipfile.ZipFile(path) as archive:
        return bool(_legacy_layer_names(json.loads(archive.read(CONFIG_MEMBER))))


def load_model(path, **kwargs):
    """`keras.saving.load_model(path, **kwargs)` that also loads `.keras` files of
    keras-resnest 0.1.0 on every backend, renaming their dotted layers ("layer3.5" ->
    "layer3_5") with a warning. Weights and outputs are unchanged."""
    import keras

    import keras_resnest.layers  # noqa: F401  (registers the layer classes .keras files name)

    path = os.fspath(path)
    if not (zipfile.is_zipfile(path) and has_legacy_names(path)):
        return keras.saving.load_model(path, **kwargs)
    with tempfile.TemporaryDirectory(prefix="keras_resnest_upgrade_") as directory:
        upgraded = os.path.join(directory, os.path.basename(path))
        if not upgraded.endswith(".keras"):
            upgraded += ".keras"
        mapping = upgrade_model_file(path, upgraded)
        example = sorted(mapping)[0]
        warnings.warn(
            f"{path}: saved by keras-resnest 0.1.0 with PyTorch-style layer names; loaded with "
            f"{len(mapping)} layers renamed ({example!r} -> {mapping[example]!r}: '.' became "
            "'_', which every Keras backend accepts). Weights are unchanged; save the model "
            "again, or run keras_resnest.model_files.upgrade_model_file, to keep the new names.",
            stacklevel=2)
        return keras.saving.load_model(upgraded, **kwargs)
