"""BatchNormalization with PyTorch's defaults, which the official checkpoints were trained with."""
import keras

# PyTorch BatchNorm2d: eps=1e-5 and momentum=0.1 for the *new* statistic, i.e. Keras momentum 0.9.
TORCH_BN_EPSILON = 1e-5
TORCH_BN_MOMENTUM = 0.9


def batch_norm(name=None, gamma_initializer="ones"):
    return keras.layers.BatchNormalization(
        axis=-1,
        epsilon=TORCH_BN_EPSILON,
        momentum=TORCH_BN_MOMENTUM,
        gamma_initializer=gamma_initializer,
        name=name,
    )
