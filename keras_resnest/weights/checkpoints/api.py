"""The entry points: `read_checkpoint` picks the reader by the file's suffix, and
`read_state_dict` turns what it read into a flat `{name: array}` state dict.
"""
import os

import numpy as np

from keras_resnest.weights.checkpoints.errors import CheckpointError
from keras_resnest.weights.checkpoints.extents import Budget, LazyTensor
from keras_resnest.weights.checkpoints.safetensors_npz import read_npz, read_safetensors
from keras_resnest.weights.checkpoints.torch_files import read_torch

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
NPZ_SUFFIX = ".npz"

_WRAPPER_KEYS = ("state_dict", "model")
_IGNORED_SUFFIXES = ("num_batches_tracked",)


def read_checkpoint(path, lazy=False):
    """Reads a checkpoint file as stored: nested dicts/lists of numpy arrays.

    With `lazy=True`, tensors are `LazyTensor`s, read when converted with `np.asarray` (not
    for `.npz`, which is always read eagerly). An eager read returns at most 4 times the
    file's size (+ 64 MB), which only a file of many tensors over the same data exceeds.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such checkpoint: {path}")
    lower = path.lower()
    budget = Budget(path)
    if lower.endswith(NPZ_SUFFIX):
        return read_npz(path, budget)
    budget = None if lazy else budget
    if lower.endswith(SAFETENSORS_SUFFIX):
        return read_safetensors(path, lazy, budget)
    return read_torch(path, lazy, budget)


def _is_tensor(value):
    return isinstance(value, (np.ndarray, LazyTensor))


def normalize_state_dict(obj, source="checkpoint"):
    """Unwraps a training checkpoint into a flat `{name: array}` state dict.

    Accepts `{"state_dict": ...}` or `{"model": ...}` wrappers, strips DataParallel's
    `module.` prefix and drops `num_batches_tracked` counters and non-tensor entries.
    """
    for _ in range(3):
        if not isinstance(obj, dict):
            break
        inner = next((obj[key] for key in _WRAPPER_KEYS if isinstance(obj.get(key), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a state dict, found {type(obj).__name__}")
    state = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not _is_tensor(value) or key.endswith(_IGNORED_SUFFIXES):
            continue
        state[key[len("module."):] if key.startswith("module.") else key] = value
    if not state:
        raise CheckpointError(f"{source}: holds no tensors (expected a model state dict)")
    return state


def read_state_dict(path, lazy=False):
    """Reads `.pth`/`.pt`/`.safetensors`/`.npz` into `{name: numpy array}`, torch-free.

    With `lazy=True` the values are `LazyTensor`s (shape and dtype known, data read on
    `np.asarray`), which `load_torch_state_dict` assigns one at a time.
    """
    return normalize_state_dict(read_checkpoint(path, lazy=lazy), source=os.fspath(path))


def is_torch_free_checkpoint(path):
    """True for the formats `read_state_dict` converts (as opposed to Keras weight files)."""
    return os.fspath(path).lower().endswith(TORCH_SUFFIXES + (SAFETENSORS_SUFFIX, NPZ_SUFFIX))
