"""ResNeSt models: one configuration table (`configs`) and one builder (`resnest`)."""
from keras_resnest.models.configs import MODEL_CONFIGS, ResNeStConfig
from keras_resnest.models.resnest import (ResNeSt14, ResNeSt26, ResNeSt50, ResNeSt101,
                                          ResNeSt200, ResNeSt269, create_model, list_models)

__all__ = ["MODEL_CONFIGS", "ResNeStConfig", "ResNeSt14", "ResNeSt26", "ResNeSt50", "ResNeSt101",
           "ResNeSt200", "ResNeSt269", "create_model", "list_models"]
