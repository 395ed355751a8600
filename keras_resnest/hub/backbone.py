"""`ResNeStBackbone`: the ResNeSt stem and stages as a keras-hub `FeaturePyramidBackbone`.

The layers are the ones `keras_resnest.create_model` builds (same names, so the porting rules
and `.weights.h5` files apply), without the ImageNet normalisation (keras-hub does it in the
image converter) and without the head.

`pyramid_outputs` holds the output of layer1..layer4 keyed by their true stride: `Pn` is 2**n
times smaller than the input. keras-hub's DeepLabV3 derives its upsampling factor from that
level, so a dilated backbone must not call a stride-8 map "P5". With `output_stride` 16 or 8
several stages share a stride; the key then names the deepest of them:

| output_stride | P2 | P3 | P4 | P5 |
|---|---|---|---|---|
| 32 | layer1 | layer2 | layer3 | layer4 |
| 16 | layer1 | layer2 | layer4 | - |
| 8 | layer1 | layer4 | - | - |
"""
import math

import keras
from keras_hub.models import FeaturePyramidBackbone

from keras_resnest.hub.loading import PresetNames
from keras_resnest.models.configs import MODEL_CONFIGS, ResNeStConfig, resolve_model_name
from keras_resnest.models.resnest import (
    STAGE_STRIDES_DILATIONS,
    resnest_features,
    validate_input_shape,
)

STEM_STRIDE = 4  # the stride-2 conv and the stride-2 max pool


def stage_strides(output_stride):
    """The stride of layer1..layer4 for an output stride of 32, 16 or 8."""
    if output_stride not in STAGE_STRIDES_DILATIONS:
        raise ValueError(f"output_stride must be 32, 16 or 8, got {output_stride!r}.")
    layer3, layer4 = STAGE_STRIDES_DILATIONS[output_stride]
    strides, stride = [], STEM_STRIDE
    for stage_stride in (1, 2, layer3[0], layer4[0]):
        stride *= stage_stride
        strides.append(stride)
    return strides


def pyramid_levels(output_stride):
    """`{"Pn": stage index}`: each level keyed by its true stride, the deepest stage wins."""
    return {f"P{int(math.log2(stride))}": index
            for index, stride in enumerate(stage_strides(output_stride))}


@keras.saving.register_keras_serializable(package="keras_resnest")
class ResNeStBackbone(PresetNames, FeaturePyramidBackbone):
    """ResNeSt feature extractor for keras-hub (channels last).

    Args:
        stackwise_num_blocks (list of int): bottleneck blocks in layer1..layer4, e.g. `[3, 4, 6,
            3]`.
        radix (int): the ResNeSt hyper-parameters, as in `keras_resnest.models.ResNeStConfig`.
        cardinality (int): as `radix`.
        bottleneck_width (int): as `radix`.
        stem_width (int): as `radix`.
        avd_first (bool): as `radix`.
        output_stride (int): 32, 16 or 8 (the official dilated modes, for dense prediction).
        drop_path_rate (float): stochastic depth (training only).
        dropblock_rate (float): DropBlock (training only).
        image_shape (tuple): input shape without the batch size, `(None, None, 3)` by default.
            Inputs are normalised images (the converter's job), not 0..255 pixels.
        dtype (str or keras.DTypePolicy or None): dtype policy of every layer (e.g.
            "mixed_float16"); the global one by default.

    `ResNeStBackbone.from_model_name("resnest50")` builds a registry model;
    `ResNeStBackbone.from_preset("resnest50_imagenet")` also loads its ImageNet weights.
    """

    def __init__(self, stackwise_num_blocks, radix=2, cardinality=1, bottleneck_width=64,
                 stem_width=32, avd_first=False, output_stride=32, drop_path_rate=0.0,
                 dropblock_rate=0.0, image_shape=(None, None, 3), data_format=None, dtype=None,
                 **kwargs):
        if data_format not in (None, "channels_last"):
            raise ValueError(f"ResNeStBackbone is channels_last only, got data_format="
                             f"{data_format!r}.")
        stackwise_num_blocks = [int(blocks) for blocks in stackwise_num_blocks]
        if len(stackwise_num_blocks) != 4 or min(stackwise_num_blocks) < 1:
            raise ValueError("stackwise_num_blocks must give 4 stages of >= 1 block each, got "
                             f"{stackwise_num_blocks}.")
        levels = pyramid_levels(output_stride)
        config = ResNeStConfig(tuple(stackwise_num_blocks), radix=radix, cardinality=cardinality,
                               bottleneck_width=bottleneck_width, stem_width=stem_width,
                               avd_first=avd_first)
        image_shape = validate_input_shape(image_shape)

        # The builder's layers take the global dtype policy: set it for the construction only.
        previous_policy = keras.config.dtype_policy()
        if dtype is not None:
            keras.config.set_dtype_policy(keras.dtype_policies.get(dtype))
        try:
            image_input = keras.Input(shape=image_shape, name="images")
            stages = resnest_features(image_input, config, output_stride=output_stride,
                                      dropblock_rate=dropblock_rate,
                                      drop_path_rate=drop_path_rate)
        finally:
            keras.config.set_dtype_policy(previous_policy)
        super().__init__(inputs=image_input, outputs=stages[-1], dtype=dtype, **kwargs)

        self.pyramid_outputs = {level: stages[index] for level, index in levels.items()}
        self.stackwise_num_blocks = stackwise_num_blocks
        self.radix = radix
        self.cardinality = cardinality
        self.bottleneck_width = bottleneck_width
        self.stem_width = stem_width
        self.avd_first = avd_first
        self.output_stride = output_stride
        self.drop_path_rate = drop_path_rate
        self.dropblock_rate = dropblock_rate
        self.image_shape = image_shape
        self.data_format = "channels_last"

    @classmethod
    def from_model_name(cls, model_name, **kwargs):
        """A randomly initialised backbone of a registry model ("resnest50", "resnest50d", ...)."""
        model_name = resolve_model_name(model_name)
        config = MODEL_CONFIGS[model_name]
        kwargs.setdefault("name", f"{model_name}_backbone")
        return cls(list(config.blocks), radix=config.radix, cardinality=config.cardinality,
                   bottleneck_width=config.bottleneck_width, stem_width=config.stem_width,
                   avd_first=config.avd_first, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update({
            "stackwise_num_blocks": self.stackwise_num_blocks,
            "radix": self.radix,
            "cardinality": self.cardinality,
            "bottleneck_width": self.bottleneck_width,
            "stem_width": self.stem_width,
            "avd_first": self.avd_first,
            "output_stride": self.output_stride,
            "drop_path_rate": self.drop_path_rate,
            "dropblock_rate": self.dropblock_rate,
            "image_shape": self.image_shape,
        })
        return config
