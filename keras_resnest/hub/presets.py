"""keras-hub presets of the 13 ImageNet models: `"<model>_imagenet"`, e.g. "resnest50_imagenet".

Plain data, as keras-hub's own `*_presets.py` files are; `keras_resnest.hub.loading` loads
them. keras-hub serves its own presets from Kaggle; ours come through keras_resnest's ImageNet
weights instead (the official file, downloaded once, SHA-256 checked, converted without torch
and cached; `keras_resnest.weights.pretrained`). On first use a preset is written from them as
a regular keras-hub preset directory (`save_to_preset`) in the Keras cache,
`$KERAS_HOME/keras_resnest_presets/<preset>/`, so every keras-hub loader reads it the usual
way afterwards.

Example:
    >>> sorted(PRESETS)[:2]
    ['resnest101_imagenet', 'resnest14d_imagenet']
    >>> PRESETS["resnest50_imagenet"]["metadata"]["image_size"]
    224
"""
from keras_resnest.models.configs import MODEL_CONFIGS

PRESET_SUFFIX = "_imagenet"

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
