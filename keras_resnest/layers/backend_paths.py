"""The one backend check of the layers: which computation each Keras backend gets.

TensorFlow: the fused inference BatchNorm (`norm.BatchNorm`), grouped convolutions as one
convolution per group (`grouped_conv.GroupedConv2D`; TF's native grouped conv is slower and
Keras wraps it in XLA, which TF-Serving CPU builds do not run) and conv + BN + ReLU per group in
the split-attention block (`split_attention.SplitAttention`).

JAX and PyTorch: plain Keras ops, and grouped convolutions as one native grouped convolution
(`feature_group_count` under JAX/XLA, `groups=` under PyTorch). The variables are the same on
every backend, so weights files and `.keras` files move between backends unchanged.
"""
import keras


def tensorflow_fast_paths():
    """True on the TensorFlow backend, where the TF-only fast paths above are taken."""
    return keras.backend.backend() == "tensorflow"
