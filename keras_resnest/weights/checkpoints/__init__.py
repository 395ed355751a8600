"""Reading checkpoints without PyTorch: `.pth`/`.pt`, `.safetensors` and `.npz`.

Only the standard library and numpy are used. The package's modules, each reviewable alone:

* `errors`: `CheckpointError` and `UnsafeCheckpointError`;
* `extents`: tensors as checked regions of their file, and `LazyTensor`;
* `pickle_guard`: the allow-list of the globals a state dict needs, the pickle scanner and the
  restricted unpickler; nothing in a hostile pickle runs;
* `torch_files`: PyTorch's zip and legacy containers;
* `safetensors_npz`: the `.safetensors` and `.npz` readers;
* `api`: the entry points below.

In every format a tensor's data is a region of the file, located (and bounds-checked) while
parsing and read with one `readinto` into its array. With `lazy=True` the reading waits until
the tensor is converted (`np.asarray`), so a converter holds one tensor at a time.

Hostile files: a file can make the reader fail, but not run code, change the reader or cost
much more than its own size. Nothing a file declares is trusted before it is checked against
the bytes that are there: pickles are scanned before they are unpickled (lengths, memo indices,
nesting), the objects a pickle gets from the allow-list cannot be changed by it, each object of
the unpickled tree is visited once, torch zip members must be stored (not compressed), and a
tensor must lie inside its stored data without overlapping itself. Every malformed file raises
a `CheckpointError` naming it.

`read_state_dict` is the entry point: `{name: numpy array}` with a `{"state_dict": ...}` /
`{"model": ...}` wrapper and DataParallel's `module.` prefix removed and `num_batches_tracked`
dropped.

Example:
    >>> state = read_state_dict("resnest50-528c19ca.pth")   # doctest: +SKIP
    >>> state["conv1.0.weight"].shape                        # doctest: +SKIP
    (32, 3, 3, 3)
"""
# Absolute imports: the hostile-file tests load this file under another module name.
from keras_resnest.weights.checkpoints.api import (
                                                   NPZ_SUFFIX,
                                                   SAFETENSORS_SUFFIX,
                                                   TORCH_SUFFIXES,
                                                   is_torch_free_checkpoint,
                                                   normalize_state_dict,
                                                   read_checkpoint,
                                                   read_state_dict,
)
from keras_resnest.weights.checkpoints.errors import CheckpointError, UnsafeCheckpointError
from keras_resnest.weights.checkpoints.extents import LazyTensor

__all__ = [
    "CheckpointError",
    "LazyTensor",
    "NPZ_SUFFIX",
    "SAFETENSORS_SUFFIX",
    "TORCH_SUFFIXES",
    "UnsafeCheckpointError",
    "is_torch_free_checkpoint",
    "normalize_state_dict",
    "read_checkpoint",
    "read_state_dict",
]
