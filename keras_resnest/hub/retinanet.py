"""keras-hub's RetinaNet with the paper's head initialisation (docs/keras-hub.md, Detection)."""
import keras
import numpy as np


def initialise_heads_as_retinanet(detector, prior_probability=0.01):
    """The RetinaNet paper's head initialisation (Lin et al. 2017, section 4.1): every head
    convolution N(0, 0.01) with zero bias, except the classification logits' bias
    -log((1 - p) / p), so that each anchor starts at score p.

    keras-hub 0.32 differs twice: its heads' kernels are N(0, 0.05), which over five 3x3x256
    convolutions amplifies the pyramid features about 20 times (a focal loss in the hundreds
    at the first step on the canvases), and it puts the prior on the box head instead (built
    with `use_prior_probability=True`), starting every box several anchor widths off.

    Args:
        detector (keras_hub.models.RetinaNetObjectDetector): Changed in place.
        prior_probability (float): Every anchor's starting score. Defaults to 0.01.
    """
    prior = -np.log((1 - prior_probability) / prior_probability)
    for head, last_bias in ((detector.classification_head, prior), (detector.box_head, 0.0)):
        layers = [*head.conv_layers, head.prediction_layer]
        for layer in layers:
            layer.kernel.assign(keras.initializers.RandomNormal(stddev=0.01)(layer.kernel.shape))
            bias = last_bias if layer is head.prediction_layer else 0.0
            layer.bias.assign(np.full(layer.bias.shape, bias, "float32"))
