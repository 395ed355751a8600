"""DropBlock (Ghiasi et al. 2018): drops contiguous square regions of a feature map.

Keras has no DropBlock and the official PyTorch ResNeSt only has a stub; this follows the
GluonCV/ResNeSt MXNet implementation (per-channel masks, square blocks, kept activations
rescaled by the kept fraction). Identity at inference.
"""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_resnest")
class DropBlock2D(keras.layers.Layer):
    """Randomly zeroes `block_size` x `block_size` regions with overall drop rate `rate`.

    Example:
    >>> import numpy as np
    >>> layer = DropBlock2D(rate=0.1, block_size=3, seed=0)
    >>> x = np.ones((2, 8, 8, 4), "float32")
    >>> bool((layer(x, training=False) == x).all())
    True
    """

    def __init__(self, rate, block_size=3, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"DropBlock2D rate must be in [0, 1), got {rate}.")
        if block_size < 1:
            raise ValueError(f"DropBlock2D block_size must be >= 1, got {block_size}.")
        self.rate = rate
        self.block_size = block_size
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.rate == 0.0:
            return inputs
        shape = ops.shape(inputs)
        height = ops.cast(shape[1], "float32")
        width = ops.cast(shape[2], "float32")
        block = float(self.block_size)
        # Seed probability so that, after growing each seed into a block, about `rate` of the
        # valid positions are dropped (eq. 1 of the paper).
        valid = ops.maximum((height - block + 1.0) * (width - block + 1.0), 1.0)
        gamma = self.rate / (block * block) * height * width / valid
        noise = keras.random.uniform(shape, seed=self.seed_generator)
        seeds = ops.cast(noise < gamma, inputs.dtype)
        dropped = ops.max_pool(seeds, pool_size=self.block_size, strides=1, padding="same")
        keep = 1.0 - dropped
        # Rescale so the expected activation is unchanged.
        kept_fraction = ops.maximum(ops.mean(keep), 1e-6)
        return inputs * keep / ops.cast(kept_fraction, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, block_size=self.block_size, seed=self.seed)
        return config
