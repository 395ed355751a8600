"""PyTorch's two containers: where a torch file's pickles and storages are.

* The zip format (torch >= 1.6): `<archive>/data.pkl` plus one `<archive>/data/<key>` record
  per storage, every member stored uncompressed (`_stored_member` refuses any other).
* The legacy format (torch < 1.6 and `_use_new_zipfile_serialization=False`, the format of the
  official 2020 ResNeSt files): a magic-number pickle, a protocol-version pickle, a system-info
  pickle, the object pickle, a pickle of the storage keys, then each storage as an int64
  element count followed by its raw bytes. Storage views (written by torch < 0.4) are read.

Each pickle goes through the pickle guard; each storage becomes a checked `Region`.
"""
import io
import os
import struct
import zipfile
import zlib

from keras_resnest.weights.checkpoints.errors import CheckpointError
from keras_resnest.weights.checkpoints.extents import Region, tensor_at
from keras_resnest.weights.checkpoints.pickle_guard import (
    read_pickle,
    resolve_refs,
    scan_pickle,
    unpickle,
)

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
_ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... name length, extra length


def _torch_tensor(ref, region, source, lazy, budget):
    """The tensor `ref` of a torch file whose storage data is `region`."""
    dtype = ref.dtype
    if region.dtype != dtype.stored:
        # An untyped (byte) storage read with a tensor dtype (`_rebuild_tensor_v3`).
        if region.dtype.itemsize != 1:
            raise CheckpointError(f"{source}: storage {ref.storage.key} is read as two dtypes")
        region = region.part(0, region.count // dtype.stored.itemsize, dtype.stored)
    return tensor_at(region, dtype, ref.size, ref.offset, ref.stride, source, lazy, budget)


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
        scan_pickle(io.BytesIO(data), path)
        obj, dtypes = unpickle(data, path)

        regions = {}
        for key, dtype in dtypes.items():
            name = f"{prefix}data/{key}"
            if name not in members:
                raise CheckpointError(f"{path}: storage record {name} is missing")
            offset, length = _stored_member(file, size, members[name], path)
            regions[key] = Region(path, offset, length // dtype.stored.itemsize,
                                   dtype.stored, byteorder == b"big")

    def resolve(ref):
        if ref.storage.view is not None:
            raise CheckpointError(f"{path}: storage {ref.storage.key} is a view; views exist "
                                  "only in legacy (torch < 0.4) files")
        return _torch_tensor(ref, regions[ref.storage.key], path, lazy, budget)

    return resolve_refs(obj, resolve, path)


def _read_torch_legacy(path, lazy, budget):
    size = os.path.getsize(path)

    def load(file):
        return unpickle(read_pickle(file, size, path), path)

    with open(path, "rb") as file:
        (magic, _), (protocol, _), (sys_info, _) = load(file), load(file), load(file)
        if magic != LEGACY_MAGIC:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (bad magic number)")
        if protocol != LEGACY_PROTOCOL:
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
            regions[key] = Region(path, offset, count, dtype, big_endian)
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

    return resolve_refs(obj, resolve, path)


def read_torch(path, lazy, budget):
    if zipfile.is_zipfile(path):
        return _read_torch_zip(path, lazy, budget)
    with open(path, "rb") as file:
        start = file.read(1)
    if start != b"\x80":  # every pickle of protocol >= 2 starts with PROTO
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither zip nor pickle)")
    return _read_torch_legacy(path, lazy, budget)
