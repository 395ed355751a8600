"""keras-resnest: ResNeSt (Split-Attention Networks) for Keras 3, identical to the official
PyTorch models.

>>> import keras_resnest
>>> model = keras_resnest.ResNeSt50(weights=None)
"""
__version__ = "0.1.0"

from keras_resnest.models import (ResNeSt14, ResNeSt26, ResNeSt50, ResNeSt101, ResNeSt200,
                                  ResNeSt269, create_model, list_models)
from keras_resnest.imagenet import decode_predictions, imagenet_classes, preprocess_input
from keras_resnest.porting import load_torch_state_dict

__all__ = ["ResNeSt14", "ResNeSt26", "ResNeSt50", "ResNeSt101", "ResNeSt200", "ResNeSt269",
           "create_model", "decode_predictions", "imagenet_classes", "list_models",
           "load_torch_state_dict", "preprocess_input"]
