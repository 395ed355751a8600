"""Grouped 2D convolution computed as one convolution per group.

Why not `keras.layers.Conv2D(groups=g)`: on the TensorFlow backend Keras 3 wraps every grouped
convolution in an XLA-compiled function (`jit_compile=True`), which lands in exported SavedModels
and which TF-Serving CPU builds do not run by default. On CPU (TF 2.21, tf.function), one conv
per group plus concat also ran faster than both TF's native grouped conv and the XLA version.
Split convolutions are also plain
CONV_2D/SPLIT/CONCATENATION ops for TFLite. So we split, on TensorFlow, and under JAX, where
XLA:CPU's native grouped convolution is slow too. Under PyTorch the group kernels are
concatenated and run as one native grouped convolution
(`backend_paths.grouped_conv_formulation` is the switch).

Each group has its own kernel variable, (kh, kw, in_channels / groups, filters / groups), so
no kernel is sliced (copied) at run time; groups are contiguous along the input and output
channels exactly as in PyTorch (group g reads input block g and writes output block g).
"""
import keras
from keras import ops

from keras_resnest.layers.backend_paths import (
    grouped_conv_formulation,
    torch_fast_paths,
    torch_nhwc,
)


def pytorch_style_padding(inputs, padding, kernel_size, strides, dilation_rate):
    """(inputs, Keras padding) giving PyTorch's symmetric zero padding of `padding` pixels.

    For stride 1, 'same' pads (k-1)*d/2 on both sides, which equals PyTorch's symmetric padding
    when padding == dilation * (k - 1) / 2, without a PAD op. Stride 2 'same' pads
    asymmetrically, so other cases pad explicitly and convolve 'valid'.
    """
    if strides == 1 and 2 * padding == dilation_rate * (kernel_size - 1):
        return inputs, "same"
    if padding:
        inputs = ops.pad(inputs, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    return inputs, "valid"


@keras.saving.register_keras_serializable(package="keras_resnest")
class GroupedConv2D(keras.layers.Layer):
    """2D convolution with `groups` contiguous channel groups and PyTorch-style padding.

    Args:
        filters: output channels (divisible by `groups`).
        kernel_size: int, square kernel.
        strides: int.
        padding: int, zeros added on every side (PyTorch `padding=`).
        dilation_rate: int.
        groups: number of channel groups (input and output channels divisible by it).
        use_bias: whether to add a bias.

    Example:
    >>> import numpy as np
    >>> conv = GroupedConv2D(8, 3, padding=1, groups=2)
    >>> conv(np.zeros((1, 5, 5, 4), "float32")).shape
    (1, 5, 5, 8)
    """

    def __init__(self, filters, kernel_size, strides=1, padding=0, dilation_rate=1, groups=1,
                 use_bias=False, kernel_initializer="he_normal", bias_initializer="zeros",
                 **kwargs):
        super().__init__(**kwargs)
        if filters % groups:
            raise ValueError(f"filters={filters} must be divisible by groups={groups}.")
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.dilation_rate = dilation_rate
        self.groups = groups
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None or in_channels % self.groups:
            raise ValueError(
                f"{self.name}: input channels ({in_channels}) must be known and divisible by "
                f"groups={self.groups}."
            )
        shape = (self.kernel_size, self.kernel_size, in_channels // self.groups,
                 self.filters // self.groups)
        self.group_kernels = [
            self.add_weight(name="kernel" if self.groups == 1 else f"kernel_group{g}",
                            shape=shape, initializer=self.kernel_initializer)
            for g in range(self.groups)
        ]
        if torch_fast_paths():
            # The group kernels one after another in torch's memory order: one grouped
            # convolution reads them without a copy (`torch_nhwc.torch_kernel`).
            from keras_resnest.layers import torch_nhwc

            torch_nhwc.lay_out_kernels(self.group_kernels)
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,),
                                        initializer=self.bias_initializer)

    def _padded(self, inputs):
        return pytorch_style_padding(inputs, self.padding, self.kernel_size, self.strides,
                                     self.dilation_rate)

    def group_outputs(self, inputs):
        """The convolution of each group, before concatenation (and without the bias)."""
        inputs, conv_padding = self._padded(inputs)
        group_inputs = ops.split(inputs, self.groups, axis=-1) if self.groups > 1 else [inputs]
        return [
            ops.conv(x, kernel, strides=self.strides, padding=conv_padding,
                     dilation_rate=self.dilation_rate)
            for x, kernel in zip(group_inputs, self.group_kernels)
        ]

    def call(self, inputs):
        if torch_fast_paths() and grouped_conv_formulation() == "native":
            outputs = self._torch_conv(inputs)
        elif self.groups > 1 and grouped_conv_formulation() == "native":
            # One native grouped convolution (the groups follow from the kernel's input depth).
            padded, conv_padding = self._padded(inputs)
            outputs = ops.conv(padded, ops.concatenate(self.group_kernels, axis=-1),
                               strides=self.strides, padding=conv_padding,
                               dilation_rate=self.dilation_rate)
        else:
            group_outputs = self.group_outputs(inputs)
            outputs = (ops.concatenate(group_outputs, axis=-1) if self.groups > 1
                       else group_outputs[0])
        if self.use_bias:
            outputs = outputs + self.bias
        return outputs

    def _torch_conv(self, inputs):
        # One native grouped convolution without Keras' layout copies (`torch_nhwc`).
        kernels = [ops.convert_to_tensor(kernel) for kernel in self.group_kernels]
        return torch_nhwc.conv2d(inputs, kernels, (self.strides,) * 2, (self.padding,) * 2,
                                 (self.dilation_rate,) * 2, self.groups)

    def compute_output_shape(self, input_shape):
        def out_size(size):
            if size is None:
                return None
            effective = self.dilation_rate * (self.kernel_size - 1) + 1
            return (size + 2 * self.padding - effective) // self.strides + 1

        return (input_shape[0], out_size(input_shape[1]), out_size(input_shape[2]), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            groups=self.groups,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config
