"""The two formats that are not pickles: `.safetensors` and `.npz`.

A safetensors file is an 8-byte header length, a JSON header of tensors (dtype, shape, byte
offsets) and the data; each tensor's offsets are checked against its shape and the file before
it becomes a `Region`. An `.npz` is read by numpy (without pickles) after each member's
declared array size is checked against the bytes the member holds.
"""
import json
import math
import os
import struct
import types
import zipfile

import numpy as np

from keras_resnest.weights.checkpoints.errors import CheckpointError
from keras_resnest.weights.checkpoints.extents import MAX_NDIM, Region, is_index, tensor_at
from keras_resnest.weights.checkpoints.pickle_guard import BF16, DType

_MAX_SAFETENSORS_HEADER = 100 * 2**20  # the safetensors format's own limit

_SAFETENSORS_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": BF16, "I64": "<i8", "I32": "<i4",
    "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}

_SAFETENSORS_DTYPE_OBJECTS = types.MappingProxyType(
    {name: DType(name, code) for name, code in _SAFETENSORS_DTYPES.items()})


def read_safetensors(path, lazy, budget):
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        head = file.read(8)
        if len(head) != 8:
            raise CheckpointError(f"{path}: not a safetensors file (too short)")
        (header_size,) = struct.unpack("<Q", head)
        if header_size > min(size - 8, _MAX_SAFETENSORS_HEADER):
            raise CheckpointError(f"{path}: not a safetensors file (bad header size)")
        try:
            header = json.loads(file.read(header_size))
        except (ValueError, RecursionError) as error:  # JSON, UTF-8, nesting
            raise CheckpointError(f"{path}: not a safetensors file ({type(error).__name__}: "
                                  f"{str(error)[:200]})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (the header is a JSON "
                              f"{type(header).__name__}, expected an object of tensors)")
    data_start = 8 + header_size
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise CheckpointError(f"{path}: tensor {name} is described by a JSON "
                                  f"{type(info).__name__}, expected an object")
        code = info.get("dtype")
        dtype = _SAFETENSORS_DTYPE_OBJECTS.get(code) if isinstance(code, str) else None
        if dtype is None:
            raise CheckpointError(f"{path}: tensor {name} has unsupported dtype "
                                  f"{str(code)[:40]}")
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not (_are_indices(shape) and len(shape) <= MAX_NDIM and _are_indices(offsets)
                and len(offsets) == 2):
            raise CheckpointError(f"{path}: tensor {name} needs a shape and two data_offsets, "
                                  "lists of non-negative integers")
        begin, end = offsets
        if not begin <= end <= size - data_start:
            raise CheckpointError(f"{path}: tensor {name} reaches past the end of the file "
                                  "(truncated or corrupt)")
        itemsize = dtype.stored.itemsize
        if end - begin != math.prod(shape) * itemsize:
            raise CheckpointError(f"{path}: tensor {name} has {end - begin} bytes; its shape "
                                  f"{tuple(shape)} needs {math.prod(shape) * itemsize}")
        region = Region(path, data_start + begin, (end - begin) // itemsize, dtype.stored)
        tensors[name] = tensor_at(region, dtype, shape, source=path, lazy=lazy, budget=budget)
    return tensors


def _are_indices(values):
    return isinstance(values, list) and all(map(is_index, values))


def read_npz(path, budget):
    try:
        # Each array's header is checked before numpy allocates what it declares, and the
        # members' sizes are charged to the budget: a deflated one may inflate to a lot.
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                budget.spend(info.file_size)  # at most what numpy will read or inflate
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = np.lib.format.read_array_header_1_0 if version[0] == 1 \
                        else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read_header(member)
                    nbytes, left = math.prod(shape) * dtype.itemsize, \
                        info.file_size - member.tell()
                    if nbytes > left:
                        raise CheckpointError(f"{path}: array {info.filename} declares "
                                              f"{nbytes} bytes but holds {left}")
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except CheckpointError:
        raise
    except (ValueError, OSError, EOFError, KeyError, struct.error, zipfile.BadZipFile,
            NotImplementedError, RuntimeError) as error:
        # RuntimeError: an encrypted member; NotImplementedError: an unknown compression.
        raise CheckpointError(f"{path}: not a readable .npz file ({type(error).__name__}: "
                              f"{str(error)[:200]})") from None
