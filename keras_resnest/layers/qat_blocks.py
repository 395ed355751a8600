"""Quantization-aware versions of the ResNeSt blocks (Split-Attention and Bottleneck).

Why subclasses of the float blocks: a full-integer TFLite model needs an int8 range for every
op output the converter cannot derive (conv, add, mul, mean); ops that keep their input's scale
(pad, pools, split, concat, reshape, transpose, max) need none and softmax has a fixed one.
The float blocks build and run their "conv -> BatchNorm (-> ReLU)" steps and mark those tensors
through `QuantizationPoints` methods; `QatPoints` overrides them: each step becomes one `QatConv`
(BatchNorm folded, weights fake-quantized, output quantized) and each point gets an
`ActivationQuantizer`. So the forward pass is the float blocks' own. DropBlock and stochastic
depth are training regularisers of the float phase and are off.

Both take the float layer's config (`from_float`) and its weights (`load_float`); the variables
keep the float layers' names (conv1, conv2/conv, ...).
"""
import keras
from keras import ops

from keras_resnest.layers.bottleneck import ResNeStBottleneck
from keras_resnest.layers.fake_quant import DEFAULT_MOMENTUM, ActivationQuantizer, QatConv
from keras_resnest.layers.split_attention import SplitAttention

# Float-only arguments: accepted (a float block's config passes them) and left at "off".
FLOAT_ONLY = ("dropblock_rate", "dropblock_size", "drop_path_rate", "zero_init_last_gamma")


class QatPoints:
    """`QuantizationPoints` for QAT blocks: folded fake-quantized convs, quantized points.

    A subclass sets `self.momentum` before the float block's `__init__` (which makes the convs)
    and names its points with `_make_quantizers`.
    """

    def _conv_layers(self, conv, norm=None, relu=False):
        return QatConv.like(conv, norm, relu=relu, momentum=self.momentum), None

    def _conv_step(self, conv, norm, inputs, training, dropblock=None, relu=False):
        return conv(inputs, training=training)  # BatchNorm and ReLU are inside the QatConv

    def _fake_quantize(self, point, x, training):
        return self.quantizers[point](x, training=training)

    def _make_quantizers(self, points):
        self.quantizers = {point: ActivationQuantizer(self.momentum, name=f"{point}_quantizer")
                           for point in points}

    def _build_quantizers(self):
        for quantizer in self.quantizers.values():
            quantizer.build(None)

    @classmethod
    def from_float(cls, layer, momentum=DEFAULT_MOMENTUM):
        """A QAT block with the configuration of the float `layer` (weights: `load_float`)."""
        config = layer.get_config()
        config.pop("trainable", None)
        config.pop("dtype", None)
        return cls(momentum=momentum, **config)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum)
        return config


def _float_only_dropped(kwargs):
    return {key: value for key, value in kwargs.items() if key not in FLOAT_ONLY}


@keras.saving.register_keras_serializable(package="keras_resnest")
class QatSplitAttention(QatPoints, SplitAttention):
    """`SplitAttention` with folded BN and fake-quantized tensors (same arguments, no dropblock)."""

    def __init__(self, *args, momentum=DEFAULT_MOMENTUM, **kwargs):
        self.momentum = momentum
        super().__init__(*args, **_float_only_dropped(kwargs))
        sums = range(self.radix - 1)
        self._make_quantizers([*(f"gap_sum{i}" for i in sums), "gap",
                               *(f"weighted{r}" for r in range(self.radix)),
                               *(f"out_sum{i}" for i in sums)])

    def build(self, input_shape):
        super().build(input_shape)
        self._build_quantizers()

    def _global_pool(self, x, training):
        pooled = ops.mean(x, axis=(1, 2), keepdims=True)
        if x.shape[1] == 1 and x.shape[2] == 1:
            # A mean over one pixel (layer4 of a 32 px model): the converter drops it, and a
            # second range on the same values breaks the split of a grouped fc1 ("'tfl.split'
            # op quantization parameters violate the same scale constraint"). Keep the input's
            # range; the quantizer still observes, so that every range is set.
            if training:
                self.quantizers["gap"].observe(pooled)
            return pooled
        return self._fake_quantize("gap", pooled, training)

    def load_float(self, layer):
        self.conv.load_float(layer.conv, layer.bn0)
        self.fc1.load_float(layer.fc1, layer.bn1)
        self.fc2.load_float(layer.fc2)


@keras.saving.register_keras_serializable(package="keras_resnest")
class QatBottleneck(QatPoints, ResNeStBottleneck):
    """`ResNeStBottleneck` with folded BN and fake-quantized tensors.

    Takes the float block's arguments; the float-only ones (dropblock, drop path, last-gamma
    initialisation) are accepted and left off, so `from_float` can pass them through.
    """

    def __init__(self, *args, momentum=DEFAULT_MOMENTUM, **kwargs):
        self.momentum = momentum
        super().__init__(*args, **_float_only_dropped(kwargs))
        self._make_quantizers(["output"])

    def _split_attention(self, *args, **kwargs):
        return QatSplitAttention(*args, momentum=self.momentum, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_quantizers()

    def load_float(self, layer):
        self.conv1.load_float(layer.conv1, layer.bn1)
        self.conv2.load_float(layer.conv2)
        self.conv3.load_float(layer.conv3, layer.bn3)
        if self.downsample:
            self.downsample_conv.load_float(layer.downsample_conv, layer.downsample_bn)
