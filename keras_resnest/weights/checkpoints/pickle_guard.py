"""The pickle guard: what a PyTorch pickle may ask for, and the unpickler that enforces it.

PyTorch files are pickles, and unpickling runs whatever globals a pickle names. Here a pickle
is first scanned (`scan_pickle`: every argument present, memo indices and tuple nesting
bounded), then unpickled by `_StateDictUnpickler`, which knows only `ALLOWED_GLOBALS`: ordered
dicts, the tensor and parameter rebuild functions, the storage types and dtypes. Any other
global, `os.system` or `builtins.eval` for instance, is refused when the unpickler meets it,
which is before any call that could use it, so nothing in a hostile file runs.

The objects a pickle can reach are `_Sealed` (a BUILD opcode cannot set their state) and the
allow-list's are `_ReadOnly` (not even the reader changes them), so one file cannot change how
the next is read. The unpickled tree is then walked once per object (`resolve_refs`), which replaces
each `_TensorRef` by its tensor; the torch container readers locate the tensors.
"""
import _compat_pickle
import collections
import io
import pickle
import pickletools
import struct
import types

import numpy as np

from keras_resnest.weights.checkpoints.errors import (
    CheckpointError,
    Malformed,
    Refused,
    UnsafeCheckpointError,
)
from keras_resnest.weights.checkpoints.extents import MAX_NDIM, is_index

_MAX_NESTING = 100  # containers in containers (a state dict nests 2 to 5 deep)


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
        raise Refused(f"the pickle tries to change {self!r} (a BUILD opcode); a state dict "
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


BF16 = "bfloat16"  # stored as uint16, widened to float32 when read


class DType(_ReadOnly):
    """A torch storage type or dtype met in a pickle: how its bytes are stored and read."""

    __slots__ = ("name", "is_bfloat16", "stored", "logical")

    def __init__(self, name, code):
        is_bfloat16 = code == BF16
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
    "BFloat16Storage": BF16, "LongStorage": "<i8", "IntStorage": "<i4",
    "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
    "UntypedStorage": "u1",
}
# torch dtype attribute (pickled as the global `torch.<name>`)
_TORCH_DTYPES = {
    "float64": "<f8", "float32": "<f4", "float16": "<f2", "bfloat16": BF16, "int64": "<i8",
    "int32": "<i4", "int16": "<i2", "int8": "i1", "uint8": "u1", "bool": "?",
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
            raise Malformed("a tensor without a storage")
        if dtype is not None and not isinstance(dtype, DType):
            raise Malformed("a tensor whose dtype is not a torch dtype")
        size = _indices(size, "size")
        stride = _indices(stride, "stride")
        if len(stride) != len(size) or len(size) > MAX_NDIM:
            raise Malformed(f"a tensor with {len(size)} dimensions and {len(stride)} strides")
        (offset,) = _indices((offset,), "storage offset")
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.dtype = dtype or storage.dtype

    def __repr__(self):
        return "a tensor"


def _indices(values, what):
    """`values` as a tuple of is_index ints, or Malformed."""
    if not (isinstance(values, (tuple, list)) and all(map(is_index, values))):
        raise Malformed(f"a tensor {what} that is not a tuple of non-negative integers")
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
ALLOWED_GLOBALS = types.MappingProxyType(dict([
    _allowed("collections", "OrderedDict", collections.OrderedDict),
    _allowed("torch._utils", "_rebuild_tensor", _rebuild_tensor),
    _allowed("torch._utils", "_rebuild_tensor_v2", _rebuild_tensor_v2),
    _allowed("torch._utils", "_rebuild_tensor_v3", _rebuild_tensor_v3),
    _allowed("torch._utils", "_rebuild_parameter", _rebuild_parameter),
    *(_allowed("torch", name, DType(f"torch.{name}", code))
      for name, code in _STORAGE_TYPES.items()),
    _allowed("torch.storage", "UntypedStorage", DType("torch.storage.UntypedStorage", "u1")),
    *(_allowed("torch", name, DType(f"torch.{name}", code))
      for name, code in _TORCH_DTYPES.items()),
]))


# --------------------------------------------------------------------------------------------
# Scanning and unpickling


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


def scan_pickle(stream, source):
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
                    raise Malformed(f"memo index {index} at opcode {count}")
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
                        raise Malformed(f"opcode {count} ({name}) without a MARK before it")
                    mark = marks.pop()
                    taken, stack[mark:] = stack[mark:], []
                if below:
                    if len(stack) < below:
                        raise Malformed(f"opcode {count} ({name}) takes more than the stack has")
                    taken += stack[-below:]
                    del stack[-below:]
                depth = 1 + max(taken, default=0) if is_tuple else 0
                if depth > _MAX_NESTING:
                    raise Malformed(f"tuples nested more than {_MAX_NESTING} deep")
                stack.extend([depth] * pushes)
    except (Malformed, ValueError, IndexError) as error:
        # IndexError: a PUT or DUP with an empty stack.
        raise CheckpointError(f"{source}: not a readable PyTorch checkpoint (malformed "
                              f"pickle: {str(error)[:200] or type(error).__name__})") from None


class _StateDictUnpickler(pickle.Unpickler):
    """An unpickler that knows only the globals of a state dict."""

    def __init__(self, file, source):
        super().__init__(file)
        self._source = source
        self.storage_dtypes = {}  # key -> DType, of every storage the pickle names

    def find_class(self, module, name):
        # Protocol-2 pickles (the torch default) spell Python 3 modules the Python 2 way.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        allowed = ALLOWED_GLOBALS.get((module, name))
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
                and isinstance(pid[1], DType) and isinstance(pid[2], str)
                and len(pid[2]) <= 256):  # torch's keys: "0", "1", ... or a number
            raise Malformed("a persistent id that is not a torch storage")
        view = pid[5] if len(pid) == 6 else None
        if view is not None and not (isinstance(view, tuple) and len(view) == 3
                                     and is_index(view[1]) and is_index(view[2])):
            raise Malformed(f"storage {pid[2]} has a malformed view (expected a key, an "
                             "offset and a size)")
        if self.storage_dtypes.setdefault(pid[2], pid[1]).stored != pid[1].stored:
            raise Malformed(f"storage {pid[2]} is declared with two dtypes")
        return _StorageRef(pid[2], pid[1], view)


def unpickle(data, source):
    """(object, {storage key: DType}) of a pickle held in `data`, after scan_pickle."""
    unpickler = _StateDictUnpickler(io.BytesIO(data), source)
    try:
        return unpickler.load(), unpickler.storage_dtypes
    except CheckpointError:
        raise
    except Refused as error:
        raise UnsafeCheckpointError(
            f"{source}: refusing to load: {error}. The reader is unchanged.") from None
    except Malformed as error:
        raise CheckpointError(f"{source}: not a readable PyTorch checkpoint ({error})") \
            from None
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError,
            KeyError, ValueError, struct.error, OverflowError, RecursionError) as error:
        raise CheckpointError(f"{source}: not a readable PyTorch checkpoint "
                              f"({type(error).__name__}: {str(error)[:200]})") from None


def read_pickle(file, size, source):
    """The bytes of the pickle at `file`'s position (through its STOP), scanned first."""
    start = file.tell()
    reads = _BoundedReads(file, size)
    scan_pickle(reads, source)
    file.seek(start)
    return file.read(size - reads.left - start)


def resolve_refs(obj, resolve, source):
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
