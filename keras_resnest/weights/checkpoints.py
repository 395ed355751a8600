"""Reading checkpoints without PyTorch: `.pth`/`.pt`, `.safetensors` and `.npz`.

Only the standard library and numpy are used. PyTorch files are pickles; they are unpickled
with an allow-list of exactly the globals a state dict needs (ordered dicts, the tensor and
parameter rebuild functions, the storage types and dtypes). Any other global, `os.system` or
`builtins.eval` for instance, is refused when the unpickler meets it, which is before any call
that could use it, so nothing in a hostile file runs.

Both serialisation formats PyTorch has used are read:

* the zip format (torch >= 1.6): `<archive>/data.pkl` plus one `<archive>/data/<key>` record
  per storage;
* the legacy format (torch < 1.6 and `_use_new_zipfile_serialization=False`, the format of the
  official 2020 ResNeSt files): a magic-number pickle, a protocol-version pickle, a system-info
  pickle, the object pickle, a pickle of the storage keys, then each storage as an int64
  element count followed by its raw bytes.

In every format a tensor's data is a region of the file, located (and bounds-checked) while
parsing and read with one `readinto` into its array. With `lazy=True` the reading waits until
the tensor is converted (`np.asarray`), so a converter holds one tensor at a time.

`read_state_dict` is the entry point: `{name: numpy array}` with a `{"state_dict": ...}` /
`{"model": ...}` wrapper and DataParallel's `module.` prefix removed and `num_batches_tracked`
dropped.

Example:
    >>> state = read_state_dict("resnest50-528c19ca.pth")   # doctest: +SKIP
    >>> state["conv1.0.weight"].shape                        # doctest: +SKIP
    (32, 3, 3, 3)
"""
import _compat_pickle
import collections
import json
import os
import pickle
import struct
import zipfile

import numpy as np

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
NPZ_SUFFIX = ".npz"

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... name length, extra length
_WRAPPER_KEYS = ("state_dict", "model")
_IGNORED_SUFFIXES = ("num_batches_tracked",)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: wrong format, truncated, or not a state dict."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that asks for a global outside the state-dict allow-list."""


# --------------------------------------------------------------------------------------------
# dtypes

_BF16 = "bfloat16"  # stored as uint16, widened to float32 when read

# torch storage class -> (dtype of the stored bytes, logical dtype)
_STORAGE_TYPES = {
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2",
    "BFloat16Storage": _BF16, "LongStorage": "<i8", "IntStorage": "<i4",
    "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
    "UntypedStorage": "u1",
}
# torch dtype attribute (pickled as the global `torch.<name>`)
_TORCH_DTYPES = {
    "float64": "<f8", "float32": "<f4", "float16": "<f2", "bfloat16": _BF16, "int64": "<i8",
    "int32": "<i4", "int16": "<i2", "int8": "i1", "uint8": "u1", "bool": "?",
}
_SAFETENSORS_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": _BF16, "I64": "<i8", "I32": "<i4",
    "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}


class _DType:
    """A torch storage type or dtype met in a pickle: how its bytes are stored and read."""

    def __init__(self, code):
        self.is_bfloat16 = code == _BF16
        self.stored = np.dtype("<u2" if self.is_bfloat16 else code)  # bytes in the file
        self.logical = np.dtype("<f4" if self.is_bfloat16 else code)  # what a reader gets

    def finish(self, array):
        if self.is_bfloat16:  # bfloat16 is the upper half of a float32
            return (array.astype(np.uint32) << 16).view(np.float32)
        return array


# --------------------------------------------------------------------------------------------
# Tensors as file regions


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


class _Region:
    """`count` values of `dtype` at byte `offset` of a file (or a compressed zip member)."""

    __slots__ = ("path", "offset", "count", "dtype", "big_endian", "zip_member")

    def __init__(self, path, offset, count, dtype, big_endian=False, zip_member=None):
        self.path, self.offset, self.count = path, offset, count
        self.dtype, self.big_endian, self.zip_member = dtype, big_endian, zip_member

    def read(self, start=0, count=None):
        """Values `start .. start+count` as a fresh, writable, native-order array."""
        count = self.count - start if count is None else count
        dtype = self.dtype.newbyteorder(">") if self.big_endian else self.dtype
        array = np.empty(count, dtype)
        nbytes = array.nbytes
        if self.zip_member is not None:  # a compressed member: no random access
            with zipfile.ZipFile(self.path) as archive:
                raw = archive.read(self.zip_member)
            array[:] = np.frombuffer(raw, dtype, count=count, offset=start * dtype.itemsize)
        else:
            with open(self.path, "rb") as file:
                file.seek(self.offset + start * dtype.itemsize)
                if file.readinto(memoryview(array).cast("B")) != nbytes:
                    raise CheckpointError(f"{self.path}: file is truncated")
        return array.astype(self.dtype) if self.big_endian else array


def _tensor(region, dtype, shape, offset=0, stride=None, source="checkpoint", lazy=False):
    """A tensor (eager array or LazyTensor) of `shape` inside `region`, after a bounds check.

    `offset` and `stride` are in elements, as torch stores them; None means contiguous.
    """
    shape = tuple(int(s) for s in shape)
    contiguous = tuple(int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(len(shape)))
    stride = contiguous if stride is None else tuple(int(s) for s in stride)
    numel = int(np.prod(shape, dtype=np.int64))
    if numel:
        extent = sum((s - 1) * st for s, st in zip(shape, stride)) + 1
        if offset < 0 or min(stride, default=0) < 0 or offset + extent > region.count:
            raise CheckpointError(
                f"{source}: a tensor of shape {shape} reaches past its data ({region.count} "
                "elements); the file is truncated or corrupt")
    else:
        extent = 0
    is_contiguous = all(st == c or s == 1 for s, st, c in zip(shape, stride, contiguous))

    def read():
        flat = region.read(offset, extent)
        if is_contiguous:
            array = flat.reshape(shape)
        else:
            array = np.lib.stride_tricks.as_strided(
                flat, shape=shape, strides=[st * flat.itemsize for st in stride]).copy()
        return dtype.finish(array)

    return LazyTensor(shape, dtype.logical, read) if lazy else read()


# --------------------------------------------------------------------------------------------
# PyTorch pickles


class _StorageRef:
    __slots__ = ("key", "dtype", "numel", "view")

    def __init__(self, key, dtype, numel, view=None):
        self.key, self.dtype, self.numel, self.view = key, dtype, numel, view


class _TensorRef:
    __slots__ = ("storage", "offset", "size", "stride", "dtype")

    def __init__(self, storage, offset, size, stride, dtype=None):
        if not isinstance(storage, _StorageRef):
            raise CheckpointError("malformed checkpoint: a tensor without a storage")
        self.storage, self.offset, self.size, self.stride = storage, int(offset), size, stride
        self.dtype = dtype if isinstance(dtype, _DType) else storage.dtype


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       metadata=None):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    return _TensorRef(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    return data


# (module, name) -> object. This is the whole allow-list.
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _DType(code) for name, code in _STORAGE_TYPES.items()},
    ("torch.storage", "UntypedStorage"): _DType("u1"),
    **{("torch", name): _DType(code) for name, code in _TORCH_DTYPES.items()},
}


class _StateDictUnpickler(pickle.Unpickler):
    """An unpickler that knows only the globals of a state dict."""

    def __init__(self, file, source):
        super().__init__(file)
        self._source = source

    def find_class(self, module, name):
        # Protocol-2 pickles (the torch default) spell Python 3 modules the Python 2 way.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafeCheckpointError(
                f"{self._source}: refusing to load: the pickle asks for the global "
                f"'{module}.{name}', which is not part of a state dict (allowed: ordered "
                "dicts, tensor and parameter rebuild functions, storage types, dtypes). "
                "Nothing from the file was run. If you trust the file, re-save only the "
                "model's state_dict() with PyTorch.")
        return allowed

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _DType)):
            raise CheckpointError(f"{self._source}: unsupported persistent id {pid!r:.80}")
        view = pid[5] if len(pid) == 6 else None
        return _StorageRef(str(pid[2]), pid[1], int(pid[4]), view)


def _unpickle(file, source):
    try:
        return _StateDictUnpickler(file, source).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError,
            KeyError, ValueError, struct.error) as error:
        raise CheckpointError(f"{source}: not a readable PyTorch checkpoint ({error})") from None


def _walk(obj, resolve):
    """Replaces every `_TensorRef` in nested dicts/lists/tuples with `resolve(ref)`."""
    if isinstance(obj, _TensorRef):
        return resolve(obj)
    if isinstance(obj, dict):
        return {key: _walk(value, resolve) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_walk(value, resolve) for value in obj)
    return obj


def _torch_tensor(ref, region, element_offset, source, lazy):
    """The tensor `ref` of a torch file whose storage data is `region`."""
    dtype = ref.dtype
    if region.dtype != dtype.stored:
        # An untyped (byte) storage read with a tensor dtype (`_rebuild_tensor_v3`).
        if region.dtype.itemsize != 1 or region.zip_member is not None:
            raise CheckpointError(f"{source}: storage {ref.storage.key} is read as two dtypes")
        region = _Region(region.path, region.offset, region.count // dtype.stored.itemsize,
                         dtype.stored, region.big_endian)
    return _tensor(region, dtype, ref.size, element_offset + ref.offset, ref.stride, source,
                   lazy)


def _zip_data_offset(file, info):
    """Byte offset of a stored zip member's data (after its local header)."""
    file.seek(info.header_offset)
    signature, name_length, extra_length = _ZIP_LOCAL_HEADER.unpack(
        file.read(_ZIP_LOCAL_HEADER.size))
    if signature != b"PK\x03\x04":
        raise CheckpointError(f"corrupt zip member {info.filename}")
    return info.header_offset + _ZIP_LOCAL_HEADER.size + name_length + extra_length


def _read_torch_zip(path, lazy):
    try:
        with zipfile.ZipFile(path) as archive, open(path, "rb") as file:
            names = archive.namelist()
            pickles = [name for name in names if name.endswith("data.pkl")]
            if len(pickles) != 1:
                raise CheckpointError(
                    f"{path}: a zip file without exactly one data.pkl; not a torch.save() file "
                    "(TorchScript archives are not supported)")
            prefix = pickles[0][: -len("data.pkl")]
            big_endian = prefix + "byteorder" in names and \
                archive.read(prefix + "byteorder").decode().strip() == "big"
            with archive.open(pickles[0]) as pickled:
                obj = _unpickle(pickled, path)

            regions = {}

            def region_of(storage):
                if storage.key not in regions:
                    name = f"{prefix}data/{storage.key}"
                    try:
                        info = archive.getinfo(name)
                    except KeyError:
                        raise CheckpointError(f"{path}: storage record {name} is missing") \
                            from None
                    dtype = storage.dtype.stored
                    count = info.file_size // dtype.itemsize
                    if info.compress_type == zipfile.ZIP_STORED:
                        offset = _zip_data_offset(file, info)
                        if offset + info.file_size > os.path.getsize(path):
                            raise CheckpointError(f"{path}: file is truncated ({name})")
                        regions[storage.key] = _Region(path, offset, count, dtype, big_endian)
                    else:
                        regions[storage.key] = _Region(path, 0, count, dtype, big_endian,
                                                       zip_member=name)
                return regions[storage.key]

            return _walk(obj, lambda ref: _torch_tensor(ref, region_of(ref.storage), 0, path,
                                                        lazy))
    except zipfile.BadZipFile as error:
        raise CheckpointError(f"{path}: corrupt zip file ({error})") from None


def _read_torch_legacy(path, lazy):
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        magic, protocol, sys_info = (_unpickle(file, path) for _ in range(3))
        if magic != _LEGACY_MAGIC:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (bad magic number)")
        if protocol != _LEGACY_PROTOCOL:
            raise CheckpointError(f"{path}: unsupported legacy protocol version {protocol}")
        big_endian = isinstance(sys_info, dict) and not sys_info.get("little_endian", True)

        refs = []
        obj = _walk(_unpickle(file, path), lambda ref: refs.append(ref) or ref)
        keys = _unpickle(file, path)
        if not isinstance(keys, list):
            raise CheckpointError(f"{path}: malformed storage key list")
        # The storage types: from the tensors (a view's data is its root storage's).
        dtypes = {}
        for ref in refs:
            root = str(ref.storage.view[0]) if ref.storage.view else ref.storage.key
            dtypes.setdefault(root, ref.storage.dtype.stored)

        # Locate each storage: an int64 element count, then the data.
        regions = {}
        for key in map(str, keys):
            head = file.read(8)
            if len(head) != 8:
                raise CheckpointError(f"{path}: file is truncated (storage {key} is missing)")
            (count,) = struct.unpack(">q" if big_endian else "<q", head)
            dtype = dtypes.get(key, np.dtype("u1"))
            offset = file.tell()
            if count < 0 or offset + count * dtype.itemsize > size:
                raise CheckpointError(f"{path}: file is truncated (storage {key} is short)")
            regions[key] = _Region(path, offset, count, dtype, big_endian)
            file.seek(offset + count * dtype.itemsize)

    def resolve(ref):
        storage = ref.storage
        root, element_offset = storage.key, 0
        if storage.view:
            root = str(storage.view[0])
            element_offset = int(storage.view[1]) // storage.dtype.stored.itemsize
        if root not in regions:
            raise CheckpointError(f"{path}: storage {root} is missing")
        return _torch_tensor(ref, regions[root], element_offset, path, lazy)

    return _walk(obj, resolve)


def _read_torch(path, lazy):
    if zipfile.is_zipfile(path):
        return _read_torch_zip(path, lazy)
    with open(path, "rb") as file:
        start = file.read(1)
    if start != b"\x80":  # every pickle of protocol >= 2 starts with PROTO
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither zip nor pickle)")
    return _read_torch_legacy(path, lazy)


# --------------------------------------------------------------------------------------------
# safetensors and npz


def _read_safetensors(path, lazy):
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        head = file.read(8)
        if len(head) != 8:
            raise CheckpointError(f"{path}: not a safetensors file (too short)")
        (header_size,) = struct.unpack("<Q", head)
        if header_size > size - 8:
            raise CheckpointError(f"{path}: not a safetensors file (bad header size)")
        try:
            header = json.loads(file.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{path}: not a safetensors file ({error})") from None
    data_start = 8 + header_size
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        code = _SAFETENSORS_DTYPES.get(info.get("dtype"))
        if code is None:
            raise CheckpointError(f"{path}: tensor {name} has unsupported dtype "
                                  f"{info.get('dtype')}")
        dtype = _DType(code)
        begin, end = info["data_offsets"]
        count = (end - begin) // dtype.stored.itemsize
        if data_start + end > size:
            raise CheckpointError(f"{path}: tensor {name} reaches past the end of the file "
                                  "(truncated or corrupt)")
        region = _Region(path, data_start + begin, count, dtype.stored)
        tensors[name] = _tensor(region, dtype, info["shape"], source=path, lazy=lazy)
    return tensors


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path}: not a readable .npz file ({error})") from None


# --------------------------------------------------------------------------------------------
# Entry points


def read_checkpoint(path, lazy=False):
    """Reads a checkpoint file as stored: nested dicts/lists of numpy arrays.

    With `lazy=True`, tensors are `LazyTensor`s, read when converted with `np.asarray` (not
    for `.npz`, which is always read eagerly).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such checkpoint: {path}")
    lower = path.lower()
    if lower.endswith(SAFETENSORS_SUFFIX):
        return _read_safetensors(path, lazy)
    if lower.endswith(NPZ_SUFFIX):
        return _read_npz(path)
    return _read_torch(path, lazy)


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


__all__ = [
    "CheckpointError",
    "LazyTensor",
    "UnsafeCheckpointError",
    "is_torch_free_checkpoint",
    "normalize_state_dict",
    "read_checkpoint",
    "read_state_dict",
]
