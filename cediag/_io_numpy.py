""".npy and .npz: headers read and checked here, data mapped where it can be, else copied within
the limit.

- `.npy` in native byte order: mapped (a private copy-on-write map), never copied;
- `.npy` in the other byte order: torch reads native order only, so it is copied (once, straight
  from the file into the array, then byte-swapped in place) if it fits `copy_limit`;
- `.npz` members stored uncompressed (`numpy.savez`): mapped like an `.npy`;
- `.npz` members compressed (`numpy.savez_compressed`): inflated into an array of the size the
  member's header declares, checked against `copy_limit` before anything is allocated, so a
  small archive cannot inflate into gigabytes.

Shapes are multiplied with Python integers (no overflow, no numpy warning), and every array
must lie inside its file.
"""

from __future__ import annotations

import mmap
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ._io_base import (
    MAX_TENSORS,
    LoadError,
    copy_limit,
    first_line,
    too_big_to_copy,
    zip_entries,
)

_AGAIN = "save it again"
_CONVERT = (
    "convert it once to native byte order: "
    "a = numpy.load(path, mmap_mode='r'); numpy.save(new_path, a.astype(a.dtype.newbyteorder('=')))"
)


class _Header:
    """An .npy header: dtype, shape, order, and where its data starts in the stream."""

    def __init__(self, dtype: np.dtype, shape: tuple[int, ...], fortran: bool, offset: int):
        self.dtype, self.shape, self.fortran, self.offset = dtype, shape, fortran, offset
        self.numel = 1
        for d in shape:
            self.numel *= d
        self.nbytes = self.numel * dtype.itemsize


def _header(file: Path, stream: BinaryIO, what: str) -> _Header:
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy version {version[0]}.{version[1]}")
    except (ValueError, OSError, EOFError, SyntaxError, zipfile.BadZipFile) as error:
        if isinstance(error, PermissionError):
            raise
        raise LoadError(
            file, f"is truncated or corrupt ({what}: {first_line(error)})", _AGAIN
        ) from None
    if dtype.hasobject:
        raise LoadError(
            file,
            f"refused: {what} is an object array (a pickle), not numbers",
            "save a numeric array with numpy.save",
        )
    if not all(type(d) is int and 0 <= d < 2**63 for d in shape):
        raise LoadError(file, f"is corrupt ({what} has a bad shape {shape})", _AGAIN)
    header = _Header(dtype, tuple(shape), bool(fortran), stream.tell())
    nonzero = 1
    for d in shape:
        nonzero *= max(d, 1)
    if nonzero >= 2**63:
        raise LoadError(
            file, f"is corrupt ({what} has a shape too large for any array: {shape})", _AGAIN
        )
    return header


def _torch_dtype(file: Path, dtype: np.dtype) -> torch.dtype:
    try:
        if dtype.subdtype is not None or dtype.names is not None:
            raise TypeError("a structured or sub-array dtype")
        return torch.from_numpy(np.empty(0, dtype=dtype.newbyteorder("="))).dtype
    except (TypeError, ValueError):
        raise LoadError(
            file, f"holds a numpy {dtype} array, which torch cannot read", "save numbers"
        ) from None


def _shaped(flat: torch.Tensor, header: _Header) -> torch.Tensor:
    if not header.fortran:
        return flat.reshape(header.shape)
    reverse = tuple(range(len(header.shape)))[::-1]
    return flat.reshape(header.shape[::-1]).permute(reverse)


def _native(dtype: np.dtype) -> bool:
    return dtype.isnative or dtype.itemsize == 1


def _mapped(
    buffer: mmap.mmap | None, offset: int, header: _Header, dtype: torch.dtype
) -> torch.Tensor:
    if header.numel == 0:
        return torch.empty(header.shape, dtype=dtype)
    flat = torch.frombuffer(buffer, dtype=dtype, count=header.numel, offset=offset)
    return _shaped(flat, header)


def _copied(file: Path, stream: BinaryIO, header: _Header, dtype: torch.dtype) -> torch.Tensor:
    """Read the data straight into one array of the declared size (no second copy)."""
    array = np.empty(header.numel, dtype=header.dtype)
    view = memoryview(array).cast("B")
    filled = 0
    while filled < header.nbytes:
        n = stream.readinto(view[filled : filled + 2**24])
        if not n:
            raise LoadError(
                file,
                f"is truncated: its data ends after {filled} of {header.nbytes} bytes",
                _AGAIN,
            )
        filled += n
    if not _native(header.dtype):
        array = array.byteswap(inplace=True).view(header.dtype.newbyteorder("="))
    return _shaped(torch.from_numpy(array), header)


def read_npy(file: Path, f: BinaryIO, size: int) -> torch.Tensor:
    header = _header(file, f, "its header")
    dtype = _torch_dtype(file, header.dtype)
    if header.offset + header.nbytes > size:
        raise LoadError(
            file,
            f"is truncated: its header declares {header.nbytes} bytes of data, "
            f"the file holds {size - header.offset}",
            _AGAIN,
        )
    if _native(header.dtype):
        buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if header.numel else None
        return _mapped(buffer, header.offset, header, dtype)
    if header.nbytes > copy_limit(file):
        raise too_big_to_copy(
            file, header.nbytes, "it is big-endian: torch reads native byte order only", _CONVERT
        )
    return _copied(file, f, header, dtype)


def read_npz(file: Path, f: BinaryIO, size: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    tensors: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    budget = copy_limit(file)
    copied = 0
    buffer: mmap.mmap | None = None
    if (zip_entries(f, size) or 0) > MAX_TENSORS:
        raise _too_many_arrays(file)
    try:
        archive = zipfile.ZipFile(f)
    except zipfile.BadZipFile as error:
        raise LoadError(file, f"is truncated or corrupt ({first_line(error)})", _AGAIN) from None
    with archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            raise LoadError(file, "is corrupt (two arrays of one name)", _AGAIN)
        if len(infos) > MAX_TENSORS:
            raise _too_many_arrays(file)
        for info in infos:
            if not info.filename.endswith(".npy"):
                notes.append(f"ignored {info.filename!r}: not an .npy array")
                continue
            key = info.filename[: -len(".npy")]
            what = f"array {key!r}"
            with archive.open(info) as member:
                header = _header(file, member, what)
                dtype = _torch_dtype(file, header.dtype)
                if header.offset + header.nbytes > info.file_size:
                    raise LoadError(
                        file,
                        f"is truncated or corrupt ({what} declares {header.nbytes} bytes, "
                        f"its record holds {info.file_size - header.offset})",
                        _AGAIN,
                    )
                start = _stored_data(f, info, size)
                if start is not None and _native(header.dtype):
                    if buffer is None:
                        buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
                    tensors[key] = _mapped(buffer, start + header.offset, header, dtype)
                    continue
                copied += header.nbytes
                if copied > budget:
                    why = (
                        "it is compressed"
                        if info.compress_type != zipfile.ZIP_STORED
                        else "it is big-endian"
                    )
                    raise too_big_to_copy(
                        file,
                        copied,
                        f"{what} cannot be mapped: {why}",
                        "save the arrays with numpy.savez (uncompressed, native byte order) "
                        "or as .safetensors",
                    )
                tensors[key] = _copied(file, member, header, dtype)
    if not tensors:
        raise LoadError(file, "holds no arrays", "save the arrays with numpy.savez")
    return tensors, notes


def _too_many_arrays(file: Path) -> LoadError:
    return LoadError(
        file,
        f"holds more than {MAX_TENSORS} arrays",
        "save the arrays of one loss call in a file of their own",
    )


def _stored_data(f: BinaryIO, info: zipfile.ZipInfo, size: int) -> int | None:
    """Where an uncompressed, unencrypted member's bytes start in the file; None otherwise."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    position = f.tell()
    try:
        f.seek(info.header_offset)
        local = f.read(30)
    finally:
        f.seek(position)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        return None
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    return start if start + info.file_size <= size else None
