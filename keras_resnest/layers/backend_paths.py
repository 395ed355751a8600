"""The one backend check of the layers: which computation each Keras backend gets.

TensorFlow: the fused inference BatchNorm (`norm.BatchNorm`), grouped convolutions as one
convolution per group (`grouped_conv.GroupedConv2D`; TF's native grouped conv is slower and
Keras wraps it in XLA, which TF-Serving CPU builds do not run) and conv + BN + ReLU per group in
the split-attention block (`split_attention.SplitAttention`).

JAX and PyTorch: plain Keras ops, and grouped convolutions as one native grouped convolution
(`feature_group_count` under JAX/XLA, `groups=` under PyTorch). The variables are the same on
every backend, so weights files and `.keras` files move between backends unchanged.
"""
import contextlib

import keras

_portable = False


def tensorflow_fast_paths():
    """True on the TensorFlow backend, where the TF-only fast paths above are taken."""
    return keras.backend.backend() == "tensorflow" and not _portable


def tensorflow_fused_batch_norm():
    """True on the TensorFlow backend: the fused inference BatchNorm op, in portable traces too
    (converters fold the fused op into the convolution before it; the plain Keras form is a
    multiply and an add that stay in an ONNX graph, where int8 quantization then trips on them)."""
    return keras.backend.backend() == "tensorflow"


@contextlib.contextmanager
def portable_paths():
    """Calls traced inside take Keras' grouped convolution and split-attention ops on
    TensorFlow too (the fused BatchNorm stays: `tensorflow_fused_batch_norm`).

    For converters to other runtimes (ONNX): they map a native grouped convolution to one node,
    where the TF fast paths leave a convolution per group.
    """
    global _portable
    previous, _portable = _portable, True
    try:
        yield
    finally:
        _portable = previous
