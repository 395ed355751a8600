"""Stochastic depth (drop path): drops a whole residual branch per sample. Identity at inference."""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_resnest")
class StochasticDepth(keras.layers.Layer):
    """Zeroes the input for a random `rate` fraction of the samples, rescaling the rest.

    Example:
    >>> import numpy as np
    >>> layer = StochasticDepth(0.2, seed=0)
    >>> x = np.ones((4, 2, 2, 3), "float32")
    >>> bool((layer(x) == x).all())
    True
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"StochasticDepth rate must be in [0, 1), got {rate}.")
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.rate == 0.0:
            return inputs
        keep_prob = 1.0 - self.rate
        batch = ops.shape(inputs)[0]
        mask_shape = (batch,) + (1,) * (len(inputs.shape) - 1)
        noise = keras.random.uniform(mask_shape, seed=self.seed_generator)
        mask = ops.cast(noise < keep_prob, inputs.dtype)
        return inputs * mask / keep_prob

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config
