"""Quantization-aware training (QAT) building blocks: fake-quantized activations and convs.

Why these layers: TFLite's converter turns `FakeQuantWithMinMaxVars(PerChannel)` ops into a
full-integer int8 model using the ranges they carry, so a model whose every tensor is
fake-quantized converts with no calibration images, and training through the fake quantization
(straight-through gradients) teaches the weights to live with int8 rounding. Keras 3 has the op
(`keras.quantizers.fake_quant_with_min_max_vars`, which emits exactly the TF ops on the TF
backend) but no QAT layers, and tfmot does not take Keras 3 models (docs/export.md,
"Quantization-aware training"), hence these.

* `ActivationQuantizer`: per-tensor int8 range, the exponential moving average of the batch
  min/max during training (tfmot's MovingAverageQuantizer); the first training batch sets it.
* `QatConv`: a (grouped) convolution with its BatchNorm folded in the way the converter
  expects: `kernel * gamma / sqrt(var + eps)`, bias `beta - mean * gamma / sqrt(var + eps)`,
  with the BN statistics frozen (the usual QAT fine-tuning choice: a batch of 32 gives noisy
  statistics and the converter folds moving statistics anyway); the folded kernel is
  fake-quantized per output channel, symmetric, narrow range (-127..127), as TFLite int8
  convolutions require.
* `QatDense`: the classifier layer, per-tensor weights (see the class); still a
  `keras.layers.Dense`, so everything that looks for the Dense "fc" layer (training loss,
  export) finds it.
"""

import keras
from keras import ops

from keras_resnest.layers.grouped_conv import pytorch_style_padding
from keras_resnest.layers.norm import TORCH_BN_EPSILON

NUM_BITS = 8
DEFAULT_MOMENTUM = 0.99


def fake_quant_weights(kernel, per_channel=True):
    """Symmetric int8 fake quantization (-127..127), range +-max|w| per output channel (last
    axis) or per tensor."""
    reduce_axes = tuple(range(len(kernel.shape) - 1)) if per_channel else None
    bound = ops.maximum(ops.max(ops.abs(kernel), axis=reduce_axes), 1e-8)
    return keras.quantizers.fake_quant_with_min_max_vars(
        kernel,
        -bound,
        bound,
        num_bits=NUM_BITS,
        narrow_range=True,
        axis=-1 if per_channel else None,
    )


@keras.saving.register_keras_serializable(package="keras_resnest")
class ActivationQuantizer(keras.layers.Layer):
    """Per-tensor int8 fake quantization with moving-average (EMA) ranges.

    Args:
        momentum: EMA weight of the old range (tfmot uses 0.999 for long runs; 0.99 adapts
            within a short fine-tuning).
        fixed_range: (min, max) that never changes, e.g. (0, 255) for the RGB input.

    `observed` is 0 until a training call has set the range: a model exported before that would
    quantize everything to zero, so `qat.check_ranges_observed` refuses it. The range variables
    average across replicas (aggregation "mean") so that MirroredStrategy keeps one range.
    """

    def __init__(self, momentum=DEFAULT_MOMENTUM, fixed_range=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        if fixed_range is not None and not fixed_range[0] <= 0.0 < fixed_range[1]:
            raise ValueError(f"fixed_range must be (min <= 0, max > 0), got {fixed_range}.")
        self.momentum = momentum
        self.fixed_range = None if fixed_range is None else tuple(float(v) for v in fixed_range)

    def build(self, input_shape):
        low, high = self.fixed_range or (0.0, 0.0)
        common = dict(shape=(), trainable=False, aggregation="mean", autocast=False)
        self.range_min = self.add_weight(
            name="range_min", initializer=keras.initializers.Constant(low), **common
        )
        self.range_max = self.add_weight(
            name="range_max", initializer=keras.initializers.Constant(high), **common
        )
        self.observed = self.add_weight(
            name="observed",
            initializer=keras.initializers.Constant(1.0 if self.fixed_range else 0.0),
            **common,
        )

    def call(self, inputs, training=False):
        if training and self.fixed_range is None:
            self.observe(inputs)
        return self.fake_quantize(inputs)

    def observe(self, inputs):
        """Moves the range towards this batch's min/max (min <= 0 <= max, as int8 needs zero)."""
        batch_min = ops.minimum(ops.min(inputs), 0.0)
        batch_max = ops.maximum(ops.max(inputs), 0.0)
        first = ops.equal(self.observed, 0.0)
        m = self.momentum
        self.range_min.assign(ops.where(first, batch_min, m * self.range_min + (1 - m) * batch_min))
        self.range_max.assign(ops.where(first, batch_max, m * self.range_max + (1 - m) * batch_max))
        self.observed.assign(1.0)

    def fake_quantize(self, inputs):
        return keras.quantizers.fake_quant_with_min_max_vars(
            inputs, self.range_min, self.range_max, num_bits=NUM_BITS
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            momentum=self.momentum,
            fixed_range=None if self.fixed_range is None else list(self.fixed_range),
        )
        return config


@keras.saving.register_keras_serializable(package="keras_resnest")
class QatConv(keras.layers.Layer):
    """Convolution (+ folded frozen BatchNorm) (+ ReLU) with fake-quantized weights and output.

    Args:
        filters, kernel_size, strides, dilation_rate, groups: as `GroupedConv2D`.
        padding: "same"/"valid" (Keras) or an int (PyTorch-style zeros on every side).
        use_bias: the conv's own bias (folded into the BN shift when there is a BN).
        batch_norm: fold a frozen BatchNorm (variables gamma, beta, moving_mean,
            moving_variance, as the float layer's).
        relu: apply ReLU before the output quantizer (the converter fuses it into the conv).
        quantize_output: fake-quantize the output (False when the caller quantizes it later).
        fixed: the kernel and bias are constants, never trained (the ImageNet normalisation);
            non-trainable variables, so that unfreezing layers does not make them trainable.

    Groups are separate convolutions (as in `GroupedConv2D` on TensorFlow), each quantized with
    the one shared output range, so the concatenation needs no requantization.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        dilation_rate=1,
        groups=1,
        use_bias=False,
        batch_norm=True,
        relu=False,
        quantize_output=True,
        epsilon=TORCH_BN_EPSILON,
        momentum=DEFAULT_MOMENTUM,
        fixed=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.fixed = fixed
        if filters % groups:
            raise ValueError(f"filters={filters} must be divisible by groups={groups}.")
        self.filters, self.kernel_size, self.strides = filters, kernel_size, strides
        self.padding, self.dilation_rate, self.groups = padding, dilation_rate, groups
        self.use_bias, self.batch_norm, self.relu = use_bias, batch_norm, relu
        self.quantize_output, self.epsilon, self.momentum = quantize_output, epsilon, momentum
        self.output_quantizer = (
            ActivationQuantizer(momentum, name="output_quantizer") if quantize_output else None
        )

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None or in_channels % self.groups:
            raise ValueError(
                f"{self.name}: input channels ({in_channels}) must be known and "
                f"divisible by groups={self.groups}."
            )
        shape = (
            self.kernel_size,
            self.kernel_size,
            in_channels // self.groups,
            self.filters // self.groups,
        )
        self.group_kernels = [
            self.add_weight(
                name="kernel" if self.groups == 1 else f"kernel_group{g}",
                shape=shape,
                initializer="he_normal",
                trainable=not self.fixed,
            )
            for g in range(self.groups)
        ]
        channel = (self.filters,)
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=channel, initializer="zeros", trainable=not self.fixed
            )
        if self.batch_norm:
            self.gamma = self.add_weight(name="gamma", shape=channel, initializer="ones")
            self.beta = self.add_weight(name="beta", shape=channel, initializer="zeros")
            self.moving_mean = self.add_weight(
                name="moving_mean", shape=channel, initializer="zeros", trainable=False
            )
            self.moving_variance = self.add_weight(
                name="moving_variance", shape=channel, initializer="ones", trainable=False
            )
        if self.output_quantizer is not None:
            self.output_quantizer.build(None)

    def folded_scale_and_bias(self):
        """(per-channel kernel scale or None, bias or None) after folding the frozen BN."""
        bias = self.bias if self.use_bias else None
        if not self.batch_norm:
            return None, bias
        scale = self.gamma / ops.sqrt(self.moving_variance + self.epsilon)
        shift = self.beta - self.moving_mean * scale
        return scale, shift if bias is None else shift + bias * scale

    def _padded(self, inputs):
        if isinstance(self.padding, str):  # Keras "same"/"valid" (from a keras Conv2D)
            return inputs, self.padding
        return pytorch_style_padding(
            inputs, self.padding, self.kernel_size, self.strides, self.dilation_rate
        )

    def call(self, inputs, training=False):
        scale, bias = self.folded_scale_and_bias()
        padded, conv_padding = self._padded(inputs)
        group_inputs = ops.split(padded, self.groups, axis=-1) if self.groups > 1 else [padded]
        width = self.filters // self.groups
        outputs = []
        for g, (x, kernel) in enumerate(zip(group_inputs, self.group_kernels)):
            channels = slice(g * width, (g + 1) * width)
            if scale is not None:
                kernel = kernel * scale[channels]
            y = ops.conv(
                x,
                fake_quant_weights(kernel),
                strides=self.strides,
                padding=conv_padding,
                dilation_rate=self.dilation_rate,
            )
            if bias is not None:
                y = y + bias[channels]
            outputs.append(ops.relu(y) if self.relu else y)
        if self.output_quantizer is not None:
            if training:  # one range for all groups: observed on the whole output
                self.output_quantizer.observe(
                    ops.concatenate(outputs, axis=-1) if self.groups > 1 else outputs[0]
                )
            outputs = [self.output_quantizer.fake_quantize(y) for y in outputs]
        return ops.concatenate(outputs, axis=-1) if self.groups > 1 else outputs[0]

    def compute_output_shape(self, input_shape):
        def out_size(size):
            if size is None:
                return None
            effective = self.dilation_rate * (self.kernel_size - 1) + 1
            if self.padding == "same":
                return -(-size // self.strides)
            pad = 0 if self.padding == "valid" else 2 * self.padding
            return (size + pad - effective) // self.strides + 1

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
            batch_norm=self.batch_norm,
            relu=self.relu,
            quantize_output=self.quantize_output,
            epsilon=self.epsilon,
            momentum=self.momentum,
            fixed=self.fixed,
        )
        return config

    @classmethod
    def like(cls, conv, norm=None, relu=False, momentum=DEFAULT_MOMENTUM):
        """The QAT step of a float `conv` (`keras.layers.Conv2D` or `GroupedConv2D`) followed by
        BatchNorm `norm` (or None) and a ReLU if `relu`; weights come with `load_float`."""
        config = conv.get_config()

        def scalar(value):  # Conv2D keeps (h, w) tuples; the convolutions here are square
            return value[0] if isinstance(value, (tuple, list)) else value

        return cls(
            config["filters"],
            scalar(config["kernel_size"]),
            strides=scalar(config["strides"]),
            padding=config["padding"],
            dilation_rate=scalar(config["dilation_rate"]),
            groups=config.get("groups", 1),
            use_bias=config["use_bias"],
            batch_norm=norm is not None,
            relu=relu,
            epsilon=norm.epsilon if norm is not None else TORCH_BN_EPSILON,
            momentum=momentum,
            name=conv.name,
        )

    def load_float(self, conv, norm=None):
        """Copies the weights of a float conv (`Conv2D` or `GroupedConv2D`) and its BN."""
        kernels = conv.group_kernels if hasattr(conv, "group_kernels") else [conv.kernel]
        for target, source in zip(self.group_kernels, kernels):
            target.assign(source)
        if self.use_bias:
            self.bias.assign(conv.bias)
        if norm is not None:
            for name in ("gamma", "beta", "moving_mean", "moving_variance"):
                getattr(self, name).assign(getattr(norm, name))


@keras.saving.register_keras_serializable(package="keras_resnest")
class QatDense(keras.layers.Dense):
    """`keras.layers.Dense` with per-tensor int8 weights and a fake-quantized output.

    Per tensor, as tfmot does for Dense: the converter transposes the kernel to TFLite's
    (units, inputs) layout and refuses per-channel ranges on the transposed axis.
    """

    def __init__(self, units, momentum=DEFAULT_MOMENTUM, **kwargs):
        super().__init__(units, **kwargs)
        self.momentum = momentum
        self.output_quantizer = ActivationQuantizer(momentum, name="output_quantizer")

    def build(self, input_shape):
        super().build(input_shape)
        self.output_quantizer.build(None)

    def call(self, inputs, training=False):
        outputs = ops.matmul(inputs, fake_quant_weights(self.kernel, per_channel=False))
        if self.use_bias:
            outputs = outputs + self.bias
        return self.output_quantizer(self.activation(outputs), training=training)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum)
        return config
