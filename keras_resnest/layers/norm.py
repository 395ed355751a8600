"""BatchNormalization with PyTorch's defaults, and a fused inference path for TensorFlow."""
import keras

from keras_resnest.layers.backend_paths import tensorflow_fused_batch_norm

# PyTorch BatchNorm2d: eps=1e-5 and momentum=0.1 for the *new* statistic, i.e. Keras momentum 0.9.
TORCH_BN_EPSILON = 1e-5
TORCH_BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="keras_resnest")
class BatchNorm(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose float32 inference uses TF's fused kernel.

    Why: Keras computes inference BN as separate multiply and add ops, which TensorFlow's graph
    optimizer cannot merge into the preceding convolution; the fused op can be (Conv2D +
    FusedBatchNorm + ReLU become one oneDNN call). Same math, same variables, same config;
    training, other dtypes and other backends use Keras' implementation unchanged.
    """

    def can_fuse(self, inputs, training=None, mask=None):
        """Whether this call is a float32 NHWC inference that the fused op computes."""
        return not (training and self.trainable) and mask is None \
            and tensorflow_fused_batch_norm() and inputs.dtype == "float32" \
            and len(inputs.shape) == 4 and self.axis in (-1, 3) and self.scale and self.center

    def call(self, inputs, training=None, mask=None):
        if not self.can_fuse(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        return self.fused_inference(inputs, 0, inputs.shape[-1])

    def fused_inference(self, inputs, start, stop):
        """Inference BN of `inputs`, which hold channels [start, stop) of this layer's input."""
        import tensorflow as tf

        outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma[start:stop], self.beta[start:stop],
            mean=self.moving_mean[start:stop], variance=self.moving_variance[start:stop],
            epsilon=self.epsilon, is_training=False)
        return outputs


def batch_norm(name=None, gamma_initializer="ones"):
    return BatchNorm(
        axis=-1,
        epsilon=TORCH_BN_EPSILON,
        momentum=TORCH_BN_MOMENTUM,
        gamma_initializer=gamma_initializer,
        name=name,
    )
