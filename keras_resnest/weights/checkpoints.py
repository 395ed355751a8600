"""Reading checkpoints without PyTorch: `.pth`/`.pt`, `.safetensors` and `.npz`.

Only the standard library and numpy are used. PyTorch files are pickles; they are unpickled
with an allow-list of exactly the globals a state dict needs (ordered dicts, the tensor and
parameter rebuild functions, the storage types and dtypes). Any other global, `os.system` or
`builtins.eval` for instance, is refused when the unpickler meets it, which is before any call
that could use it, so nothing in a hostile file runs.

Both serialisation formats PyTorch has used are read:

* the zip format (torch >= 1.6): `<archive>/data.pkl` plus one `<archive>/data/<key>` record
  per storage, every member stored uncompressed;
* the legacy format (torch < 1.6 and `_use_new_zipfile_serialization=False`, the format of the
  official 2020 ResNeSt files): a magic-number pickle, a protocol-version pickle, a system-info
  pickle, the object pickle, a pickle of the storage keys, then each storage as an int64
  element count followed by its raw bytes. Storage views (written by torch < 0.4) are read.

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
import _compat_pickle
import collections
import io
import json
import math
import os
import pickle
import pickletools
import struct
import types
import zipfile
import zlib

import numpy as np

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
NPZ_SUFFIX = ".npz"

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... name length, extra length
_WRAPPER_KEYS = ("state_dict", "model")
_IGNORED_SUFFIXES = ("num_batches_tracked",)

# Limits far above any real checkpoint and far below what would hurt.
_MAX_NESTING = 100  # containers in containers (a state dict nests 2 to 5 deep)
_MAX_NDIM = 32  # numpy 1's limit (numpy 2 allows 64)
_MAX_EMPTY_ELEMENTS = 2**48  # product of the nonzero dimensions of an empty tensor
_MAX_SAFETENSORS_HEADER = 100 * 2**20  # the safetensors format's own limit
# Eager reads return at most this much per byte of file (+ a constant): a file whose tensors
# all view the same stored data would otherwise return one copy of it per tensor.
_EAGER_BYTES_PER_FILE_BYTE = 4
_EAGER_BYTES_EXTRA = 64 * 2**20


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: wrong format, truncated, or not a state dict."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that asks for a global outside the state-dict allow-list, or tries to change
    one of the allow-list's objects."""


class _Malformed(Exception):
    """Raised while unpickling, where the file's name is not at hand; becomes CheckpointError."""


class _Refused(Exception):
    """Like _Malformed, for a pickle that acts against the reader; becomes UnsafeCheckpointError."""


# --------------------------------------------------------------------------------------------
# Objects a pickle can reach


class _Sealed:
    """Base of the reader's objects that a pickle can reach: it cannot set their state.

    The pickle opcode BUILD sets attributes of the object below it (through `__setstate__`
    when the object has one). Allow-list objects are shared by every load in the process: a
    file that set `is_bfloat16` on `torch.FloatStorage` would corrupt every later checkpoint.
    A state dict only BUILDs its ordered dicts (their `_metadata`).
    """

    __slots__ = ()

    def __setstate__(self, state):
        raise _Refused(f"the pickle tries to change {self!r} (a BUILD opcode); a state dict "
                       "only sets the state of ordered dicts")


class _ReadOnly(_Sealed):
    """A _Sealed object that not even the reader can change after `__init__`."""

    __slots__ = ()

    def __init__(self, **attributes):
        for name, value in attributes.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"{self!r} is read-only")

    def __delattr__(self, name):
        raise AttributeError(f"{self!r} is read-only")


_BF16 = "bfloat16"  # stored as uint16, widened to float32 when read


class _DType(_ReadOnly):
    """A torch storage type or dtype met in a pickle: how its bytes are stored and read."""

    __slots__ = ("name", "is_bfloat16", "stored", "logical")

    def __init__(self, name, code):
        is_bfloat16 = code == _BF16
        super().__init__(name=name, is_bfloat16=is_bfloat16,
                         stored=np.dtype("<u2" if is_bfloat16 else code),  # bytes in the file
                         logical=np.dtype("<f4" if is_bfloat16 else code))  # what a reader gets

    def finish(self, array):
        if self.is_bfloat16:  # bfloat16 is the upper half of a float32
            return (array.astype(np.uint32) << 16).view(np.float32)
        return array

    def __repr__(self):
        return self.name


class _Function(_ReadOnly):
    """An allowed function as a pickle sees it: callable, with no attributes to set (a plain
    function's `__defaults__` could be replaced by a BUILD)."""

    __slots__ = ("name", "function")

    def __init__(self, name, function):
        super().__init__(name=name, function=function)

    def __call__(self, *args):
        return self.function(*args)

    def __repr__(self):
        return self.name


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


class _StorageRef(_Sealed):
    __slots__ = ("key", "dtype", "view")

    def __init__(self, key, dtype, view=None):
        self.key, self.dtype, self.view = key, dtype, view

    def __repr__(self):
        return f"storage {self.key}"


class _TensorRef(_Sealed):
    __slots__ = ("storage", "offset", "size", "stride", "dtype")

    def __init__(self, storage, offset, size, stride, dtype=None):
        if not isinstance(storage, _StorageRef):
            raise _Malformed("a tensor without a storage")
        if dtype is not None and not isinstance(dtype, _DType):
            raise _Malformed("a tensor whose dtype is not a torch dtype")
        size = _indices(size, "size")
        stride = _indices(stride, "stride")
        if len(stride) != len(size) or len(size) > _MAX_NDIM:
            raise _Malformed(f"a tensor with {len(size)} dimensions and {len(stride)} strides")
        (offset,) = _indices((offset,), "storage offset")
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.dtype = dtype or storage.dtype

    def __repr__(self):
        return "a tensor"


def _is_index(value):
    """A size, stride or offset as torch writes them: a plain int in int64's range (also
    keeps error messages short: a pickle's int can have millions of digits)."""
    return type(value) is int and 0 <= value < 2**63


def _indices(values, what):
    """`values` as a tuple of _is_index ints, or _Malformed."""
    if not (isinstance(values, (tuple, list)) and all(map(_is_index, values))):
        raise _Malformed(f"a tensor {what} that is not a tuple of non-negative integers")
    return tuple(values)


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


def _allowed(module, name, value):
    if callable(value) and not isinstance(value, type):
        value = _Function(f"{module}.{name}", value)
    return (module, name), value


# (module, name) -> object. This is the whole allow-list, read-only; every value is
# _ReadOnly except OrderedDict, a built-in type whose attributes cannot be set.
_ALLOWED_GLOBALS = types.MappingProxyType(dict([
    _allowed("collections", "OrderedDict", collections.OrderedDict),
    _allowed("torch._utils", "_rebuild_tensor", _rebuild_tensor),
    _allowed("torch._utils", "_rebuild_tensor_v2", _rebuild_tensor_v2),
    _allowed("torch._utils", "_rebuild_tensor_v3", _rebuild_tensor_v3),
    _allowed("torch._utils", "_rebuild_parameter", _rebuild_parameter),
    *(_allowed("torch", name, _DType(f"torch.{name}", code))
      for name, code in _STORAGE_TYPES.items()),
    _allowed("torch.storage", "UntypedStorage", _DType("torch.storage.UntypedStorage", "u1")),
    *(_allowed("torch", name, _DType(f"torch.{name}", code))
      for name, code in _TORCH_DTYPES.items()),
]))
_SAFETENSORS_DTYPE_OBJECTS = types.MappingProxyType(
    {name: _DType(name, code) for name, code in _SAFETENSORS_DTYPES.items()})


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
    """`count` values of `dtype` at byte `offset` of a file, checked to lie inside it."""

    __slots__ = ("path", "offset", "count", "dtype", "big_endian")

    def __init__(self, path, offset, count, dtype, big_endian=False):
        self.path, self.offset, self.count = path, offset, count
        self.dtype, self.big_endian = dtype, big_endian

    def part(self, start, count, dtype=None):
        """The `count` values from value `start` on, as `dtype` (default: this region's)."""
        dtype = self.dtype if dtype is None else dtype
        return _Region(self.path, self.offset + start * self.dtype.itemsize, count, dtype,
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


class _Budget:
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


def _tensor(region, dtype, shape, offset=0, stride=None, source="checkpoint", lazy=False,
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


# --------------------------------------------------------------------------------------------
# PyTorch pickles


_TUPLE_OPCODES = {"EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "FROZENSET"}
_PUT_OPCODES = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}
_GET_OPCODES = {"GET", "BINGET", "LONG_BINGET"}


def _stack_effect(opcode):
    """(takes the items above the last mark, items taken below it, items pushed, builds a
    tuple) from pickletools' documentation of `opcode`."""
    before = opcode.stack_before
    takes_mark = pickletools.markobject in before
    below = before.index(pickletools.markobject) if takes_mark else len(before)
    return takes_mark, below, len(opcode.stack_after), opcode.name in _TUPLE_OPCODES


_STACK_EFFECTS = {opcode.name: _stack_effect(opcode) for opcode in pickletools.opcodes}


class _BoundedReads:
    """Reads of the rest of a file, never asking for more than is left: a pickle's declared
    lengths are not trusted (a buffered read(n) allocates n bytes before reading)."""

    def __init__(self, file, size):
        self.file, self.left = file, size - file.tell()

    def read(self, n):
        data = self.file.read(min(n, self.left))
        self.left -= len(data)
        return data

    def readline(self):
        line = self.file.readline(min(65536, self.left))  # no real pickle line comes near
        self.left -= len(line)
        return line


def _scan_pickle(stream, source):
    """Walks one pickle's opcodes up to STOP, building nothing, before it is unpickled.

    The C unpickler trusts a pickle's numbers: it allocates a declared byte count before
    reading the bytes, grows its memo to a declared index (8 bytes per index: one 6-byte
    opcode asks for 32 GB), and hashes tuples recursively (a dict key of 200000 nested
    tuples, one byte per level, overflows the C stack). Here every argument must be present
    (pickletools reads it), memo indices stay below the opcode count and tuples nest at most
    _MAX_NESTING deep; the stack is simulated with the opcodes' documented effects.
    """
    stack, marks, memo = [], [], {}  # stack and memo hold tuple nesting depths
    try:
        for count, (opcode, arg, _) in enumerate(pickletools.genops(stream)):
            name = opcode.name
            if name == "MARK":
                marks.append(len(stack))
            elif name in _PUT_OPCODES:
                index = len(memo) if name == "MEMOIZE" else arg
                if index > count:
                    raise _Malformed(f"memo index {index} at opcode {count}")
                memo[index] = stack[-1]
            elif name in _GET_OPCODES:
                stack.append(memo.get(arg, 0))
            elif name == "DUP":
                stack.append(stack[-1])
            else:
                takes_mark, below, pushes, is_tuple = _STACK_EFFECTS[name]
                taken = []
                if takes_mark:
                    if not marks:
                        raise _Malformed(f"opcode {count} ({name}) without a MARK before it")
                    mark = marks.pop()
                    taken, stack[mark:] = stack[mark:], []
                if below:
                    if len(stack) < below:
                        raise _Malformed(f"opcode {count} ({name}) takes more than the stack has")
                    taken += stack[-below:]
                    del stack[-below:]
                depth = 1 + max(taken, default=0) if is_tuple else 0
                if depth > _MAX_NESTING:
                    raise _Malformed(f"tuples nested more than {_MAX_NESTING} deep")
                stack.extend([depth] * pushes)
    except (_Malformed, ValueError, IndexError) as error:
        # IndexError: a PUT or DUP with an empty stack.
        raise CheckpointError(f"{source}: not a readable PyTorch checkpoint (malformed "
                              f"pickle: {str(error)[:200] or type(error).__name__})") from None


class _StateDictUnpickler(pickle.Unpickler):
    """An unpickler that knows only the globals of a state dict."""

    def __init__(self, file, source):
        super().__init__(file)
        self._source = source
        self.storage_dtypes = {}  # key -> _DType, of every storage the pickle names

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
        # ('storage', storage type, key, location, numel[, view]); view: torch < 0.4 only.
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _DType) and isinstance(pid[2], str)
                and len(pid[2]) <= 256):  # torch's keys: "0", "1", ... or a number
            raise _Malformed("a persistent id that is not a torch storage")
        view = pid[5] if len(pid) == 6 else None
        if view is not None and not (isinstance(view, tuple) and len(view) == 3
                                     and _is_index(view[1]) and _is_index(view[2])):
            raise _Malformed(f"storage {pid[2]} has a malformed view (expected a key, an "
                             "offset and a size)")
        if self.storage_dtypes.setdefault(pid[2], pid[1]).stored != pid[1].stored:
            raise _Malformed(f"storage {pid[2]} is declared with two dtypes")
        return _StorageRef(pid[2], pid[1], view)


def _unpickle(data, source):
    """(object, {storage key: _DType}) of a pickle held in `data`, after _scan_pickle."""
    unpickler = _StateDictUnpickler(io.BytesIO(data), source)
    try:
        return unpickler.load(), unpickler.storage_dtypes
    except CheckpointError:
        raise
    except _Refused as error:
        raise UnsafeCheckpointError(
            f"{source}: refusing to load: {error}. The reader is unchanged.") from None
    except _Malformed as error:
        raise CheckpointError(f"{source}: not a readable PyTorch checkpoint ({error})") \
            from None
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError,
            KeyError, ValueError, struct.error, OverflowError, RecursionError) as error:
        raise CheckpointError(f"{source}: not a readable PyTorch checkpoint "
                              f"({type(error).__name__}: {str(error)[:200]})") from None


def _read_pickle(file, size, source):
    """The bytes of the pickle at `file`'s position (through its STOP), scanned first."""
    start = file.tell()
    reads = _BoundedReads(file, size)
    _scan_pickle(reads, source)
    file.seek(start)
    return file.read(size - reads.left - start)


def _walk(obj, resolve, source):
    """`obj` with every `_TensorRef` in its dicts/lists/tuples replaced by `resolve(ref)`.

    A pickle can reuse an object any number of times through its memo: 40 nested lists, each
    holding the next one twice, are 2 KB and 2**40 paths. Each object is converted once (by
    id; the originals stay alive in `obj`, so no id is reused), so the work is the size of
    the pickle, not of the tree it unfolds to. A container that holds itself and nesting
    deeper than _MAX_NESTING are refused (before Python's recursion limit).
    """
    done, open_ids = {}, set()

    def convert(obj, depth):
        if not isinstance(obj, (_TensorRef, dict, list, tuple)):
            return obj
        key = id(obj)
        if key in done:
            return done[key]
        if isinstance(obj, _TensorRef):
            result = resolve(obj)
        else:
            if key in open_ids:
                raise CheckpointError(f"{source}: a {type(obj).__name__} that contains "
                                      "itself; a state dict has no cycles")
            if depth >= _MAX_NESTING:
                raise CheckpointError(f"{source}: containers nested more than {_MAX_NESTING} "
                                      "deep; a state dict nests a few levels")
            open_ids.add(key)
            if isinstance(obj, dict):
                result = {k: convert(v, depth + 1) for k, v in obj.items()}
            else:
                result = type(obj)(convert(v, depth + 1) for v in obj)
            open_ids.discard(key)
        done[key] = result
        return result

    return convert(obj, 0)


def _torch_tensor(ref, region, source, lazy, budget):
    """The tensor `ref` of a torch file whose storage data is `region`."""
    dtype = ref.dtype
    if region.dtype != dtype.stored:
        # An untyped (byte) storage read with a tensor dtype (`_rebuild_tensor_v3`).
        if region.dtype.itemsize != 1:
            raise CheckpointError(f"{source}: storage {ref.storage.key} is read as two dtypes")
        region = region.part(0, region.count // dtype.stored.itemsize, dtype.stored)
    return _tensor(region, dtype, ref.size, ref.offset, ref.stride, source, lazy, budget)


def _stored_member(file, size, info, path):
    """(byte offset, byte count) of a zip member's data in the file, checked.

    Only stored members are read. torch.save never compresses; inflating a member would
    trust the size the archive declares (a 1 MB file can inflate to 1 GB of zeros).
    """
    name = info.filename
    if info.compress_type != zipfile.ZIP_STORED:
        raise CheckpointError(
            f"{path}: zip member {name} is compressed (zip method {info.compress_type}); "
            "torch.save() stores every member uncompressed, so the file was not written by "
            "torch and is not read")
    if info.flag_bits & 0x1:
        raise CheckpointError(f"{path}: zip member {name} is encrypted")
    if info.compress_size != info.file_size or not 0 <= info.header_offset < size:
        raise CheckpointError(f"{path}: zip member {name} has a corrupt directory entry")
    file.seek(info.header_offset)
    header = file.read(_ZIP_LOCAL_HEADER.size)
    if len(header) != _ZIP_LOCAL_HEADER.size:
        raise CheckpointError(f"{path}: file is truncated ({name})")
    signature, name_length, extra_length = _ZIP_LOCAL_HEADER.unpack(header)
    if signature != b"PK\x03\x04":
        raise CheckpointError(f"{path}: corrupt zip member {name}")
    offset = info.header_offset + _ZIP_LOCAL_HEADER.size + name_length + extra_length
    if offset + info.file_size > size:
        raise CheckpointError(f"{path}: file is truncated ({name})")
    return offset, info.file_size


def _read_torch_zip(path, lazy, budget):
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        try:
            with zipfile.ZipFile(file) as archive:
                members = {info.filename: info for info in archive.infolist()}
        except (zipfile.BadZipFile, ValueError, struct.error, EOFError, OverflowError,
                OSError) as error:
            raise CheckpointError(f"{path}: corrupt zip file ({error})") from None
        pickles = [name for name in members if name.endswith("data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(
                f"{path}: a zip file without exactly one data.pkl; not a torch.save() file "
                "(TorchScript archives are not supported)")

        def member_bytes(name):
            offset, length = _stored_member(file, size, members[name], path)
            file.seek(offset)
            return file.read(length)

        prefix = pickles[0][: -len("data.pkl")]
        data = member_bytes(pickles[0])
        if zlib.crc32(data) != members[pickles[0]].CRC:
            raise CheckpointError(f"{path}: {pickles[0]} is corrupt (CRC mismatch)")
        byteorder = member_bytes(prefix + "byteorder") if prefix + "byteorder" in members \
            else b"little"
        if byteorder not in (b"little", b"big"):
            raise CheckpointError(f"{path}: byteorder record says {byteorder[:20]!r}; "
                                  "expected 'little' or 'big'")
        _scan_pickle(io.BytesIO(data), path)
        obj, dtypes = _unpickle(data, path)

        regions = {}
        for key, dtype in dtypes.items():
            name = f"{prefix}data/{key}"
            if name not in members:
                raise CheckpointError(f"{path}: storage record {name} is missing")
            offset, length = _stored_member(file, size, members[name], path)
            regions[key] = _Region(path, offset, length // dtype.stored.itemsize,
                                   dtype.stored, byteorder == b"big")

    def resolve(ref):
        if ref.storage.view is not None:
            raise CheckpointError(f"{path}: storage {ref.storage.key} is a view; views exist "
                                  "only in legacy (torch < 0.4) files")
        return _torch_tensor(ref, regions[ref.storage.key], path, lazy, budget)

    return _walk(obj, resolve, path)


def _read_torch_legacy(path, lazy, budget):
    size = os.path.getsize(path)

    def load(file):
        return _unpickle(_read_pickle(file, size, path), path)

    with open(path, "rb") as file:
        (magic, _), (protocol, _), (sys_info, _) = load(file), load(file), load(file)
        if magic != _LEGACY_MAGIC:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (bad magic number)")
        if protocol != _LEGACY_PROTOCOL:
            raise CheckpointError(f"{path}: unsupported legacy protocol version {protocol}")
        big_endian = isinstance(sys_info, dict) and not sys_info.get("little_endian", True)
        obj, dtypes = load(file)
        keys, _ = load(file)
        if not (isinstance(keys, list) and all(isinstance(key, str) for key in keys)):
            raise CheckpointError(f"{path}: malformed storage key list")

        # Each storage: an int64 count of elements (of its dtype), then the data.
        regions = {}
        for key in keys:
            if key not in dtypes:
                raise CheckpointError(f"{path}: storage {key} is listed but never used")
            head = file.read(8)
            if len(head) != 8:
                raise CheckpointError(f"{path}: file is truncated (storage {key} is missing)")
            (count,) = struct.unpack(">q" if big_endian else "<q", head)
            dtype = dtypes[key].stored
            offset = file.tell()
            if count < 0 or offset + count * dtype.itemsize > size:
                raise CheckpointError(f"{path}: file is truncated (storage {key} is short)")
            regions[key] = _Region(path, offset, count, dtype, big_endian)
            file.seek(offset + count * dtype.itemsize)

    def resolve(ref):
        storage = ref.storage
        if storage.key not in regions:
            raise CheckpointError(f"{path}: storage {storage.key} is missing")
        region = regions[storage.key]  # the key of a view is its root storage's
        if storage.view is not None:
            # (view key, offset, size): a part of the root storage, in its elements, as
            # torch's legacy loader reads it. The tensor is then placed inside the part.
            _, start, count = storage.view
            if start + count > region.count:
                raise CheckpointError(
                    f"{path}: a view of storage {storage.key} ({count} elements from "
                    f"{start}) reaches past it ({region.count} elements)")
            region = region.part(start, count)
        return _torch_tensor(ref, region, path, lazy, budget)

    return _walk(obj, resolve, path)


def _read_torch(path, lazy, budget):
    if zipfile.is_zipfile(path):
        return _read_torch_zip(path, lazy, budget)
    with open(path, "rb") as file:
        start = file.read(1)
    if start != b"\x80":  # every pickle of protocol >= 2 starts with PROTO
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither zip nor pickle)")
    return _read_torch_legacy(path, lazy, budget)


# --------------------------------------------------------------------------------------------
# safetensors and npz


def _read_safetensors(path, lazy, budget):
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
        if not (_are_indices(shape) and len(shape) <= _MAX_NDIM and _are_indices(offsets)
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
        region = _Region(path, data_start + begin, (end - begin) // itemsize, dtype.stored)
        tensors[name] = _tensor(region, dtype, shape, source=path, lazy=lazy, budget=budget)
    return tensors


def _are_indices(values):
    return isinstance(values, list) and all(map(_is_index, values))


def _read_npz(path, budget):
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


# --------------------------------------------------------------------------------------------
# Entry points


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
    budget = _Budget(path)
    if lower.endswith(NPZ_SUFFIX):
        return _read_npz(path, budget)
    budget = None if lazy else budget
    if lower.endswith(SAFETENSORS_SUFFIX):
        return _read_safetensors(path, lazy, budget)
    return _read_torch(path, lazy, budget)


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
