"""`quantize_aware(model)`: the quantization-aware (QAT) copy of a float ResNeSt classifier.

QAT exists for the int8 TFLite export (the converter reads the learned ranges, so no
calibration images are needed); training runs the copy for a few more epochs
(`keras-resnest train --qat-epochs N`), so it lives in the core that both use. The layers it
is built from are in `keras_resnest.layers.fake_quant` / `qat_blocks` so that
`keras_resnest.load_model` loads a QAT `.keras` file like any other.

A ResNeSt classifier is a chain at the top level (image -> preprocessing -> stem -> blocks ->
pooling -> fc -> softmax), so the copy is made by walking that chain: Conv2D + BatchNorm (+ ReLU)
become one `QatConv`, each bottleneck a `QatBottleneck`, the ImageNet normalisation a fixed
diagonal 1x1 `QatConv` (one int8 CONV_2D instead of float SUB/DIV), the pooling means and the
logits get activation quantizers; pads and max pooling keep their input's range. Dropout, being
training-only, is dropped.

Example:
    >>> import keras_resnest
    >>> model = keras_resnest.create_model("resnest14d", weights=None, input_shape=(32, 32, 3),
    ...                                    classes=10)
    >>> qat_model = quantize_aware(model)
    >>> qat_model.get_layer("fc").__class__.__name__, is_quantize_aware(qat_model)
    ('QatDense', True)
"""

import keras
import numpy as np

from keras_resnest.layers import ResNeStBottleneck
from keras_resnest.layers.fake_quant import DEFAULT_MOMENTUM, ActivationQuantizer, QatConv, QatDense
from keras_resnest.layers.qat_blocks import QatBottleneck, QatSplitAttention

QAT_CLASSES = (ActivationQuantizer, QatConv, QatDense, QatBottleneck, QatSplitAttention)
INPUT_RANGE = (0.0, 255.0)  # RGB 0..255: the uint8 input of the TFLite model, scale 1


def is_quantize_aware(model):
    """True if `model` contains QAT layers (its int8 export needs no calibration)."""
    return any(isinstance(layer, QAT_CLASSES) for layer in model.layers)


def is_quantize_aware_file(path):
    """True if `path` is a `.keras` file of a QAT model, read from its config without loading
    it (so `export --quantize int8` can drop its --calibration requirement before the build)."""
    import zipfile

    if path is None or not str(path).endswith(".keras"):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            config = archive.read("config.json").decode("utf-8")
    except (OSError, KeyError, zipfile.BadZipFile):
        return False  # loading the file reports what is wrong with it
    return any(
        f'"keras_resnest>{cls.__name__}"' in config for cls in QAT_CLASSES
    )  # registered names


def check_ranges_observed(model):
    """Raise ValueError if an activation range was never set by a training step."""
    unset = [
        v.path
        for v in model.non_trainable_variables
        if v.path.endswith("observed") and float(v.numpy()) == 0.0
    ]
    if unset:
        raise ValueError(
            f"{len(unset)} activation ranges of the QAT model were never observed (e.g. "
            f"{unset[0]}): train it for at least one step (--qat-epochs) before exporting it."
        )


def _chain(model):
    """The model's layers in order, checked to form one chain (what ResNeSt classifiers are)."""
    layers = model.layers
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "quantize_aware expects a ResNeSt classifier with one input and one output."
        )
    for previous, layer in zip(layers, layers[1:]):
        nodes = layer._inbound_nodes
        inbound = nodes[0].parent_nodes if len(nodes) == 1 else None
        if inbound is None or len(inbound) != 1 or inbound[0].operation is not previous:
            raise ValueError(
                f"quantize_aware expects a plain ResNeSt classifier (a chain of layers); layer "
                f"{layer.name!r} does not simply follow {previous.name!r}."
            )
    return layers


def _preprocessing_conv(layer, momentum):
    """The Normalization layer as a fixed diagonal 1x1 conv: x / std - mean / std."""
    mean = np.asarray(layer.mean, np.float32).reshape(-1)
    std = np.sqrt(np.asarray(layer.variance, np.float32).reshape(-1))
    channels = mean.size
    conv = QatConv(
        channels, 1, use_bias=True, batch_norm=False, momentum=momentum, fixed=True, name=layer.name
    )
    conv.build((None, None, None, channels))
    conv.group_kernels[0].assign(np.diag(1.0 / std).reshape(1, 1, channels, channels))
    conv.bias.assign(-mean / std)
    return conv


def quantize_aware(model, momentum=DEFAULT_MOMENTUM):
    """A QAT copy of a float ResNeSt classifier (weights copied; `model` is left unchanged).

    Args:
        model (keras.Model): a float32 classifier from `create_model(include_top=True)` or
            `keras-resnest train` (a chain ending in a Dense "fc", optionally a softmax).
        momentum (float): EMA momentum of the activation ranges.

    Raises:
        ValueError: `model` is already QAT, not float32, or not a plain ResNeSt classifier.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"quantize_aware expects a keras.Model, got {type(model).__name__}.")
    if is_quantize_aware(model):
        raise ValueError(f"model {model.name!r} is already quantization-aware.")
    mixed = [layer.name for layer in model.layers if layer.dtype_policy.compute_dtype != "float32"]
    if mixed:
        raise ValueError(
            f"quantize_aware needs a float32 model; layer {mixed[0]!r} computes in "
            f"{model.get_layer(mixed[0]).dtype_policy.compute_dtype}."
        )
    layers = _chain(model)
    inputs = keras.Input(shape=model.inputs[0].shape[1:], name=layers[0].name)
    x = ActivationQuantizer(momentum, fixed_range=INPUT_RANGE, name="input_quantizer")(inputs)
    index = 1
    while index < len(layers):
        layer = layers[index]
        following = layers[index + 1 : index + 3]
        if (
            isinstance(layer, keras.layers.Conv2D)
            and following
            and isinstance(following[0], keras.layers.BatchNormalization)
        ):
            relu = len(following) > 1 and isinstance(following[1], keras.layers.ReLU)
            x, used = _conv_bn(layer, following[0], relu, momentum, x), 2 + relu
        elif isinstance(layer, ResNeStBottleneck):
            block = QatBottleneck.from_float(layer, momentum)
            x, used = block(x), 1
            block.load_float(layer)
        elif isinstance(layer, keras.layers.Normalization):
            x, used = _preprocessing_conv(layer, momentum)(x), 1
        elif isinstance(layer, (keras.layers.ZeroPadding2D, keras.layers.MaxPooling2D)):
            x, used = layer.__class__.from_config(layer.get_config())(x), 1
        elif isinstance(layer, keras.layers.GlobalAveragePooling2D):
            pooled = layer.__class__.from_config(layer.get_config())(x)
            x, used = ActivationQuantizer(momentum, name=f"{layer.name}_quantizer")(pooled), 1
        elif isinstance(layer, keras.layers.Dropout):
            used = 1
        elif isinstance(layer, keras.layers.Dense):
            config = layer.get_config()
            config.pop("quantization_config", None)
            dense = QatDense(momentum=momentum, **config)
            x, used = dense(x), 1
            dense.kernel.assign(layer.kernel)
            if layer.use_bias:
                dense.bias.assign(layer.bias)
        elif isinstance(layer, keras.layers.Activation) and index == len(layers) - 1:
            x, used = layer.__class__.from_config(layer.get_config())(x), 1
        else:
            raise ValueError(
                f"quantize_aware does not support layer {layer.name!r} "
                f"({type(layer).__name__}) of model {model.name!r}."
            )
        index += used
    return keras.Model(inputs, x, name=f"{model.name}_qat")


def _conv_bn(conv, norm, relu, momentum, x):
    layer = QatConv.like(conv, norm, relu=relu, momentum=momentum)
    x = layer(x)
    layer.load_float(conv, norm)
    return x
