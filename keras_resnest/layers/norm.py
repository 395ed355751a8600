"""BatchNormalization with PyTorch's defaults, synchronized across replicas under a
multi-replica strategy, and TensorFlow's fused op in inference and in training."""
import keras

from keras_resnest.layers.backend_paths import (
    tensorflow_fused_batch_norm,
    tensorflow_fused_training,
    torch_fast_paths,
    torch_nhwc,
)

# PyTorch BatchNorm2d: eps=1e-5 and momentum=0.1 for the *new* statistic, i.e. Keras momentum 0.9.
TORCH_BN_EPSILON = 1e-5
TORCH_BN_MOMENTUM = 0.9


def replicated_training():
    """True when layers are made under a TensorFlow distribution strategy with > 1 replica."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.distribute.has_strategy() \
        and tf.distribute.get_strategy().num_replicas_in_sync > 1


def resolve_synchronized(synchronized):
    """`synchronized` as a bool: None (auto) is `replicated_training()` at the time of the call."""
    return replicated_training() if synchronized is None else bool(synchronized)


@keras.saving.register_keras_serializable(package="keras_resnest")
class BatchNorm(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose float32 inference is one fused kernel on
    TensorFlow and PyTorch, and whose float32 training is one on TensorFlow.

    Why: Keras computes inference BN as separate multiply and add ops, which TensorFlow's graph
    optimizer cannot merge into the preceding convolution; the fused op can be (Conv2D +
    FusedBatchNorm + ReLU become one oneDNN call). In training, Keras' moments, normalisation
    and their gradients are a dozen passes over the tensor; TensorFlow's fused op and its
    fused gradient are two (`benchmarks/train.py --profile`). On PyTorch, torch's `batch_norm`
    is one pass over the tensor where Keras' ops are several (`torch_nhwc`). Same math, same
    variables, same config, and the moving statistics are updated as Keras updates them;
    synchronized training, other dtypes and JAX use Keras' implementation unchanged.

    Args:
        synchronized: bool or None. Whether training computes the batch statistics over the
            global batch of all replicas (TensorFlow only), so that every replica holds the
            same moving statistics; None turns it on when the layer is made under a
            `tf.distribute` strategy with more than one replica. It is not saved in the
            config: it describes the run, not the model, and a loaded model decides again
            (so a saved model loads on every backend). Defaults to None.
        **kwargs: the arguments of `keras.layers.BatchNormalization`.
    """

    def __init__(self, *args, synchronized=None, **kwargs):
        super().__init__(*args, synchronized=resolve_synchronized(synchronized), **kwargs)

    def is_nhwc_inference(self, inputs, training=None, mask=None):
        """Whether this call is a float32 NHWC inference with scale and center."""
        return not (training and self.trainable) and mask is None \
            and keras.backend.standardize_dtype(inputs.dtype) == "float32" \
            and len(inputs.shape) == 4 and self.axis in (-1, 3) and self.scale and self.center

    def can_fuse(self, inputs, training=None, mask=None):
        """Whether this call is a float32 NHWC inference that TF's fused op computes."""
        return tensorflow_fused_batch_norm() and self.is_nhwc_inference(inputs, training, mask)

    def fuses_training(self, shape, dtype, training=None):
        """Whether a training call on a float32 NHWC input of `shape` runs TF's fused op.

        Not with one value per channel and image (H*W == 1): the fused op's unbiased
        variance, from which the biased one is recovered, divides by N*H*W - 1.
        """
        return tensorflow_fused_training() and bool(training) and self.trainable \
            and not self.synchronized and not self.renorm \
            and keras.backend.standardize_dtype(dtype) == "float32" \
            and len(shape) == 4 and self.axis in (-1, 3) and self.scale and self.center \
            and shape[1] is not None and shape[2] is not None and shape[1] * shape[2] > 1

    def call(self, inputs, training=None, mask=None):
        if mask is None and self.fuses_training(inputs.shape, inputs.dtype, training):
            outputs, mean, variance = self.fused_training(inputs, 0, inputs.shape[-1])
            self.update_moving_statistics(mean, variance)
            return outputs
        if self.can_fuse(inputs, training, mask):
            return self.fused_inference(inputs, 0, inputs.shape[-1])
        if torch_fast_paths() and self.is_nhwc_inference(inputs, training, mask):
            return torch_nhwc.batch_norm_inference(
                inputs, self.gamma.value, self.beta.value, self.moving_mean.value,
                self.moving_variance.value, self.epsilon)
        return super().call(inputs, training=training, mask=mask)

    def fused_inference(self, inputs, start, stop):
        """Inference BN of `inputs`, which hold channels [start, stop) of this layer's input."""
        import tensorflow as tf

        outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma[start:stop], self.beta[start:stop],
            mean=self.moving_mean[start:stop], variance=self.moving_variance[start:stop],
            epsilon=self.epsilon, is_training=False)
        return outputs

    def fused_training(self, inputs, start, stop):
        """(outputs, batch mean, biased batch variance) of training BN on `inputs`, which hold
        channels [start, stop) of this layer's input. The moving statistics are not updated."""
        import tensorflow as tf

        outputs, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma[start:stop], self.beta[start:stop], epsilon=self.epsilon,
            is_training=True)
        # The op returns the Bessel-corrected variance (for a moving average); Keras averages
        # the biased one, which the output was normalised with.
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), unbiased_variance.dtype)
        return outputs, mean, unbiased_variance * ((count - 1.0) / count)

    def update_moving_statistics(self, mean, variance):
        """The moving-average update of Keras' BatchNormalization, from batch statistics."""
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum))

    def get_config(self):
        config = super().get_config()
        config.pop("synchronized", None)  # a property of the run (see the class docstring)
        return config


def batch_norm(name=None, gamma_initializer="ones", synchronized=None):
    return BatchNorm(
        axis=-1,
        epsilon=TORCH_BN_EPSILON,
        momentum=TORCH_BN_MOMENTUM,
        gamma_initializer=gamma_initializer,
        synchronized=synchronized,
        name=name,
    )
