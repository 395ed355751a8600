"""Tensors as regions of their file: where a tensor's values lie, checked before reading.

A tensor is `count` values of a dtype at a byte offset of the file (`Region`), shaped by a
shape and strides. `_extent` checks that a tensor stays inside its stored data and that no two
of its elements share a value (an expanded tensor would make its element count, not the
file, the size to allocate); `tensor_at` reads it with one `readinto`, at once or, as a
`LazyTensor`, when converted. `Budget` caps what an eager read of one file returns.

The dtype a region is read with is the pickle guard's `DType` (or safetensors'): its `stored`
dtype is how the bytes are laid out, `logical` what a reader gets, and `finish` converts one
into the other.
"""
import math
import os

import numpy as np

from keras_resnest.weights.checkpoints.errors import CheckpointError

# Limits far above any real checkpoint and far below what would hurt.
MAX_NDIM = 32  # numpy 1's limit (numpy 2 allows 64)
_MAX_EMPTY_ELEMENTS = 2**48  # product of the nonzero dimensions of an empty tensor
# Eager reads return at most this much per byte of file (+ a constant): a file whose tensors
# all view the same stored data would otherwise return one copy of it per tensor.
_EAGER_BYTES_PER_FILE_BYTE = 4
_EAGER_BYTES_EXTRA = 64 * 2**20


def is_index(value):
    """A size, stride or offset as torch writes them: a plain int in int64's range (also
    keeps error messages short: a pickle's int can have millions of digits)."""
    return type(value) is int and 0 <= value < 2**63


class LazyTensor:
    """A checkpoint tensor read from its file when converted (`np.asarray(tensor)`).

    Has `shape`, `dtype`, `ndim` and `size` without reading anything.
    """

    __slots__ = ("shape", "dtype", "_read")

    def __init__(self, shape, dtype, read):
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self._read = read

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    def numpy(self):
        return self._read()

    def __array__(self, dtype=None, copy=None):
        array = self._read()
        return array if dtype is None else array.astype(dtype, copy=False)

    def __repr__(self):
        return f"LazyTensor(shape={self.shape}, dtype={self.dtype})"


class Region:
    """`count` values of `dtype` at byte `offset` of a file, checked to lie inside it."""

    __slots__ = ("path", "offset", "count", "dtype", "big_endian")

    def __init__(self, path, offset, count, dtype, big_endian=False):
        self.path, self.offset, self.count = path, offset, count
        self.dtype, self.big_endian = dtype, big_endian

    def part(self, start, count, dtype=None):
        """The `count` values from value `start` on, as `dtype` (default: this region's)."""
        dtype = self.dtype if dtype is None else dtype
        return Region(self.path, self.offset + start * self.dtype.itemsize, count, dtype,
                       self.big_endian)

    def read(self, start=0, count=None):
        """Values `start .. start+count` as a fresh, writable, native-order array."""
        count = self.count - start if count is None else count
        dtype = self.dtype.newbyteorder(">") if self.big_endian else self.dtype
        array = np.empty(count, dtype)
        nbytes = array.nbytes
        with open(self.path, "rb") as file:
            file.seek(self.offset + start * dtype.itemsize)
            if file.readinto(memoryview(array).cast("B")) != nbytes:
                raise CheckpointError(f"{self.path}: file is truncated")
        return array.astype(self.dtype) if self.big_endian else array


class Budget:
    """Bytes an eager read may still return (see _EAGER_BYTES_PER_FILE_BYTE)."""

    def __init__(self, path):
        self.path = path
        self.left = _EAGER_BYTES_PER_FILE_BYTE * os.path.getsize(path) + _EAGER_BYTES_EXTRA

    def spend(self, nbytes):
        self.left -= nbytes
        if self.left < 0:
            raise CheckpointError(
                f"{self.path}: its tensors would take more than {_EAGER_BYTES_PER_FILE_BYTE} "
                "times the file's size in memory (many tensors reading the same stored data); "
                "refusing to read it eagerly (lazy=True reads one tensor at a time)")


def _extent(shape, stride, count, source):
    """Values a strided tensor spans in its storage of `count` values, after checking that
    it stays inside and that no two of its elements share a value (both in elements)."""
    numel = math.prod(shape)
    if not numel:
        if math.prod(size for size in shape if size) > _MAX_EMPTY_ELEMENTS:
            raise CheckpointError(f"{source}: an empty tensor of impossible shape {shape}")
        return 0
    # Sorted by stride, each dimension must step past everything the smaller ones reach.
    # Real tensors (contiguous, transposed, sliced) do; an expanded one (stride 0) or an
    # overlapping as_strided view does not, and it would make numel, not the stored data,
    # the size of the array to allocate: 1.6 KB of torch.zeros(1).expand(2e5, 2e5) is 160 GB.
    reach = 0
    for step, size in sorted((step, size) for size, step in zip(shape, stride) if size > 1):
        if step <= reach:
            raise CheckpointError(
                f"{source}: a tensor of shape {shape} and strides {stride} repeats its stored "
                "values (stride 0, as from expand(), or overlapping strides); a state dict "
                "has no such tensors")
        reach += step * (size - 1)
    if reach + 1 > count:
        raise CheckpointError(
            f"{source}: a tensor of shape {shape} reaches past its data ({count} elements); "
            "the file is truncated or corrupt")
    return reach + 1


def tensor_at(region, dtype, shape, offset=0, stride=None, source="checkpoint", lazy=False,
            budget=None):
    """A tensor (eager array or LazyTensor) of `shape` inside `region`, after a bounds check.

    `offset` and `stride` are in elements, as torch stores them; None means contiguous.
    """
    shape = tuple(shape)
    contiguous = tuple(math.prod(shape[i + 1:]) for i in range(len(shape)))
    stride = contiguous if stride is None else tuple(stride)
    if offset > region.count:
        raise CheckpointError(f"{source}: a tensor starts past its data ({region.count} "
                              "elements); the file is truncated or corrupt")
    extent = _extent(shape, stride, region.count - offset, source)
    is_contiguous = all(st == c or s == 1 for s, st, c in zip(shape, stride, contiguous))

    def read():
        flat = region.read(offset, extent)
        if is_contiguous:
            array = flat.reshape(shape)
        else:
            array = np.lib.stride_tricks.as_strided(
                flat, shape=shape, strides=[st * flat.itemsize for st in stride]).copy()
        return dtype.finish(array)

    if lazy:
        return LazyTensor(shape, dtype.logical, read)
    if budget is not None:
        budget.spend(math.prod(shape) * dtype.logical.itemsize)
    return read()
