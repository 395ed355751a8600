"""The ResNeSt bottleneck block (official `Bottleneck` with radix >= 1, expansion 4).

Forward order, exactly as the official model:
conv1 -> bn1 -> (dropblock) -> relu -> [avd if avd_first] -> SplitAttention -> [avd otherwise]
-> conv3 -> bn3 -> (dropblock) -> (drop path) -> + shortcut -> relu.
"""
import keras
from keras import ops

from keras_resnest.layers.conv import Conv2D
from keras_resnest.layers.drop_block import DropBlock2D
from keras_resnest.layers.norm import batch_norm, resolve_synchronized
from keras_resnest.layers.quantization_points import QuantizationPoints, build_norm
from keras_resnest.layers.split_attention import SplitAttention
from keras_resnest.layers.stochastic_depth import StochasticDepth

EXPANSION = 4


def _pad1(x):
    """PyTorch-style symmetric 1-pixel zero padding (the avd pool has padding=1)."""
    return ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])


@keras.saving.register_keras_serializable(package="keras_resnest")
class ResNeStBottleneck(QuantizationPoints, keras.layers.Layer):
    """One ResNeSt bottleneck block; outputs `filters * 4` channels.

    Args:
        filters: the official `planes`.
        strides: spatial stride of the block (taken by the avd pool when `avd` is on).
        radix, cardinality, bottleneck_width: split-attention configuration;
            group width = int(filters * bottleneck_width / 64) * cardinality.
        avd: average-pool downsampling instead of a strided conv; active when
            `strides > 1 or is_first` (in dilated stages the first block gets a stride-1
            3x3 blur, exactly like the official model).
        avd_first: pool before (True, the "fast" models) or after the split-attention conv.
        is_first: first block of a stage that the official builder marks `is_first`.
        dilation_rate: dilation of the 3x3 conv.
        downsample: build the avg-down shortcut (avg pool when strided, 1x1 conv, BN).
        dropblock_rate, dropblock_size: DropBlock after bn1, bn0 (inside split attention), bn3.
        drop_path_rate: stochastic depth on the residual branch.
        zero_init_last_gamma: initialise bn3's gamma to zero ("last gamma" recipe).
        synchronized_batch_norm: bool or None. `synchronized` of every BatchNorm of the block
            (`keras_resnest.layers.norm.BatchNorm`; None: on under a multi-replica strategy).
            Not saved in the config. Defaults to None.

    Example:
    >>> import numpy as np
    >>> block = ResNeStBottleneck(16, strides=2, downsample=True)
    >>> block(np.zeros((1, 8, 8, 32), "float32")).shape
    (1, 4, 4, 64)
    """

    def __init__(self, filters, strides=1, radix=2, cardinality=1, bottleneck_width=64, avd=True,
                 avd_first=False, is_first=False, dilation_rate=1, downsample=False,
                 dropblock_rate=0.0, dropblock_size=3, drop_path_rate=0.0,
                 zero_init_last_gamma=False, synchronized_batch_norm=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides
        self.radix = radix
        self.cardinality = cardinality
        self.bottleneck_width = bottleneck_width
        self.avd = avd
        self.avd_first = avd_first
        self.is_first = is_first
        self.dilation_rate = dilation_rate
        self.downsample = downsample
        self.dropblock_rate = dropblock_rate
        self.dropblock_size = dropblock_size
        self.drop_path_rate = drop_path_rate
        self.zero_init_last_gamma = zero_init_last_gamma
        synchronized = resolve_synchronized(synchronized_batch_norm)

        group_width = int(filters * (bottleneck_width / 64.0)) * cardinality
        self.use_avd = avd and (strides > 1 or is_first)
        conv_strides = 1 if self.use_avd else strides

        def dropblock(name):
            if dropblock_rate > 0:
                return DropBlock2D(dropblock_rate, dropblock_size, name=name)
            return None

        self.conv1, self.bn1 = self._conv_layers(
            Conv2D(group_width, 1, use_bias=False, kernel_initializer="he_normal",
                                name="conv1"),
            batch_norm(name="bn1", synchronized=synchronized), relu=True)
        self.dropblock1 = dropblock("dropblock1")
        # Official avd pool: AvgPool2d(3, stride, padding=1) with count_include_pad=True, so
        # every window divides by 9: zero-pad explicitly, then a 'valid' pool.
        self.avd_layer = (keras.layers.AveragePooling2D(3, strides, padding="valid", name="avd")
                          if self.use_avd else None)
        self.conv2 = self._split_attention(
            group_width, 3, strides=conv_strides, dilation_rate=dilation_rate, radix=radix,
            cardinality=cardinality, dropblock_rate=dropblock_rate, dropblock_size=dropblock_size,
            synchronized_batch_norm=synchronized, name="conv2")
        self.conv3, self.bn3 = self._conv_layers(
            Conv2D(filters * EXPANSION, 1, use_bias=False,
                                kernel_initializer="he_normal", name="conv3"),
            batch_norm(name="bn3", gamma_initializer="zeros" if zero_init_last_gamma else "ones",
                       synchronized=synchronized))
        self.dropblock3 = dropblock("dropblock3")
        self.drop_path = (StochasticDepth(drop_path_rate, name="drop_path")
                          if drop_path_rate > 0 else None)
        if downsample:
            # Official avg_down shortcut: AvgPool2d(stride, stride, ceil_mode=True,
            # count_include_pad=False) when strided, which Keras 'same' pooling reproduces
            # exactly for even and odd sizes; a 1x1 stride-1 pool (identity) otherwise.
            self.downsample_pool = (keras.layers.AveragePooling2D(strides, strides, padding="same")
                                    if strides > 1 else None)
            self.downsample_conv, self.downsample_bn = self._conv_layers(
                Conv2D(filters * EXPANSION, 1, use_bias=False,
                                    kernel_initializer="he_normal", name="downsample_conv"),
                batch_norm(name="downsample_bn", synchronized=synchronized))

    def _split_attention(self, *args, **kwargs):
        """The block's split-attention conv (the QAT block makes its QAT version)."""
        return SplitAttention(*args, **kwargs)

    def build(self, input_shape):
        self.conv1.build(input_shape)
        shape = self.conv1.compute_output_shape(input_shape)
        build_norm(self.bn1, shape)
        if self.use_avd and self.avd_first:
            shape = self._avd_output_shape(shape)
        self.conv2.build(shape)
        shape = self.conv2.compute_output_shape(shape)
        if self.use_avd and not self.avd_first:
            shape = self._avd_output_shape(shape)
        self.conv3.build(shape)
        shape = self.conv3.compute_output_shape(shape)
        build_norm(self.bn3, shape)
        if self.downsample:
            self.downsample_conv.build(input_shape)
            build_norm(self.downsample_bn, self.downsample_conv.compute_output_shape(input_shape))

    def call(self, inputs, training=False):
        x = self._conv_step(self.conv1, self.bn1, inputs, training, self.dropblock1, relu=True)
        if self.use_avd and self.avd_first:
            x = self.avd_layer(_pad1(x))
        x = self.conv2(x, training=training)
        if self.use_avd and not self.avd_first:
            x = self.avd_layer(_pad1(x))
        x = self._conv_step(self.conv3, self.bn3, x, training, self.dropblock3)
        if self.drop_path is not None:
            x = self.drop_path(x, training=training)

        shortcut = inputs
        if self.downsample:
            if self.downsample_pool is not None:
                shortcut = self.downsample_pool(shortcut)
            shortcut = self._conv_step(self.downsample_conv, self.downsample_bn, shortcut, training)
        return self._fake_quantize("output", ops.relu(x + shortcut), training)

    def _avd_output_shape(self, shape):
        padded = tuple(None if s is None else s + 2 for s in shape[1:3])
        return self.avd_layer.compute_output_shape((shape[0],) + padded + (shape[3],))

    def compute_output_shape(self, input_shape):
        # Both the avd pool (3x3, padding 1) and the strided 3x3 conv (padding = dilation)
        # give ceil(size / strides).
        def out_size(size):
            return None if size is None else -(-size // self.strides)

        return (input_shape[0], out_size(input_shape[1]), out_size(input_shape[2]),
                self.filters * EXPANSION)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            strides=self.strides,
            radix=self.radix,
            cardinality=self.cardinality,
            bottleneck_width=self.bottleneck_width,
            avd=self.avd,
            avd_first=self.avd_first,
            is_first=self.is_first,
            dilation_rate=self.dilation_rate,
            downsample=self.downsample,
            dropblock_rate=self.dropblock_rate,
            dropblock_size=self.dropblock_size,
            drop_path_rate=self.drop_path_rate,
            zero_init_last_gamma=self.zero_init_last_gamma,
        )
        return config
