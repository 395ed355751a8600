"""`from_preset("hf://<owner>/<name>[@<revision>]")` of timm's ResNeSt repositories.

A repository written by keras-hub's `save_to_preset` (its `config.json` names a Keras class)
is keras-hub's to load. timm's layout (`config.json` with an "architecture", and
`model.safetensors`) is built here instead: the backbone from the registry
(`ResNeStBackbone.from_model_name`), the weights through `weights="hf://..."` (one conversion,
`keras_resnest.weights.hf_hub`) copied as the presets copy theirs, and our preprocessor at the
model's evaluation size.
"""
from keras_hub.layers import ImageConverter
from keras_hub.models import Backbone, ImageClassifierPreprocessor, Task

from keras_resnest.hub.presets import build_classifier, copy_backbone_weights
from keras_resnest.models.configs import MODEL_CONFIGS
from keras_resnest.weights import hf_hub


def timm_repo(preset):
    """`(model name, config)` of a timm repository `"hf://..."`, or None for any other preset
    (a directory, a registered name, keras-hub's own `hf://` forms and layouts)."""
    if not hf_hub.is_hub_spec(preset):
        return None
    try:
        spec = hf_hub.parse_spec(preset)
    except hf_hub.HubWeightsError:
        return None  # e.g. "hf://<name>" without an owner, which keras-hub accepts
    config = hf_hub.read_config(spec)
    if not hf_hub.is_timm_config(config):
        return None
    return hf_hub.model_name_of(spec, config), config


def from_timm_repo(cls, preset, model_name, config, load_weights=True, **kwargs):
    """An instance of `cls` (a backbone, classifier, preprocessor or converter class of
    `keras_resnest.hub`) for the timm repository `preset` of `model_name`.

    Args:
        cls: type. The class whose `from_preset` was called.
        preset: str. `"hf://<owner>/<name>[@<revision>]"`.
        model_name: str. The canonical model the repository holds.
        config: dict. Its `config.json` (the head's size is its "num_classes").
        load_weights: bool. Load the repository's weights (False: random). Defaults to True.
        **kwargs: the `from_preset` arguments, passed to the class (`output_stride`,
            `num_classes`, `activation`, ...).
    """
    from keras_resnest.models import create_model

    weights = preset if load_weights else None
    if issubclass(cls, Backbone):
        source = create_model(model_name, weights=weights, include_top=False)
        return copy_backbone_weights(source, cls.from_model_name(model_name, **kwargs))
    if issubclass(cls, Task):
        kwargs.setdefault("num_classes", config.get("num_classes", 1000))
        return build_classifier(model_name, weights=weights, cls=cls, **kwargs)
    size = MODEL_CONFIGS[model_name].default_size
    if issubclass(cls, ImageClassifierPreprocessor):
        kwargs.setdefault("image_converter", cls.image_converter_cls(image_size=(size, size)))
        return cls(**kwargs)
    if issubclass(cls, ImageConverter):
        return cls(image_size=(size, size), **kwargs)
    raise TypeError(f"{cls.__name__}.from_preset: timm repositories give a backbone, a "
                    f"classifier, a preprocessor or an image converter; got {preset!r}")
