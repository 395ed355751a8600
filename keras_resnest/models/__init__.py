"""ResNeSt models: one registry of configurations and names (`configs`) and one builder
(`resnest`)."""
from keras_resnest.models.configs import ALIASES, MODEL_CONFIGS, ResNeStConfig, resolve_model_name
from keras_resnest.models.resnest import (
                                          ResNeSt14,
                                          ResNeSt26,
                                          ResNeSt50,
                                          ResNeSt101,
                                          ResNeSt200,
                                          ResNeSt269,
                                          create_model,
                                          list_models,
)

__all__ = ["ALIASES", "MODEL_CONFIGS", "ResNeStConfig", "ResNeSt14", "ResNeSt26", "ResNeSt50",
           "ResNeSt101", "ResNeSt200", "ResNeSt269", "create_model", "list_models",
           "resolve_model_name"]
