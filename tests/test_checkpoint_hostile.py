"""The torch-free checkpoint reader against hostile and damaged files.

Each attack is a small crafted file. It must be refused with a CheckpointError naming the file,
quickly and in little memory, and must leave the reader unchanged for the next file. Files
that could hang or exhaust memory are read in a child process (`read_isolated`) with an
address-space limit and a timeout, which also measures time and the tracemalloc peak.
"""
import collections
import io
import json
import os
import pickle
import random
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from keras_resnest.weights import (
    CheckpointError,
    UnsafeCheckpointError,
    checkpoints,
    read_state_dict,
)
from keras_resnest.weights.checkpoints.pickle_guard import ALLOWED_GLOBALS
from keras_resnest.weights.checkpoints.torch_files import LEGACY_MAGIC, LEGACY_PROTOCOL

CHECKPOINTS = Path(checkpoints.__file__)
MAX_SECONDS = 3.0
MAX_PEAK = 50 * 2**20  # bytes, tracemalloc peak of one read
ADDRESS_SPACE = 3 * 2**30  # the child's limit: a regression fails, it does not swap


# --- reading in a child process -----------------------------------------------------------

_HARNESS = r"""
import importlib.util, json, resource, sys, time, tracemalloc
import numpy as np

module_path, limit, mode, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
spec = importlib.util.spec_from_file_location("checkpoints_under_test", module_path)
checkpoints = importlib.util.module_from_spec(spec)
spec.loader.exec_module(checkpoints)


def attempt(path):
    try:
        state = checkpoints.read_state_dict(path, lazy=mode == "lazy")
        for value in state.values():
            np.asarray(value)  # a lazy read reads here
        return "ok", ""
    except BaseException as error:
        kind = ("CheckpointError" if isinstance(error, checkpoints.CheckpointError)
                else type(error).__name__)
        return kind, str(error)[:300]


for path in paths:
    # Timed without tracemalloc (which slows Python code several times), then traced.
    start = time.perf_counter()
    kind, message = attempt(path)
    seconds = time.perf_counter() - start
    tracemalloc.start()
    attempt(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(json.dumps(dict(path=path, kind=kind, message=message, seconds=seconds, peak=peak)),
          flush=True)
"""


def read_isolated(paths, lazy=False, module=CHECKPOINTS, timeout=60, limit=ADDRESS_SPACE):
    """One outcome dict per path: kind ("ok", "CheckpointError" or another exception's name),
    message, seconds, peak (bytes). A crash or a timeout fails the calling test."""
    paths = [str(path) for path in paths]
    result = subprocess.run(
        [sys.executable, "-c", _HARNESS, str(module), str(limit), "lazy" if lazy else "eager",
         *paths], capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"))
    outcomes = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0 and len(outcomes) == len(paths), \
        f"reader process ended with {result.returncode}: {result.stderr[-2000:]}"
    return outcomes


def assert_refused_cheaply(outcome, match):
    assert outcome["kind"] == "CheckpointError", outcome
    assert outcome["path"] in outcome["message"], outcome  # the error names the file
    assert match in outcome["message"], outcome
    assert outcome["seconds"] < MAX_SECONDS and outcome["peak"] < MAX_PEAK, outcome


# --- crafting files ---------------------------------------------------------------------------

def torch_bytes(state, legacy=False):
    buffer = io.BytesIO()
    torch.save(state, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def op_global(module, name):
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def op_str(text):
    data = text.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def op_put(index):
    return pickle.BINPUT + bytes([index])


def op_get(index):
    return pickle.BINGET + bytes([index])


def op_int(value):
    return pickle.BININT + struct.pack("<i", value)


def op_tensor(key="0", size=4):
    """Pushes _rebuild_tensor_v2 of float32 storage `key`: `size` values, contiguous."""
    return (op_global("torch._utils", "_rebuild_tensor_v2") + pickle.MARK
            + pickle.MARK + op_str("storage") + op_global("torch", "FloatStorage") + op_str(key)
            + op_str("cpu") + op_int(size) + pickle.TUPLE + pickle.BINPERSID
            + op_int(0) + op_int(size) + pickle.TUPLE1 + op_int(1) + pickle.TUPLE1
            + pickle.NEWFALSE + op_global("collections", "OrderedDict") + pickle.EMPTY_TUPLE
            + pickle.REDUCE + pickle.TUPLE + pickle.REDUCE)


PROTO = pickle.PROTO + b"\x02"


def zip_checkpoint(path, data_pkl, records=(), deflated=None, deflated_size=0):
    """A zip-format torch file: archive/data.pkl and archive/data/<key> records (stored, as
    torch writes them); `deflated` names a record written instead as `deflated_size` zeros,
    deflate-compressed."""
    with zipfile.ZipFile(path, "w", compresslevel=1) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        for key, data in dict(records).items():
            archive.writestr(f"archive/data/{key}", data)
        if deflated is not None:
            info = zipfile.ZipInfo(f"archive/data/{deflated}")
            info.compress_type = zipfile.ZIP_DEFLATED
            zeros = bytes(2**20)
            with archive.open(info, "w", force_zip64=True) as member:
                for _ in range(deflated_size // len(zeros)):
                    member.write(zeros)
    return path


def floats(*values):
    return np.asarray(values, "<f4").tobytes()


def state_pickle(items):
    """A pickled dict {name: object}, each value given as opcodes that push it."""
    body = b"".join(op_str(name) + value for name, value in items.items())
    return PROTO + pickle.EMPTY_DICT + pickle.MARK + body + pickle.SETITEMS + pickle.STOP


# --- 1. a pickle cannot change the reader --------------------------------------------------

def _good_state():
    return {"f32": torch.arange(8, dtype=torch.float32), "bf16": torch.arange(8).bfloat16(),
            "f16": torch.arange(8).half(), "i64": torch.arange(8)}


def _build_pickle(target, slot_state, attribute, value):
    """`target` (opcodes pushing an object), BUILD {attribute: value}, then {"w": a tensor}.

    slot_state: the (None, {...}) form, which BUILD applies with setattr; otherwise the
    dict form, which updates the object's __dict__.
    """
    state = pickle.EMPTY_DICT + op_str(attribute) + value + pickle.SETITEM
    if slot_state:
        state = pickle.NONE + state + pickle.TUPLE2
    return (PROTO + target + state + pickle.BUILD + pickle.POP
            + pickle.EMPTY_DICT + op_str("w") + op_tensor() + pickle.SETITEM + pickle.STOP)


_BUILD_ATTACKS = {
    # The confirmed attack: every later float32 tensor read as bfloat16 halves.
    "FloatStorage.is_bfloat16": (op_global("torch", "FloatStorage"), False, "is_bfloat16",
                                 pickle.NEWTRUE),
    "BFloat16Storage.is_bfloat16 (setattr)": (op_global("torch", "BFloat16Storage"), True,
                                              "is_bfloat16", pickle.NEWFALSE),
    "float16.stored (setattr)": (op_global("torch", "float16"), True, "stored", op_int(0)),
    "_rebuild_tensor_v2.__defaults__ (setattr)": (
        op_global("torch._utils", "_rebuild_tensor_v2"), True, "__defaults__",
        pickle.EMPTY_TUPLE),
    "OrderedDict class": (op_global("collections", "OrderedDict"), True, "fromkeys", op_int(0)),
    "a tensor": (op_tensor(), True, "offset", op_int(2)),
}


@pytest.mark.parametrize("attack", sorted(_BUILD_ATTACKS))
@pytest.mark.parametrize("legacy", [False, True])
def test_a_build_on_the_allow_list_is_refused_and_later_reads_are_exact(tmp_path, attack,
                                                                        legacy):
    good = tmp_path / "good.pth"
    good.write_bytes(torch_bytes(_good_state(), legacy=legacy))
    hostile = zip_checkpoint(tmp_path / "hostile.pth", _build_pickle(*_BUILD_ATTACKS[attack]),
                             {"0": floats(0, 1, 2, 3)})
    expected = {key: value.float().numpy() if key == "bf16" else value.numpy()
                for key, value in _good_state().items()}

    first = read_state_dict(good)
    with pytest.raises(CheckpointError, match=str(hostile)) as refused:
        read_state_dict(hostile)
    if attack != "OrderedDict class":  # the built-in type refuses setattr by itself
        assert refused.type is UnsafeCheckpointError
        assert "BUILD" in str(refused.value)
    second = read_state_dict(good)
    for key, value in expected.items():
        np.testing.assert_array_equal(first[key], value, err_msg=key)
        np.testing.assert_array_equal(second[key], value, err_msg=key)
    assert first["f32"].tolist() == second["f32"].tolist() == list(range(8))


def test_the_allow_list_is_read_only():
    storage = ALLOWED_GLOBALS[("torch", "FloatStorage")]
    with pytest.raises(AttributeError):
        storage.is_bfloat16 = True
    with pytest.raises(TypeError):
        ALLOWED_GLOBALS[("builtins", "eval")] = eval
    assert storage.is_bfloat16 is False


def test_build_on_an_ordered_dict_is_still_read(tmp_path):
    """A state dict BUILDs its OrderedDict (`_metadata`): that is the one BUILD kept."""
    module = torch.nn.Linear(2, 3)
    path = tmp_path / "linear.pth"
    torch.save(module.state_dict(), path)
    assert b"_metadata" in zipfile.ZipFile(path).read("linear/data.pkl")
    np.testing.assert_array_equal(read_state_dict(path)["weight"], module.weight.detach())


# --- 2. work and memory bounded by the file -----------------------------------------------

def shared_nested_lists(levels):
    """{"w": tensor, "lists": l<levels>}: l0 = [], l(i+1) = [l(i), l(i)] through the memo."""
    lists = pickle.EMPTY_LIST + op_put(0) + pickle.POP
    for level in range(levels):
        lists += (pickle.EMPTY_LIST + pickle.MARK + op_get(level) + op_get(level)
                  + pickle.APPENDS + op_put(level + 1) + pickle.POP)
    lists += op_get(levels)
    return state_pickle({"w": op_tensor(), "lists": lists})


def test_memo_shared_lists_are_walked_once(tmp_path):
    data = shared_nested_lists(40)  # 2**40 paths
    assert len(data) < 2048
    path = zip_checkpoint(tmp_path / "lists.pth", data, {"0": floats(0, 1, 2, 3)})
    (outcome,) = read_isolated([path], timeout=30)
    assert outcome["kind"] == "ok", outcome
    assert outcome["seconds"] < MAX_SECONDS and outcome["peak"] < MAX_PEAK, outcome
    assert read_state_dict(path)["w"].tolist() == [0, 1, 2, 3]


@pytest.mark.slow
def test_deflated_storage_records_are_refused(tmp_path):
    """torch.save never compresses; a deflated record would inflate to what it declares."""
    path = zip_checkpoint(tmp_path / "bomb.pth", state_pickle({"w": op_tensor()}),
                          deflated="0", deflated_size=64 * 2**20)
    assert path.stat().st_size < 2**20
    for lazy in (False, True):
        (outcome,) = read_isolated([path], lazy=lazy)
        assert_refused_cheaply(outcome, "archive/data/0 is compressed")


@pytest.mark.slow
def test_expanded_and_overlapping_tensors_are_refused(tmp_path):
    expanded = tmp_path / "expanded.pth"
    torch.save({"w": torch.zeros(1).expand(200000, 200000)}, expanded)  # 160 GB declared
    assert expanded.stat().st_size < 4096
    overlapping = tmp_path / "overlapping.pth"
    torch.save({"w": torch.arange(10.).as_strided((4, 4), (2, 1))}, overlapping)
    for lazy in (False, True):
        for outcome in read_isolated([expanded, overlapping], lazy=lazy):
            assert_refused_cheaply(outcome, "repeats its stored values")


@pytest.mark.slow
def test_tensors_beyond_their_storage_are_refused(tmp_path):
    cases = {
        "offset": op_tensor(size=4).replace(op_int(0) + op_int(4), op_int(1) + op_int(4)),
        "size": op_tensor(size=5),
    }
    paths = [zip_checkpoint(tmp_path / f"{name}.pth", state_pickle({"w": value}),
                            {"0": floats(0, 1, 2, 3)}) for name, value in cases.items()]
    for outcome in read_isolated(paths):
        assert_refused_cheaply(outcome, "reaches past its data")


@pytest.mark.parametrize("legacy", [False, True])
def test_in_bounds_views_read_like_torch(tmp_path, legacy):
    base = torch.arange(2 * 3 * 4 * 5, dtype=torch.float64).reshape(2, 3, 4, 5)
    views = {
        "contiguous": base, "transposed": base[0, 0].t(), "permuted": base.permute(3, 1, 0, 2),
        "channels_last": base.to(memory_format=torch.channels_last),
        "slice": base[1, :, 1:3, ::2], "row": base[1, 2, 3], "step": base.flatten()[5::7],
        "unsqueezed": base[0, 0, 0][:, None], "empty": base[:, :, 4:], "scalar": base[1, 1, 1, 1],
    }
    path = tmp_path / "views.pth"
    path.write_bytes(torch_bytes(views, legacy=legacy))
    eager, lazy = read_state_dict(path), read_state_dict(path, lazy=True)
    for key, tensor in views.items():
        np.testing.assert_array_equal(eager[key], tensor.numpy(), err_msg=key)
        np.testing.assert_array_equal(np.asarray(lazy[key]), tensor.numpy(), err_msg=key)


@pytest.mark.slow
def test_many_tensors_over_the_same_data_are_bounded_when_eager(tmp_path):
    """Each tensor is in bounds, but 100 of them over one 4 MB storage would be 400 MB."""
    count = 2**20
    tensors = {f"w{i}": op_tensor(size=count) for i in range(100)}
    path = zip_checkpoint(tmp_path / "shared.pth", state_pickle(tensors),
                          {"0": np.zeros(count, "<f4").tobytes()})
    (outcome,) = read_isolated([path])
    assert outcome["kind"] == "CheckpointError" and "times the file's size" in outcome["message"]
    assert outcome["peak"] < 4 * path.stat().st_size + 64 * 2**20 + 8 * 2**20, outcome
    lazy = read_state_dict(path, lazy=True)  # one tensor at a time stays possible
    assert np.asarray(lazy["w99"]).shape == (count,)


def _hostile_pickles():
    self_list = pickle.EMPTY_LIST + op_put(0) + op_get(0) + pickle.APPEND
    # [[[...]]] 100000 deep: 100001 empty lists, then each appended to the one below it.
    deep_lists = pickle.EMPTY_LIST * 100001 + pickle.APPEND * 100000
    deep_tuple_key = (PROTO + pickle.EMPTY_DICT + pickle.NONE + pickle.TUPLE1 * 200000
                      + op_int(1) + pickle.SETITEM + pickle.STOP)
    return {
        "self-referential list": (state_pickle({"w": op_tensor(), "x": self_list}),
                                  "contains itself"),
        "lists 100000 deep": (state_pickle({"w": op_tensor(), "x": deep_lists}),
                              "nested more than"),
        # Hashing 200000 nested tuples (a dict key) overflows the C stack: a crash.
        "tuple key 200000 deep": (deep_tuple_key, "tuples nested more than"),
        # LONG_BINPUT 2**31-1: the C unpickler grows its memo to 2**32 entries (32 GB).
        "memo index 2**31-1": (PROTO + pickle.NONE + pickle.LONG_BINPUT
                               + struct.pack("<I", 2**31 - 1) + pickle.STOP, "memo index"),
        # BINBYTES8 of 2**40 bytes: allocated before the 8 bytes that are there are read.
        "bytes of 2**40 declared": (PROTO + pickle.BINBYTES8 + struct.pack("<Q", 2**40)
                                    + b"12345678" + pickle.STOP, "malformed pickle"),
        "unicode of 2**40 declared": (PROTO + pickle.BINUNICODE8 + struct.pack("<Q", 2**40)
                                      + b"12345678" + pickle.STOP, "malformed pickle"),
        "persistent id not a storage": (state_pickle({"w": op_str("x") + pickle.BINPERSID}),
                                        "not a torch storage"),
        "tensor size not integers": (
            state_pickle({"w": op_tensor().replace(op_int(4) + pickle.TUPLE1,
                                                   op_str("4") + pickle.TUPLE1, 1)}),
            "not a tuple of non-negative integers"),
        "stack underflow": (PROTO + pickle.APPENDS + pickle.STOP, "malformed pickle"),
    }


def _legacy_file(path, object_pickle, keys=(), storages=b""):
    """A legacy-format torch file around `object_pickle` (bytes of one pickle)."""
    with open(path, "wb") as file:
        for header in (LEGACY_MAGIC, LEGACY_PROTOCOL,
                       {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, file, protocol=2)
        file.write(object_pickle)
        pickle.dump(list(keys), file, protocol=2)
        file.write(storages)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("legacy", [False, True])
def test_hostile_pickles_fail_cleanly(tmp_path, legacy):
    attacks = _hostile_pickles()
    paths = []
    for index, (data, _) in enumerate(attacks.values()):
        path = tmp_path / f"attack{index}.pth"
        if legacy:
            _legacy_file(path, data, ["0"], struct.pack("<q", 4) + floats(0, 1, 2, 3))
        else:
            zip_checkpoint(path, data, {"0": floats(0, 1, 2, 3)})
        paths.append(path)
    for (name, (_, match)), outcome in zip(attacks.items(), read_isolated(paths)):
        assert_refused_cheaply(outcome, match)


def test_malformed_safetensors_headers(tmp_path):
    def safetensors_file(name, header, data=b""):
        text = header if isinstance(header, bytes) else json.dumps(header).encode()
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(struct.pack("<Q", len(text)) + text + data)
        return path

    f32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    cases = {
        "list": ([1, 2], "header is a JSON list"),
        "string": ("weights", "header is a JSON str"),
        "entry not an object": ({"w": 5}, "described by a JSON int"),
        "dtype a list": ({"w": {**f32, "dtype": ["F32"]}}, "unsupported dtype"),
        "shape a string": ({"w": {**f32, "shape": "22"}}, "needs a shape"),
        "offsets missing": ({"w": {"dtype": "F32", "shape": [2]}}, "needs a shape"),
        "offsets negative": ({"w": {**f32, "data_offsets": [-8, 0]}}, "needs a shape"),
        "offsets past the end": ({"w": {**f32, "data_offsets": [0, 80]}}, "past the end"),
        "shape and bytes differ": ({"w": {**f32, "shape": [3]}}, "needs 12"),
        "nested 100000 deep": (b"[" * 100000 + b"]" * 100000, "RecursionError"),
        "not utf-8": (b'{"\xff": 1}', "not a safetensors file"),
        "huge shape": ({"w": {**f32, "shape": [2**62, 2**62]}}, "needs"),
    }
    for name, (header, match) in cases.items():
        path = safetensors_file(name.replace(" ", "_"), header, floats(1, 2))
        with pytest.raises(CheckpointError, match=str(path)) as error:
            read_state_dict(path)
        assert match in str(error.value), (name, str(error.value))
    good = safetensors_file("good", {"w": f32, "__metadata__": {"format": "pt"}}, floats(1, 2))
    assert read_state_dict(good)["w"].tolist() == [1, 2]


def test_npz_arrays_declaring_more_than_they_hold_are_refused(tmp_path):
    """numpy allocates the shape an .npy header declares before reading the data."""
    path = tmp_path / "liar.npz"
    np.savez(path, w=np.zeros(4, "<f4"))
    with zipfile.ZipFile(path) as archive:
        member = archive.read("w.npy")
    end = member.index(b"\n") + 1
    # Same header length: the longer shape takes the place of nine padding spaces.
    header = member[:end].replace(b"(4,)", b"(9999999999,)").replace(b" " * 9 + b"\n", b"\n")
    assert len(header) == end
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("w.npy", header + member[end:])
    (outcome,) = read_isolated([path])
    assert_refused_cheaply(outcome, "declares 39999999996 bytes but holds 16")


# --- 3. legacy storage views ---------------------------------------------------------------

class _Storage:
    """A storage in a crafted legacy file; `view` as torch < 0.4 wrote it."""

    def __init__(self, view=None):
        self.view = view


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride)

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (*self.args, False, collections.OrderedDict())


def legacy_file_with_views(path, root, tensors):
    """A legacy file of float64 storage "root" and `tensors` {name: _Tensor}.

    Its persistent ids are those of torch < 0.4: ("storage", type, root key, location, root
    size, view) with view = (view key, offset, size), offset and size in root elements.
    """
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=2)
    pickler.persistent_id = lambda obj: (
        ("storage", torch.DoubleStorage, "root", "cpu", root.numel(), obj.view)
        if isinstance(obj, _Storage) else None)
    pickler.dump(tensors)
    return _legacy_file(path, buffer.getvalue(), ["root"],
                        struct.pack("<q", root.numel()) + root.numpy().tobytes())


def test_legacy_storage_views_read_like_torch(tmp_path):
    root = torch.arange(30, dtype=torch.float64) * 1.5
    first = _Storage(("view-a", 4, 12))  # root[4:16]
    tensors = {
        "matrix": _Tensor(first, 0, (3, 4), (4, 1)),
        "tail": _Tensor(first, 5, (7,), (1,)),  # shares the view, at an offset inside it
        "transposed": _Tensor(_Storage(("view-b", 17, 6)), 0, (3, 2), (1, 3)),
        "whole": _Tensor(_Storage(), 2, (28,), (1,)),
    }
    path = legacy_file_with_views(tmp_path / "views.pth", root, tensors)
    expected = torch.load(path, weights_only=True)
    np.testing.assert_array_equal(expected["matrix"].numpy(), root[4:16].reshape(3, 4).numpy())
    for lazy in (False, True):
        state = read_state_dict(path, lazy=lazy)
        assert sorted(state) == sorted(expected)
        for key, tensor in expected.items():
            np.testing.assert_array_equal(np.asarray(state[key]), tensor.numpy(), err_msg=key)


def test_legacy_views_outside_their_root_or_tensors_outside_their_view_are_refused(tmp_path):
    root = torch.arange(10, dtype=torch.float64)
    past_root = legacy_file_with_views(tmp_path / "past_root.pth", root,
                                       {"w": _Tensor(_Storage(("v", 6, 8)), 0, (2,), (1,))})
    with pytest.raises(CheckpointError, match=r"a view of storage root \(8 elements from 6\) "
                                              r"reaches past it \(10 elements\)"):
        read_state_dict(past_root)
    # Inside the root, but not inside its view: torch refuses it too.
    past_view = legacy_file_with_views(tmp_path / "past_view.pth", root,
                                       {"w": _Tensor(_Storage(("v", 2, 3)), 0, (4,), (1,))})
    with pytest.raises(CheckpointError, match="reaches past its data"):
        read_state_dict(past_view)


def test_a_view_in_a_zip_file_is_refused(tmp_path):
    pid = (pickle.MARK + op_str("storage") + op_global("torch", "FloatStorage") + op_str("0")
           + op_str("cpu") + op_int(4) + pickle.MARK + op_str("v") + op_int(1) + op_int(2)
           + pickle.TUPLE + pickle.TUPLE + pickle.BINPERSID)
    tensor = op_tensor().replace(
        pickle.MARK + op_str("storage") + op_global("torch", "FloatStorage") + op_str("0")
        + op_str("cpu") + op_int(4) + pickle.TUPLE + pickle.BINPERSID, pid)
    path = zip_checkpoint(tmp_path / "view.pth", state_pickle({"w": tensor}),
                          {"0": floats(0, 1, 2, 3)})
    with pytest.raises(CheckpointError, match="only in legacy"):
        read_state_dict(path)


# --- fuzzing: damaged files raise CheckpointError and nothing else -------------------------

def _fuzz_sources(tmp_path):
    torch.manual_seed(0)
    base = torch.randn(4, 6)
    state = {"conv.weight": torch.randn(3, 2, 3, 3), "bn.bias": torch.randn(3), "t": base.t(),
             "half": torch.randn(5).half(), "bf16": torch.randn(3).bfloat16(),
             "n": torch.tensor(7), "module.fc.weight": base[1:3]}
    sources = {}
    for legacy in (False, True):
        path = tmp_path / f"source_{'legacy' if legacy else 'zip'}.pth"
        path.write_bytes(torch_bytes({"state_dict": state, "epoch": 3}, legacy=legacy))
        sources[path.name] = path
    import safetensors.torch

    path = tmp_path / "source.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    sources[path.name] = path
    path = tmp_path / "source.npz"
    np.savez(path, **{k: v.float().numpy() for k, v in state.items()})
    sources[path.name] = path
    return sources


@pytest.mark.slow
def test_truncated_and_bit_flipped_files_raise_only_checkpoint_errors(tmp_path):
    rng = random.Random(1234)
    damaged = []
    for name, source in _fuzz_sources(tmp_path).items():
        data = source.read_bytes()
        suffix = source.suffix
        cuts = sorted({0, 1, 7, 8, 9, len(data) - 1, *rng.sample(range(len(data)), 20)})
        for cut in cuts:
            path = tmp_path / f"{source.stem}_cut{cut}{suffix}"
            path.write_bytes(data[:cut])
            damaged.append(path)
        # Flips everywhere, and more in the first 2 KB, where the headers and pickles are.
        positions = rng.sample(range(len(data)), 60) + \
            rng.sample(range(min(len(data), 2048)), 60)
        for index, position in enumerate(positions):
            flipped = bytearray(data)
            flipped[position] ^= rng.randrange(1, 256)
            path = tmp_path / f"{source.stem}_flip{index}{suffix}"
            path.write_bytes(bytes(flipped))
            damaged.append(path)
    for lazy in (False, True):
        outcomes = read_isolated(damaged, lazy=lazy, timeout=300)
        escaped = [o for o in outcomes if o["kind"] not in ("ok", "CheckpointError")]
        assert escaped == [], escaped[:5]
        unnamed = [o for o in outcomes
                   if o["kind"] == "CheckpointError" and o["path"] not in o["message"]]
        assert unnamed == [], unnamed[:5]
        slow = [o for o in outcomes if o["seconds"] > MAX_SECONDS or o["peak"] > MAX_PEAK]
        assert slow == [], slow[:5]
        assert {"ok", "CheckpointError"} == {o["kind"] for o in outcomes}
