"""Assigning PyTorch-named ResNeSt state dicts to keras_resnest models (no torch needed).

The Keras layers carry the PyTorch module names with "_" for "." ("layer2_0" for the PyTorch
module "layer2.0", "conv1_0" for "conv1.0", "fc"): Keras' PyTorch backend registers every
variable as a torch parameter named by its path, and torch refuses dots in those names. The
rule is reversible (`keras_layer_name` / `torch_module_name`) because no official module name
has "_" before a digit. Inside a block the few sub-layers whose names differ are mapped below.
Layouts: conv weights (out, in/groups, kh, kw) -> Keras (kh, kw, in/groups, out); Linear
(out, in) -> Dense (in, out);
BatchNorm weight/bias/running_mean/running_var -> gamma/beta/moving_mean/moving_variance.
"""

import re
from dataclasses import dataclass, field

import keras
import numpy as np

from keras_resnest.layers import GroupedConv2D, ResNeStBottleneck, SplitAttention

# Keras sub-layer attribute -> PyTorch sub-module name, per composite layer.
BOTTLENECK_CHILDREN = {
    "conv1": "conv1",
    "bn1": "bn1",
    "conv2": "conv2",
    "conv3": "conv3",
    "bn3": "bn3",
    # downsample is nn.Sequential(AvgPool2d, Conv2d, BatchNorm2d): the pool holds index 0.
    "downsample_conv": "downsample.1",
    "downsample_bn": "downsample.2",
}
SPLIT_ATTENTION_CHILDREN = {"conv": "conv", "bn0": "bn0", "fc1": "fc1", "bn1": "bn1", "fc2": "fc2"}
BATCH_NORM_WEIGHTS = (
    ("weight", "gamma"),
    ("bias", "beta"),
    ("running_mean", "moving_mean"),
    ("running_var", "moving_variance"),
)
IGNORED_SUFFIXES = ("num_batches_tracked",)
HEAD_PREFIX = "fc."
# "_" before a digit in a Keras layer name stands for "." in the PyTorch module name.
_INDEX_SEPARATOR = re.compile(r"_(?=\d)")


def keras_layer_name(torch_name):
    """Keras layer name of an official PyTorch module name: `"layer3.5"` -> `"layer3_5"`.

    >>> keras_layer_name("layer3.5"), keras_layer_name("conv1.0"), keras_layer_name("fc")
    ('layer3_5', 'conv1_0', 'fc')
    """
    return torch_name.replace(".", "_")


def torch_module_name(keras_name):
    """PyTorch module name of a keras_resnest layer name: `"layer3_5"` -> `"layer3.5"`.

    The inverse of `keras_layer_name`. Dotted names (models saved by keras-resnest 0.1.0 and
    loaded without renaming, TensorFlow backend) pass through unchanged.

    >>> [torch_module_name(name) for name in ("layer3_5", "conv1_0_pad", "fc", "layer3.5")]
    ['layer3.5', 'conv1.0_pad', 'fc', 'layer3.5']
    """
    return _INDEX_SEPARATOR.sub(".", keras_name)


@dataclass
class PortReport:
    """What `load_torch_state_dict` did."""

    tensors: int = 0  # state-dict tensors assigned
    parameters: int = 0  # scalar values assigned
    skipped: list = field(default_factory=list)  # keys deliberately not loaded (the head)
    notes: list = field(default_factory=list)


def _targets(layer, prefix):
    """Yields (torch key, keras variables, layout) for every weight of `layer`.

    One PyTorch tensor maps to one Keras variable, except grouped conv kernels, which
    `GroupedConv2D` keeps as one variable per group (split along the output channels).
    """
    if isinstance(layer, ResNeStBottleneck):
        children = BOTTLENECK_CHILDREN
    elif isinstance(layer, SplitAttention):
        children = SPLIT_ATTENTION_CHILDREN
    else:
        children = None
    if children is not None:
        for attribute, torch_name in children.items():
            child = getattr(layer, attribute, None)
            if child is not None:
                yield from _targets(child, f"{prefix}.{torch_name}")
        return
    if isinstance(layer, keras.layers.BatchNormalization):
        for torch_name, keras_name in BATCH_NORM_WEIGHTS:
            yield f"{prefix}.{torch_name}", [getattr(layer, keras_name)], "vector"
    elif isinstance(layer, GroupedConv2D):
        yield f"{prefix}.weight", layer.group_kernels, "conv"
        if layer.use_bias:
            yield f"{prefix}.bias", [layer.bias], "vector"
    elif isinstance(layer, keras.layers.Conv2D):
        yield f"{prefix}.weight", [layer.kernel], "conv"
        if layer.use_bias:
            yield f"{prefix}.bias", [layer.bias], "vector"
    elif isinstance(layer, keras.layers.Dense):
        yield f"{prefix}.weight", [layer.kernel], "linear"
        yield f"{prefix}.bias", [layer.bias], "vector"
    elif layer.weights:
        raise TypeError(f"No PyTorch mapping for layer {layer.name!r} ({type(layer).__name__}).")


def _to_keras_values(array, variables, layout):
    """PyTorch array -> one value per Keras variable."""
    if layout == "conv":
        kernel = np.transpose(array, (2, 3, 1, 0))
        return np.split(kernel, len(variables), axis=-1)
    if layout == "linear":
        return [np.transpose(array)]
    return [array]


def _torch_shape(variables, layout):
    """The PyTorch shape that `variables` together hold."""
    shape = tuple(variables[0].shape)
    if layout == "conv":
        kh, kw, cin, cout = shape
        return (cout * len(variables), cin, kh, kw)
    if layout == "linear":
        return tuple(reversed(shape))
    return shape


def _model_targets(model):
    targets = []
    for layer in model.layers:
        targets.extend(_targets(layer, torch_module_name(layer.name)))
    return targets


def load_torch_state_dict(model, state_dict, strict=True):
    """Assigns a PyTorch-named ResNeSt state dict to `model`.

    Args:
        model (keras.Model): a keras_resnest model (any configuration).
        state_dict (Mapping[str, array-like]): mapping of PyTorch names to arrays (numpy, or
            anything `np.asarray` takes, e.g. `{k: v.numpy() for k, v in
            torch_model.state_dict().items()}`). `num_batches_tracked` entries are ignored.
        strict (bool): require every tensor to be used and every model weight to be assigned.

    If the model has no ImageNet head (`include_top=False`, or `classes` differs from the
    checkpoint's), the `fc.*` tensors are skipped and the report says so.

    Returns:
        PortReport: tensors and parameters assigned, skipped keys.

    Raises:
        ValueError: naming the first missing or mis-shaped key in model order, else the first
            unexpected key.

    Example:
    >>> import keras_resnest, numpy as np
    >>> model = keras_resnest.create_model("resnest14d", weights=None, include_top=False)
    >>> state = {}   # e.g. keras_resnest.weights.read_checkpoint("resnest14.pth")
    >>> keras_resnest.load_torch_state_dict(model, state, strict=False).tensors
    0
    """
    source = {key: value for key, value in state_dict.items() if not key.endswith(IGNORED_SUFFIXES)}
    targets = _model_targets(model)
    report = PortReport()

    model_has_head = any(key.startswith(HEAD_PREFIX) for key, _, _ in targets)
    head_matches = False
    if model_has_head and f"{HEAD_PREFIX}weight" in source:
        fc_kernel = next(v[0] for key, v, _ in targets if key == f"{HEAD_PREFIX}weight")
        # Same number of classes: the head is loaded (and shape-checked like any tensor).
        head_matches = np.shape(source[f"{HEAD_PREFIX}weight"])[0] == fc_kernel.shape[1]
    if not head_matches:
        head_keys = sorted(key for key in source if key.startswith(HEAD_PREFIX))
        if head_keys:
            report.skipped.extend(head_keys)
            reason = (
                "the model has no classification head (include_top=False)"
                if not model_has_head
                else "the model's head has a different number of classes"
            )
            report.notes.append(
                f"Skipped {', '.join(head_keys)}: {reason}; the head keeps its initialisation."
            )
        source = {k: v for k, v in source.items() if not k.startswith(HEAD_PREFIX)}
        targets = [t for t in targets if not t[0].startswith(HEAD_PREFIX)]

    # Check names and shapes before assigning anything, so a failure leaves the model
    # untouched. One pass in model order: the error names the first key that differs.
    for key, variables, layout in targets:
        expected = _torch_shape(variables, layout)
        if key not in source:
            if strict:
                raise ValueError(
                    f"State dict is missing {key!r} (expected shape {expected}) for model "
                    f"{model.name!r}."
                )
            continue
        shape = tuple(np.shape(source[key]))
        if shape != expected:
            raise ValueError(
                f"Shape mismatch for {key!r}: model {model.name!r} expects {expected}, the state "
                f"dict has {shape}."
            )
    if strict:
        target_keys = {key for key, _, _ in targets}
        unexpected = [key for key in source if key not in target_keys]
        if unexpected:
            raise ValueError(
                f"Unexpected key {unexpected[0]!r} (shape {tuple(np.shape(source[unexpected[0]]))})"
                f" for model {model.name!r}: the checkpoint belongs to another architecture "
                f"({len(unexpected)} unexpected keys)."
            )

    # One tensor at a time: a lazily read checkpoint (keras_resnest.weights.read_state_dict
    # with lazy=True) is read as it is assigned and never held in memory whole.
    for key, variables, layout in targets:
        if key not in source:
            continue
        values = _to_keras_values(np.asarray(source[key]), variables, layout)
        for variable, value in zip(variables, values):
            variable.assign(value.astype(variable.dtype))
            report.parameters += int(value.size)
        report.tensors += 1
    return report
