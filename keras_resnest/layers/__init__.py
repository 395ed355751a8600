"""Keras layers of ResNeSt, all registered serializable (package "keras_resnest")."""
# QAT layers: imported so that `load_model` finds them in QAT .keras files.
from keras_resnest.layers import fake_quant, qat_blocks  # noqa: F401
from keras_resnest.layers.bottleneck import ResNeStBottleneck
from keras_resnest.layers.drop_block import DropBlock2D
from keras_resnest.layers.grouped_conv import GroupedConv2D
from keras_resnest.layers.split_attention import SplitAttention
from keras_resnest.layers.stochastic_depth import StochasticDepth

__all__ = ["DropBlock2D", "GroupedConv2D", "ResNeStBottleneck", "SplitAttention",
           "StochasticDepth"]
