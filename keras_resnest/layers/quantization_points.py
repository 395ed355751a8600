"""The steps of a ResNeSt block that quantization-aware training changes; plain in float blocks.

Why: the quantization-aware blocks (`qat_blocks`) are the float blocks (`ResNeStBottleneck`,
`SplitAttention`) with these methods overridden, so the block architecture is written once.
A float block builds each "conv -> BatchNorm (-> DropBlock) (-> ReLU)" step with `_conv_layers`
and runs it with `_conv_step`, and passes every other tensor a full-integer int8 model needs a
range for (an add or a multiply) through `_fake_quantize`. In the float blocks these are the
plain layers and the identity; QAT folds the BatchNorm into a fake-quantized conv and
fake-quantizes each named point.
"""
from keras import ops


class QuantizationPoints:
    """Mixin of the float blocks: the plain conv steps and identity quantization points."""

    def _conv_layers(self, conv, norm=None, relu=False):
        """(conv, norm) of one step; the norm is None where a QAT conv carries the folded BN."""
        return conv, norm

    def _conv_step(self, conv, norm, inputs, training, dropblock=None, relu=False):
        """conv -> norm (-> dropblock) (-> ReLU), with the layers `_conv_layers` returned."""
        x = conv(inputs)
        if norm is not None:
            x = norm(x, training=training)
        if dropblock is not None:
            x = dropblock(x, training=training)
        return ops.relu(x) if relu else x

    def _fake_quantize(self, point, x, training):
        """Identity; QAT blocks fake-quantize `x` with the range named `point`."""
        return x


def build_norm(norm, shape):
    """Builds a step's BatchNorm; None in QAT blocks, whose conv carries it folded."""
    if norm is not None:
        norm.build(shape)
