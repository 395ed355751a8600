"""The Split-Attention convolution of ResNeSt (official `SplAtConv2d`), in NHWC.

Channel layout, as in the official model: the grouped 3x3 conv has `cardinality * radix` groups
and output channel `r*C + k*(C/K) + i` belongs to radix split r and cardinal group k (radix-major).
fc2 is grouped by cardinality, so its output is cardinal-major `[k][r][i]`; the radix softmax
reshapes to (K, R, C/K) and swaps K and R so the weights line up with the radix-major splits.
Leaving that swap out is silently right for cardinality 1 and wrong for cardinality > 1.
"""
import keras
from keras import ops

from keras_resnest.layers.backend_paths import (
    grouped_conv_formulation,
    tensorflow_fast_paths,
)
from keras_resnest.layers.drop_block import DropBlock2D
from keras_resnest.layers.grouped_conv import GroupedConv2D
from keras_resnest.layers.norm import batch_norm, resolve_synchronized
from keras_resnest.layers.quantization_points import QuantizationPoints, build_norm

# Official rule: inter_channels = max(in_channels * radix // reduction_factor, 32).
MIN_INTER_CHANNELS = 32


def inter_channels(in_channels, radix, reduction_factor=4):
    return max(in_channels * radix // reduction_factor, MIN_INTER_CHANNELS)


# The split-attention pooling is one mean over height and width. Summing the H*W values of a
# channel in one chain rounds more than torch's adaptive_avg_pool2d (against float64), and a
# mean over the width then the height would match torch. It is not used: in a full-integer
# TFLite export the intermediate mean is requantized to int8 in every block, which about doubled
# resnest14d's int8 logit error against the float logits (tests/test_export_tflite.py), for
# about one float32 ulp at the logits.
# benchmarks/float64_report.py has the per-op figures.


@keras.saving.register_keras_serializable(package="keras_resnest")
class SplitAttention(QuantizationPoints, keras.layers.Layer):
    """Split-Attention conv: grouped conv -> BN -> ReLU -> attention over radix splits.

    Args:
        filters: output channels (the official `channels`; the conv itself makes
            `filters * radix`).
        kernel_size, strides, dilation_rate: of the grouped conv (padding = dilation, as in
            the official model).
        radix: number of splits; 1 gives a sigmoid (SE-style) gate, >= 2 a softmax over splits.
        cardinality: number of cardinal groups.
        reduction_factor: `inter_channels = max(in_channels * radix // reduction_factor, 32)`.
        dropblock_rate, dropblock_size: DropBlock after bn0 during training.
        synchronized_batch_norm: bool or None. `synchronized` of bn0 and bn1
            (`keras_resnest.layers.norm.BatchNorm`; None: on under a multi-replica strategy).
            Not saved in the config. Defaults to None.

    Example:
    >>> import numpy as np
    >>> layer = SplitAttention(64, radix=2, cardinality=2)
    >>> layer(np.zeros((1, 8, 8, 64), "float32")).shape
    (1, 8, 8, 64)
    """

    def __init__(self, filters, kernel_size=3, strides=1, dilation_rate=1, radix=2,
                 cardinality=1, reduction_factor=4, dropblock_rate=0.0, dropblock_size=3,
                 synchronized_batch_norm=None, **kwargs):
        super().__init__(**kwargs)
        if radix < 1 or cardinality < 1:
            raise ValueError(f"radix and cardinality must be >= 1, got {radix}, {cardinality}.")
        if filters % cardinality:
            raise ValueError(f"filters={filters} must be divisible by cardinality={cardinality}.")
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.dilation_rate = dilation_rate
        self.radix = radix
        self.cardinality = cardinality
        self.reduction_factor = reduction_factor
        self.dropblock_rate = dropblock_rate
        self.dropblock_size = dropblock_size
        # Decided here, in the strategy scope the layer is made in: bn1 is made in build().
        self._synchronized_batch_norm = resolve_synchronized(synchronized_batch_norm)

        self.conv, self.bn0 = self._conv_layers(
            GroupedConv2D(filters * radix, kernel_size, strides=strides,
                          padding=dilation_rate * (kernel_size // 2), dilation_rate=dilation_rate,
                          groups=cardinality * radix, name="conv"),
            batch_norm(name="bn0", synchronized=self._synchronized_batch_norm), relu=True)
        self.dropblock = (DropBlock2D(dropblock_rate, dropblock_size, name="dropblock")
                          if dropblock_rate > 0 else None)
        self.fc1 = None  # needs the input channel count: made in build()
        self.bn1 = None
        self.fc2, _ = self._conv_layers(
            GroupedConv2D(filters * radix, 1, groups=cardinality, use_bias=True,
                          kernel_initializer="glorot_uniform", name="fc2"))

    def build(self, input_shape):
        inter = inter_channels(input_shape[-1], self.radix, self.reduction_factor)
        if inter % self.cardinality:
            raise ValueError(f"inter channels {inter} must be divisible by cardinality "
                             f"{self.cardinality}.")
        self.fc1, self.bn1 = self._conv_layers(
            GroupedConv2D(inter, 1, groups=self.cardinality, use_bias=True,
                          kernel_initializer="glorot_uniform", name="fc1"),
            batch_norm(name="bn1", synchronized=self._synchronized_batch_norm), relu=True)
        self.conv.build(input_shape)
        conv_shape = self.conv.compute_output_shape(input_shape)
        build_norm(self.bn0, conv_shape)
        pooled = (input_shape[0], 1, 1, self.filters)
        self.fc1.build(pooled)
        build_norm(self.bn1, (input_shape[0], 1, 1, inter))
        self.fc2.build((input_shape[0], 1, 1, inter))

    def call(self, inputs, training=False):
        splits = self._radix_splits(inputs, training)
        gap = self._global_pool(self._sum(splits, "gap_sum", training), training)
        gap = self._conv_step(self.fc1, self.bn1, gap, training, relu=True)
        attention = self._radix_softmax(self._conv_step(self.fc2, None, gap, training))
        weights = ops.split(attention, self.radix, axis=-1) if self.radix > 1 else [attention]
        weighted = [self._fake_quantize(f"weighted{r}", weight * split, training)
                    for r, (weight, split) in enumerate(zip(weights, splits))]
        return self._sum(weighted, "out_sum", training)

    def _sum(self, tensors, point, training):
        """tensors[0] + tensors[1] + ..., each partial sum a quantization point."""
        total = tensors[0]
        for i, tensor in enumerate(tensors[1:]):
            total = self._fake_quantize(f"{point}{i}", total + tensor, training)
        return total

    def _global_pool(self, x, training):
        """The mean over height and width that feeds fc1 (a quantization point)."""
        return self._fake_quantize("gap", ops.mean(x, axis=(1, 2), keepdims=True), training)

    def _radix_splits(self, inputs, training):
        """conv -> bn0 -> (dropblock) -> relu, as one tensor per radix split."""
        if self._per_group_norm(inputs, training):
            return self._per_group_radix_splits(inputs, training)
        x = self._conv_step(self.conv, self.bn0, inputs, training, self.dropblock, relu=True)
        return ops.split(x, self.radix, axis=-1) if self.radix > 1 else [x]

    def _per_group_norm(self, inputs, training):
        """Whether bn0 runs as TF's fused op on each group's conv output (TensorFlow).

        Not with DropBlock in training, nor in QAT blocks (bn0 None: BN folded in the conv).
        """
        if not tensorflow_fast_paths() or grouped_conv_formulation() != "per_group" \
                or self.bn0 is None or (training and self.dropblock is not None):
            return False
        if training and self.bn0.trainable:
            return self.bn0.fuses_training(
                self.conv.compute_output_shape(inputs.shape), inputs.dtype, training)
        return self.bn0.can_fuse(inputs, training)

    def _per_group_radix_splits(self, inputs, training):
        # Each group's conv output is normalised on its own (BN statistics are per channel, so
        # this is the same BN), then ReLU: TensorFlow fuses conv + BN + ReLU per group in
        # inference, and no concat/split copies the feature map forwards or backwards.
        group_outputs = self.conv.group_outputs(inputs)
        width = group_outputs[0].shape[-1]
        bounds = [(g * width, (g + 1) * width) for g in range(len(group_outputs))]
        if training and self.bn0.trainable:
            normalised = [self.bn0.fused_training(y, *bound)
                          for y, bound in zip(group_outputs, bounds)]
            self.bn0.update_moving_statistics(
                ops.concatenate([mean for _, mean, _ in normalised], axis=0),
                ops.concatenate([variance for _, _, variance in normalised], axis=0))
            groups = [ops.relu(y) for y, _, _ in normalised]
        else:
            groups = [ops.relu(self.bn0.fused_inference(y, *bound))
                      for y, bound in zip(group_outputs, bounds)]
        k = self.cardinality  # group g = r * K + k belongs to radix split r
        return [groups[r * k] if k == 1 else ops.concatenate(groups[r * k:(r + 1) * k], -1)
                for r in range(self.radix)]

    def _radix_softmax(self, logits):
        # Computed in float32 under mixed precision: the softmax/sigmoid is the numerically
        # delicate part, and it is tiny (one vector per image).
        dtype = logits.dtype
        logits = ops.cast(logits, "float32")
        if self.radix == 1:
            return ops.cast(ops.sigmoid(logits), dtype)
        per_group = self.filters // self.cardinality
        logits = ops.reshape(logits, (-1, self.cardinality, self.radix, per_group))
        logits = ops.transpose(logits, (0, 2, 1, 3))  # cardinal-major -> radix-major
        weights = ops.softmax(logits, axis=1)
        weights = ops.reshape(weights, (-1, 1, 1, self.radix * self.filters))
        return ops.cast(weights, dtype)

    def compute_output_shape(self, input_shape):
        conv_shape = self.conv.compute_output_shape(input_shape)
        return conv_shape[:3] + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            dilation_rate=self.dilation_rate,
            radix=self.radix,
            cardinality=self.cardinality,
            reduction_factor=self.reduction_factor,
            dropblock_rate=self.dropblock_rate,
            dropblock_size=self.dropblock_size,
        )
        return config
