"""Loading keras_resnest's keras-hub classes: our presets, timm's repositories, and
`PresetNames`, the `from_preset` every class of `keras_resnest.hub` has.

* A name of `keras_resnest.hub.presets.PRESETS` is written on first use as a keras-hub preset
  directory, `$KERAS_HOME/keras_resnest_presets/<preset>/` (`preset_directory`), from
  keras_resnest's ImageNet weights; keras-hub then reads it as any preset directory.
* `"hf://<owner>/<name>[@<revision>]"` of a timm repository (`config.json` with an
  "architecture", and `model.safetensors`) is built here: the backbone from the registry
  (`from_model_name`), the weights through `weights="hf://..."` (one conversion,
  `keras_resnest.weights.hf_hub`), and our preprocessor at the model's evaluation size. A
  repository written by keras-hub's `save_to_preset` is keras-hub's to load.
* After `register_with_keras_hub` (which `import keras_resnest.hub` calls), keras-hub's own base
  classes find the preset names too: `keras_hub.models.ImageClassifier.from_preset(
  "resnest50_imagenet")`. keras-hub resolves a registered name to its entry's "kaggle_handle"
  when it reads a file; our entries compute that handle on access: the local preset
  directory, written on first use.

This module reaches the classes through the class it is given (`cls.backbone_cls`,
`cls.preprocessor_cls`, `cls.image_converter_cls`), as keras-hub's tasks do, and imports none
of them: the classes import it (for `PresetNames`), so the imports run one way.
"""
import contextlib
import os
import shutil
import tempfile

from keras_hub.layers import ImageConverter
from keras_hub.models import Backbone, ImageClassifierPreprocessor, Task

from keras_resnest.hub.presets import PRESETS
from keras_resnest.models.configs import MODEL_CONFIGS
from keras_resnest.weights import hf_hub, pretrained

PRESETS_SUBDIR = "keras_resnest_presets"
# The last file keras-hub's saver writes: a directory holding it is complete.
COMPLETE_MARKER = "task.weights.h5"
# The classifier class our presets are written with (`register_with_keras_hub` sets it; its
# `backbone_cls` is the class keras-hub registers them for).
PRESET_CLASSES = {}


class LocalPreset(dict):
    """A keras-hub preset entry (`{"metadata": ...}`) whose "kaggle_handle", read by keras-hub's
    `get_file` for each file of a registered preset, is our local preset directory, written on
    first use (so registering downloads nothing, and `KERAS_HOME` is read when it is used)."""

    def __init__(self, name, entry):
        super().__init__(entry)
        self.name = name

    def __missing__(self, key):
        if key == "kaggle_handle":
            return preset_directory(self.name)
        raise KeyError(key)


def register_with_keras_hub(classifier_cls):
    """Registers `PRESETS` with keras-hub for `classifier_cls.backbone_cls`, as keras-hub
    registers its own (`keras_hub.src.utils.preset_utils.register_presets`, the one way it
    offers: 0.32 has no public API for it), and writes presets with `classifier_cls`.

    Args:
        classifier_cls (type): The `ResNeStImageClassifier` class.
    """
    from keras_hub.src.utils.preset_utils import register_presets

    PRESET_CLASSES["classifier"] = classifier_cls
    register_presets({name: LocalPreset(name, entry) for name, entry in PRESETS.items()},
                     classifier_cls.backbone_cls)


def presets_root():
    """`$KERAS_HOME/keras_resnest_presets` (beside the weights cache)."""
    return os.path.join(os.path.dirname(pretrained.cache_dir()), PRESETS_SUBDIR)


def resolve_preset(preset):
    """A name from `PRESETS` -> its local preset directory (written on first use); any other
    preset (a directory, `kaggle://`, `hf://`) is returned unchanged for keras-hub."""
    if isinstance(preset, str) and preset in PRESETS:
        return preset_directory(preset)
    return preset


def preset_directory(preset):
    """The keras-hub preset directory of one of `PRESETS`, written on first use.

    Args:
        preset (str): A name of `keras_resnest.hub.PRESETS`, e.g. "resnest50_imagenet".

    Returns:
        str: The directory, `$KERAS_HOME/keras_resnest_presets/<preset>/`.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(sorted(PRESETS))}")
    directory = os.path.join(presets_root(), preset)
    if not os.path.isfile(os.path.join(directory, COMPLETE_MARKER)):
        _write_preset(preset, directory)
    return directory


def copy_backbone_weights(source, backbone):
    """Copies the weights of a keras_resnest model into a `ResNeStBackbone` of its architecture
    (the layers have the same names)."""
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())
    return backbone


def default_preprocessor(cls, model_name):
    """`cls.preprocessor_cls` at the evaluation size of `model_name`."""
    size = MODEL_CONFIGS[model_name].default_size
    preprocessor_cls = cls.preprocessor_cls
    return preprocessor_cls(
        image_converter=preprocessor_cls.image_converter_cls(image_size=(size, size)))


def build_classifier(cls, model_name, weights="imagenet",
                     num_classes=pretrained.IMAGENET_CLASSES, **kwargs):
    """A classifier of class `cls` for `model_name`, holding `weights`.

    Args:
        cls (type): The classifier class, `ResNeStImageClassifier` or a subclass: its
            `backbone_cls` and `preprocessor_cls` are built.
        model_name (str): A canonical model name.
        weights (str or None): Any `weights=` of `create_model` ("imagenet", "hf://...", a
            file). Defaults to "imagenet".
        num_classes (int): The head's size; with another size than the checkpoint's the head
            keeps its initialisation. Defaults to 1000.
        **kwargs: passed to the classifier (e.g. `activation`, `preprocessor`).
    """
    from keras_resnest.models import create_model

    source = create_model(model_name, weights=weights, classes=num_classes,
                          classifier_activation=None)
    backbone = copy_backbone_weights(source, cls.backbone_cls.from_model_name(model_name))
    kwargs.setdefault("preprocessor", default_preprocessor(cls, model_name))
    classifier = cls(backbone, num_classes=num_classes, **kwargs)
    classifier.output_dense.set_weights(source.get_layer("fc").get_weights())
    return classifier


def _write_preset(preset, directory):
    classifier = build_classifier(PRESET_CLASSES["classifier"],
                                  PRESETS[preset]["metadata"]["model_name"])
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    # Written beside the final directory and renamed: a preset is complete or absent.
    partial = tempfile.mkdtemp(prefix=f".{preset}.partial-", dir=os.path.dirname(directory))
    try:
        classifier.save_to_preset(partial)
        if os.path.isdir(directory):  # an incomplete leftover, or another process was faster
            if os.path.isfile(os.path.join(directory, COMPLETE_MARKER)):
                return
            shutil.rmtree(directory)
        os.rename(partial, directory)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(partial)


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
        cls (type): The class whose `from_preset` was called.
        preset (str): `"hf://<owner>/<name>[@<revision>]"`.
        model_name (str): The canonical model the repository holds.
        config (dict): Its `config.json` (the head's size is its "num_classes").
        load_weights (bool): Load the repository's weights (False: random). Defaults to True.
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
        return build_classifier(cls, model_name, weights=weights, **kwargs)
    size = MODEL_CONFIGS[model_name].default_size
    if issubclass(cls, ImageClassifierPreprocessor):
        kwargs.setdefault("image_converter", cls.image_converter_cls(image_size=(size, size)))
        return cls(**kwargs)
    if issubclass(cls, ImageConverter):
        return cls(image_size=(size, size), **kwargs)
    raise TypeError(f"{cls.__name__}.from_preset: timm repositories give a backbone, a "
                    f"classifier, a preprocessor or an image converter; got {preset!r}")


class PresetNames:
    """Mixin, listed before the keras-hub base class, of every keras_resnest hub class: keras-hub's
    `from_preset` that also takes the names in `PRESETS` and timm's repositories."""

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """keras-hub's `from_preset`; `preset` may also be a name in `keras_resnest.hub.PRESETS`
        (its preset directory is written on first use) or a timm repository
        `"hf://timm/resnest50d.in1k"` (pinned with `@<revision>`)."""
        timm = timm_repo(preset)
        if timm is not None:
            return from_timm_repo(cls, preset, *timm, **kwargs)
        return super().from_preset(resolve_preset(preset), **kwargs)
