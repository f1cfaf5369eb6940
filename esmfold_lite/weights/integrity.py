"""Is a checkpoint file complete? Checks that need nothing but the file itself.

A download can stop early without the transport noticing (a server that sends no ``Content-Length``) or end up
longer than the file (bytes appended or spliced in). The containers checkpoints come in record their own extent,
so such a file shows in its structure:

* zip (``torch.save`` since PyTorch 1.6): the end-of-central-directory record closes the file, the central directory
  is readable, and every member's local header sits at its recorded offset; ``deep`` also checks each member's
  CRC-32 (reading the whole file).
* legacy ``torch.save``: five pickles (magic number, protocol version, system info, the object, the storage keys)
  followed by one record per storage, an 8-byte element count and the elements; the records must end exactly at the
  end of the file. The object pickle is read through the allow-list unpickler, so nothing in it runs.
* safetensors: an 8-byte header length, the JSON header, then tensor data whose last byte is the file's last byte.

Anything else is not a checkpoint file esmfold_lite downloads.
"""

from __future__ import annotations

import io
import json
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from esmfold_lite.weights.safe_pickle import CheckpointError, SafeUnpickler

TORCH_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER, the first legacy pickle
_ZIP_END = b"PK\x05\x06"
_ZIP_END_SIZE = 22
_ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., file name length, extra field length


def structure_problem(path: str | Path, *, deep: bool = False) -> str | None:
    """Why ``path`` is not a complete zip / legacy torch / safetensors checkpoint; ``None`` when it is.

    ``deep``: for zip files also verify every member's CRC-32 (reads the whole file; cheap checks otherwise).
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as file:
        head = file.read(16)
        file.seek(0)
        try:
            if head.startswith(b"PK\x03\x04"):
                return _zip_problem(file, size, deep)
            if head[8:9] == b"{":  # after the header length, the JSON header
                return _safetensors_problem(file, size)
            if head.startswith(b"\x80"):  # a pickle of protocol >= 2, as torch.save writes
                return _legacy_torch_problem(file, size)
        except Exception as exc:  # arbitrary bytes can fail a parser in any way (pickle: KeyError, IndexError, ...)
            return f"its structure is broken ({type(exc).__name__}: {exc})"
    return "it is not a zip, legacy torch or safetensors file (the data may be an HTML error page or cut short)"


def _zip_problem(file: io.BufferedReader, size: int, deep: bool) -> str | None:
    tail_size = min(size, _ZIP_END_SIZE + 0xFFFF)  # the end record and a comment of at most 64 KiB
    file.seek(size - tail_size)
    tail = file.read()
    end = tail.rfind(_ZIP_END)
    if end < 0 or end + _ZIP_END_SIZE > len(tail):
        return "the zip archive has no end record (the file is cut short)"
    comment = int.from_bytes(tail[end + 20 : end + 22], "little")
    extra = len(tail) - (end + _ZIP_END_SIZE + comment)
    if extra != 0:
        return f"the zip archive's end record is {extra:+d} bytes from the end of the file (cut or extended)"
    with zipfile.ZipFile(file) as archive:
        members = archive.infolist()
        directory = getattr(archive, "start_dir", size)
        for info in members:
            file.seek(info.header_offset)
            signature, name_length, extra_length = _ZIP_LOCAL_HEADER.unpack(file.read(_ZIP_LOCAL_HEADER.size))
            data_end = info.header_offset + _ZIP_LOCAL_HEADER.size + name_length + extra_length + info.compress_size
            if signature != b"PK\x03\x04" or data_end > directory:
                return f"zip member {info.filename!r} is not where the directory says (bytes spliced in or lost)"
        if deep and any(info.CRC for info in members):  # all-zero CRCs: the writer did not record them
            for info in members:
                with archive.open(info) as member:  # reading to the end checks the CRC-32
                    while member.read(1 << 24):
                        pass
    return None


class _StorageRecords(SafeUnpickler):
    """Reads a legacy torch object pickle for its storages only: key -> (element count, bytes per element)."""

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.storages: dict[str, tuple[int, int]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name.endswith("Storage"):
            storage_type = getattr(torch, name, None)
            if storage_type is torch.UntypedStorage:
                return 1
            if isinstance(storage_type, type) and issubclass(storage_type, torch.storage.TypedStorage):
                with warnings.catch_warnings():  # "TypedStorage is deprecated": these are the legacy format's names
                    warnings.simplefilter("ignore", UserWarning)
                    return torch.empty(0, dtype=storage_type.dtype).element_size()
        if module in ("torch._utils", "torch._tensor"):  # tensor rebuilders: only the storage records matter here
            super().find_class(module, name)  # still refuses anything outside the allow-list
            return _no_tensor
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> None:
        # ("storage", <bytes per element>, key, location, element count[, view metadata])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], int)):
            raise CheckpointError(f"unexpected persistent id {pid!r:.80}")
        self.storages[str(pid[2])] = (int(pid[4]), pid[1])


def _no_tensor(*args: Any) -> None:
    return None


def _legacy_torch_problem(file: io.BufferedReader, size: int) -> str | None:
    if SafeUnpickler(file).load() != TORCH_MAGIC_NUMBER:
        return "it is a pickle, not a torch checkpoint (no torch magic number)"
    SafeUnpickler(file).load()  # protocol version
    SafeUnpickler(file).load()  # system info
    scan = _StorageRecords(file)
    scan.load()
    keys = SafeUnpickler(file).load()
    if not isinstance(keys, list) or set(map(str, keys)) != set(scan.storages):
        return "its storage keys do not match the storages its object names"
    position = file.tell()
    for key in keys:
        count, element_size = scan.storages[str(key)]
        file.seek(position)
        header = file.read(8)
        if len(header) < 8:
            return f"it ends inside its storage data at byte {position} of an expected {position + 8}+"
        if int.from_bytes(header, "little") != count:
            return f"storage {key} records {int.from_bytes(header, 'little')} elements where {count} are expected"
        position += 8 + count * element_size
    if position != size:
        return f"its storages end at byte {position} but the file has {size} bytes (cut or extended)"
    return None


def _safetensors_problem(file: io.BufferedReader, size: int) -> str | None:
    header_size = int.from_bytes(file.read(8), "little")
    if 8 + header_size > size:
        return f"its {header_size}-byte header goes past the end of the {size}-byte file"
    header = json.loads(file.read(header_size))
    data_end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    if 8 + header_size + data_end != size:
        return f"its tensors end at byte {8 + header_size + data_end} but the file has {size} bytes (cut or extended)"
    return None
