"""One builder for every ResNeSt model, driven by `configs.MODEL_CONFIGS`.

Layer names follow the PyTorch module names with "_" for "." ("conv1_0", "bn1", "layer3_5", "fc"
for the official "conv1.0", "bn1", "layer3.5", "fc"; `keras_resnest.porting.keras_layer_name`),
so that weight porting and feature extraction (`model.get_layer("layer3_5").output`) read
naturally on every Keras backend (PyTorch refuses dots in parameter names).
"""
import os

import keras

from keras_resnest.layers import ResNeStBottleneck
from keras_resnest.layers.conv import Conv2D
from keras_resnest.layers.norm import batch_norm
from keras_resnest.models.configs import MODEL_CONFIGS, resolve_model_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_INPUT_SIZE = 32
STAGE_PLANES = (64, 128, 256, 512)
# Official `_make_layer`: the first block of a dilation-2 stage runs undilated and the first
# block of a dilation-4 stage uses dilation 2; the other blocks use the stage's dilation.
FIRST_BLOCK_DILATION = {1: 1, 2: 1, 4: 2}

# output stride -> (stride, dilation) of layer3 and layer4: the official `dilation=2` (16) and
# `dilated=True` (8) modes.
STAGE_STRIDES_DILATIONS = {
    32: ((2, 1), (2, 1)),
    16: ((2, 1), (1, 2)),
    8: ((1, 2), (1, 4)),
}


def list_models():
    """Canonical names accepted by `create_model`, e.g. `"resnest50"` (timm aliases such as
    `"resnest50d"` are accepted too; see `configs.ALIASES`)."""
    return sorted(MODEL_CONFIGS)


def validate_input_shape(input_shape):
    if input_shape is None:
        return (None, None, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            f"input_shape must be (height, width, 3) (channels last), got {input_shape}."
        )
    if input_shape[-1] != 3:
        raise ValueError(
            f"input_shape must have 3 (RGB) channels, got {input_shape[-1]} in {input_shape}."
        )
    for size in input_shape[:2]:
        if size is not None and size < MIN_INPUT_SIZE:
            raise ValueError(
                f"input_shape {input_shape} is too small: height and width must be >= "
                f"{MIN_INPUT_SIZE}."
            )
    return input_shape


def _validate_weights_argument(weights, model_name):
    if isinstance(weights, str) and weights.startswith("hf://"):
        from keras_resnest.weights.hf_hub import check_repo_model

        # Reads the repository's config.json: a wrong name, repository or architecture stops
        # here, before the model is built.
        check_repo_model(weights, model_name)
        return
    if weights is not None and weights != "imagenet" and not os.path.exists(str(weights)):
        raise ValueError(
            "weights must be None (random initialisation), 'imagenet' (pre-training on "
            "ImageNet), 'hf://<owner>/<name>' (a timm repository on the Hugging Face Hub) or "
            f"the path to a weights file; got {weights!r}, which does not exist."
        )


def _stem(x, stem_width, synchronized_batch_norm=None):
    # Deep stem: three 3x3 convs; the first is the only stride-2 conv of the network. PyTorch
    # pads 1 on every side; TF 'same' pads asymmetrically for even sizes, so pad explicitly.
    x = keras.layers.ZeroPadding2D(1, name="conv1_0_pad")(x)
    x = Conv2D(stem_width, 3, 2, use_bias=False, kernel_initializer="he_normal",
                            name="conv1_0")(x)
    x = batch_norm(name="conv1_1", synchronized=synchronized_batch_norm)(x)
    x = keras.layers.ReLU(name="conv1_2")(x)
    x = Conv2D(stem_width, 3, padding="same", use_bias=False,
                            kernel_initializer="he_normal", name="conv1_3")(x)
    x = batch_norm(name="conv1_4", synchronized=synchronized_batch_norm)(x)
    x = keras.layers.ReLU(name="conv1_5")(x)
    x = Conv2D(stem_width * 2, 3, padding="same", use_bias=False,
                            kernel_initializer="he_normal", name="conv1_6")(x)
    x = batch_norm(name="bn1", synchronized=synchronized_batch_norm)(x)
    x = keras.layers.ReLU(name="relu")(x)
    # MaxPool2d(3, 2, padding=1): inputs are >= 0 after the ReLU, so zero padding is as good
    # as PyTorch's implicit -inf padding.
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    return keras.layers.MaxPooling2D(3, 2, name="maxpool")(x)


def _stages(x, config, output_stride, dropblock_rate, drop_path_rate,
            synchronized_batch_norm=None):
    """layer1..layer4; returns the output of each stage."""
    if output_stride not in STAGE_STRIDES_DILATIONS:
        raise ValueError(f"output_stride must be 32, 16 or 8, got {output_stride!r}.")
    layer3, layer4 = STAGE_STRIDES_DILATIONS[output_stride]
    stage_settings = ((1, 1), (2, 1), layer3, layer4)
    total_blocks = sum(config.blocks)
    block_index = 0
    stage_outputs = []
    for stage, (planes, blocks, (stride, dilation)) in enumerate(
            zip(STAGE_PLANES, config.blocks, stage_settings), start=1):
        # Official: dropblock only in layer3 and layer4; layer1 is not `is_first`.
        stage_dropblock = dropblock_rate if stage >= 3 else 0.0
        for index in range(blocks):
            first = index == 0
            x = ResNeStBottleneck(
                planes,
                strides=stride if first else 1,
                radix=config.radix,
                cardinality=config.cardinality,
                bottleneck_width=config.bottleneck_width,
                avd=True,
                avd_first=config.avd_first,
                is_first=first and stage > 1,
                dilation_rate=FIRST_BLOCK_DILATION[dilation] if first else dilation,
                downsample=first,
                dropblock_rate=stage_dropblock,
                # Linearly increasing stochastic depth over all blocks.
                drop_path_rate=drop_path_rate * block_index / max(total_blocks - 1, 1),
                synchronized_batch_norm=synchronized_batch_norm,
                name=f"layer{stage}_{index}",
            )(x)
            block_index += 1
        stage_outputs.append(x)
    return stage_outputs


def resnest_features(x, config, *, output_stride=32, dropblock_rate=0.0, drop_path_rate=0.0,
                     synchronized_batch_norm=None):
    """The stem and the four stages of `config` applied to the (normalised) image tensor `x`.

    Returns the outputs of layer1..layer4; the keras-hub backbone
    (`keras_resnest.hub.ResNeStBackbone`) builds on this too. `synchronized_batch_norm` is
    `create_model`'s.
    """
    x = _stem(x, config.stem_width, synchronized_batch_norm)
    return _stages(x, config, output_stride, dropblock_rate, drop_path_rate,
                   synchronized_batch_norm)


def create_model(
    model_name,
    *,
    include_top=True,
    weights="imagenet",
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name=None,
    include_preprocessing=True,
    output_stride=32,
    drop_rate=0.0,
    drop_path_rate=0.0,
    dropblock_rate=0.0,
    synchronized_batch_norm=None,
):
    """Builds a ResNeSt model by name (see `list_models()`), keras.applications style.

    Args:
        model_name (str): e.g. "resnest50", "resnest50_fast_1s4x24d", "resnest14d", or a timm
            alias ("resnest50d"); see `list_models()` and `configs.ALIASES`.
        include_top (bool): include the global pooling + `classes`-way Dense head.
        weights (str or None): None, "imagenet" (the official weights, downloaded and
            converted once), `"hf://<owner>/<name>[@<revision>]"` (a timm repository on the
            Hugging Face Hub, e.g. "hf://timm/resnest50d.in1k"; `keras_resnest.weights.hf_hub`),
            or a path: a PyTorch `.pth`/`.pt`, `.safetensors` or `.npz` state dict (converted
            on load, no torch needed) or a Keras `.weights.h5`/`.keras` file. See
            `keras_resnest.weights`.
        input_tensor (keras.KerasTensor or None): optional Keras tensor to use as the image input.
        input_shape (tuple or None): (height, width, 3); default (None, None, 3). Any size >= 32.
        pooling (str or None): with include_top=False, None (4D feature map), "avg" or "max".
        classes (int): size of the head. With other than 1000, pretrained weights load into the
            backbone and the head keeps its initialisation (as with include_top=False).
        classifier_activation (str or None): activation of the head ("softmax", None for logits).
        name (str or None): model name (default `model_name`).
        include_preprocessing (bool): the model takes RGB in 0..255 and normalises with the ImageNet
            mean/std inside. With False, feed `keras_resnest.preprocess_input(images)`.
        output_stride (int): 32, 16 or 8 (the official dilation modes, for dense prediction).
        drop_rate (float): dropout before the head (training only).
        drop_path_rate (float): stochastic depth, increasing linearly over the blocks.
        dropblock_rate (float): DropBlock rate in layer3 and layer4 (training only).
        synchronized_batch_norm (bool or None): Whether BatchNorm computes its training
            statistics over the global batch of all replicas (TensorFlow only), so that every
            replica keeps the same moving statistics; None turns it on when the model is built
            under a `tf.distribute` strategy with more than one replica (`strategy.scope()`),
            False keeps per-replica statistics. Not saved: a loaded model decides again.
            Defaults to None.

    Example:
    >>> import keras_resnest
    >>> model = keras_resnest.create_model("resnest14d", weights=None, input_shape=(64, 64, 3))
    >>> model.output_shape
    (None, 1000)
    """
    model_name = resolve_model_name(model_name)  # an alias builds (and is named) as its model
    config = MODEL_CONFIGS[model_name]
    _validate_weights_argument(weights, model_name)
    if pooling not in (None, "avg", "max"):
        raise ValueError(f'pooling must be None, "avg" or "max", got {pooling!r}.')
    for arg, value in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate),
                       ("dropblock_rate", dropblock_rate)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{arg} must be in [0, 1), got {value}.")

    if input_tensor is None:
        input_shape = validate_input_shape(input_shape)
        inputs = keras.Input(shape=input_shape, name="image")
        x = inputs
    else:
        if not keras.backend.is_keras_tensor(input_tensor):
            input_tensor = keras.Input(tensor=input_tensor, shape=input_shape, name="image")
        validate_input_shape(input_tensor.shape[1:])
        inputs = input_tensor
        x = input_tensor

    if include_preprocessing:
        x = keras.layers.Normalization(
            mean=[255.0 * m for m in IMAGENET_MEAN],
            variance=[(255.0 * s) ** 2 for s in IMAGENET_STD],
            name="preprocessing",
        )(x)
    x = resnest_features(x, config, output_stride=output_stride, dropblock_rate=dropblock_rate,
                         drop_path_rate=drop_path_rate,
                         synchronized_batch_norm=synchronized_batch_norm)[-1]

    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
        if drop_rate > 0:
            x = keras.layers.Dropout(drop_rate, name="drop")(x)
        # The classifier runs in float32 under mixed precision.
        x = keras.layers.Dense(classes, dtype="float32", name="fc")(x)
        if classifier_activation is not None:
            x = keras.layers.Activation(classifier_activation, dtype="float32",
                                        name="predictions")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="maxpool_global")(x)

    if input_tensor is not None:
        inputs = keras.utils.get_source_inputs(input_tensor)
    model = keras.Model(inputs, x, name=name or model_name)

    if weights is not None:
        from keras_resnest.weights import apply_weights

        apply_weights(model, weights, model_name=model_name,
                      build_imagenet_model=lambda: create_model(model_name, weights=None))
    return model


def _named_constructor(model_name):
    def constructor(*, include_top=True, weights="imagenet", input_tensor=None,
                    input_shape=None, pooling=None, classes=1000,
                    classifier_activation="softmax", name=None, **kwargs):
        return create_model(
            model_name, include_top=include_top, weights=weights, input_tensor=input_tensor,
            input_shape=input_shape, pooling=pooling, classes=classes,
            classifier_activation=classifier_activation, name=name, **kwargs)

    config = MODEL_CONFIGS[model_name]
    depth = 2 + 3 * sum(config.blocks)
    constructor.__name__ = f"ResNeSt{depth}"
    constructor.__doc__ = (
        f"ResNeSt-{depth} (`create_model({model_name!r}, ...)`); same arguments as "
        "`keras_resnest.create_model`.\n\n"
        f"    Example: `model = keras_resnest.ResNeSt{depth}(weights=None)`"
    )
    return constructor


ResNeSt14 = _named_constructor("resnest14d")
ResNeSt26 = _named_constructor("resnest26d")
ResNeSt50 = _named_constructor("resnest50")
ResNeSt101 = _named_constructor("resnest101")
ResNeSt200 = _named_constructor("resnest200")
ResNeSt269 = _named_constructor("resnest269")
