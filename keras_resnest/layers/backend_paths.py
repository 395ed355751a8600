"""The one backend check of the layers: which computation each Keras backend gets.

TensorFlow: the fused BatchNorm op in inference and in training (`norm.BatchNorm`), grouped
convolutions as one convolution per group (`grouped_conv.GroupedConv2D`; TF's native grouped
conv is slower and Keras wraps it in XLA, which TF-Serving CPU builds do not run) and
conv + BN + ReLU per group in the split-attention block (`split_attention.SplitAttention`),
in inference and in training.

PyTorch: convolutions (`conv.Conv2D`, `grouped_conv.GroupedConv2D`) and inference BatchNorm
call torch on NHWC tensors viewed as channels-last NCHW (`torch_nhwc`), without the layout
copies of Keras' torch backend.

JAX: plain Keras ops. How each backend computes a grouped convolution is
`grouped_conv_formulation()`, chosen by measurement on CPU (`python -m benchmarks.grouped_conv`
times every formulation under every backend): XLA:CPU's native grouped convolution
(`feature_group_count`) is much slower than one convolution per group, so JAX splits too.
The variables are the same on every backend and formulation, so weights files and `.keras`
files move between backends unchanged.
"""
import contextlib

import keras

# Imported once, here, and only on the PyTorch backend (it imports torch): an import inside a
# layer's call is a graph break for torch.compile (`jit_compile=True`), one per layer call.
if keras.backend.backend() == "torch":
    from keras_resnest.layers import torch_nhwc
else:
    torch_nhwc = None

_portable = False
_formulation_override = None
_fused_training = True

# "per_group": one convolution per group and a concat; "native": one grouped convolution
# (the backend's `groups` / `feature_group_count`).
GROUPED_CONV_FORMULATIONS = ("per_group", "native")
_GROUPED_CONV_BY_BACKEND = {"tensorflow": "per_group", "jax": "per_group", "torch": "native"}


def tensorflow_fast_paths():
    """True on the TensorFlow backend, where the TF-only fast paths above are taken."""
    return keras.backend.backend() == "tensorflow" and not _portable


def torch_fast_paths():
    """True on the PyTorch backend, where `torch_nhwc` computes convolutions and BatchNorm."""
    return keras.backend.backend() == "torch" and not _portable


def tensorflow_fused_batch_norm():
    """True on the TensorFlow backend: the fused inference BatchNorm op, in portable traces too
    (converters fold the fused op into the convolution before it; the plain Keras form is a
    multiply and an add that stay in an ONNX graph, where int8 quantization then trips on them)."""
    return keras.backend.backend() == "tensorflow"


def tensorflow_fused_training():
    """True on the TensorFlow backend (not in portable traces): training-mode BatchNorm is TF's
    fused op, per group in the split-attention block, and the recipe's SGD update is TF's
    momentum kernel (`unfused_training` turns both off)."""
    return tensorflow_fast_paths() and _fused_training


def grouped_conv_formulation():
    """How `GroupedConv2D` computes a grouped convolution on this backend: one of
    `GROUPED_CONV_FORMULATIONS` ("native" in portable traces: one node per convolution)."""
    if _formulation_override is not None:
        return _formulation_override
    if _portable:
        return "native"
    return _GROUPED_CONV_BY_BACKEND.get(keras.backend.backend(), "native")


@contextlib.contextmanager
def grouped_conv_formulation_override(formulation):
    """Calls traced inside compute grouped convolutions as `formulation` on any backend.

    For the benchmark that measures the choice of `grouped_conv_formulation()`.

    Args:
        formulation: str. One of `GROUPED_CONV_FORMULATIONS`.
    """
    global _formulation_override
    if formulation not in GROUPED_CONV_FORMULATIONS:
        raise ValueError(f"formulation must be one of {GROUPED_CONV_FORMULATIONS}, "
                         f"received {formulation!r}.")
    previous, _formulation_override = _formulation_override, formulation
    try:
        yield
    finally:
        _formulation_override = previous


@contextlib.contextmanager
def unfused_training():
    """Training steps traced inside compute BatchNorm with Keras' own ops, on the whole
    split-attention conv output, and the SGD update with Keras ops: the step as it was before
    the fused training path.

    For the test that holds the two steps equal and the benchmark that times them.
    """
    global _fused_training
    previous, _fused_training = _fused_training, False
    try:
        yield
    finally:
        _fused_training = previous


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
