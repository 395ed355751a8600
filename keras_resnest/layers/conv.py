"""`keras.layers.Conv2D` that skips the layout copies of Keras' torch backend.

Same variables, config and arithmetic as `keras.layers.Conv2D`; on the PyTorch backend a
channels_last convolution whose padding torch can express calls `torch_nhwc.conv2d` (the module
says why), with the kernel stored in the memory order torch reads (`torch_nhwc.lay_out_kernels`).
Every other case, and every other backend, is Keras' own `convolution_op`.
"""
import keras

from keras_resnest.layers.backend_paths import torch_fast_paths, torch_nhwc


@keras.saving.register_keras_serializable(package="keras_resnest")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D`, with the PyTorch backend's convolution taken without copies.

    Args:
        *args, **kwargs: the arguments of `keras.layers.Conv2D`.
    """

    def build(self, input_shape):
        super().build(input_shape)
        kernel = getattr(self, "_kernel", None)
        if torch_fast_paths() and self.data_format == "channels_last" and kernel is not None:
            from keras_resnest.layers import torch_nhwc

            torch_nhwc.lay_out_kernels([kernel])

    def convolution_op(self, inputs, kernel):
        if torch_fast_paths() and self.data_format == "channels_last":
            padding = torch_nhwc.symmetric_padding(self.padding, self.kernel_size, self.strides,
                                                   self.dilation_rate)
            if padding is not None:
                return torch_nhwc.conv2d(inputs, [keras.ops.convert_to_tensor(kernel)],
                                         self.strides, padding, self.dilation_rate, self.groups)
        return super().convolution_op(inputs, kernel)
