"""BatchNormalization with PyTorch's defaults, synchronized across replicas under a
multi-replica strategy, and a fused inference path for TensorFlow."""
import keras

from keras_resnest.layers.backend_paths import (
    tensorflow_fused_batch_norm,
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
    TensorFlow and PyTorch.

    Why: Keras computes inference BN as separate multiply and add ops, which TensorFlow's graph
    optimizer cannot merge into the preceding convolution; the fused op can be (Conv2D +
    FusedBatchNorm + ReLU become one oneDNN call). On PyTorch, torch's `batch_norm` is one pass
    over the tensor where Keras' ops are several (`torch_nhwc`). Same math, same variables,
    same config; training, other dtypes and JAX use Keras' implementation unchanged.

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

    def call(self, inputs, training=None, mask=None):
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
