"""`.safetensors`: the header parsed and validated here, each tensor a view of a private map.

Validation is at least as strict as the safetensors library's: the header is UTF-8 JSON with no
duplicate keys and no NaN; each tensor has a known dtype, a shape of non-negative integers (not
floats, strings or booleans) and two integer offsets whose difference is exactly shape x dtype;
the tensors tile the data section with no gap and no overlap, up to the end of the file. On top,
cediag bounds the header (`MAX_HEADER_BYTES`) and the number of tensors (`MAX_TENSORS`), and
makes a view only for the tensors that are used.
"""

from __future__ import annotations

import json
import mmap
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ._io_base import MAX_HEADER_BYTES, MAX_TENSORS, SAFETENSORS_HINT, LoadError

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    **{
        name: getattr(torch, attr)
        for name, attr in (
            ("F8_E4M3", "float8_e4m3fn"),
            ("F8_E5M2", "float8_e5m2"),
            ("U16", "uint16"),
            ("U32", "uint32"),
            ("U64", "uint64"),
        )
        if hasattr(torch, attr)
    },
}
_AGAIN = "save it again"


class _Entry:
    __slots__ = ("name", "dtype", "shape", "begin", "end")

    def __init__(self, name: str, dtype: torch.dtype, shape: list[int], begin: int, end: int):
        self.name, self.dtype, self.shape, self.begin, self.end = name, dtype, shape, begin, end


class MappedTensors(Mapping[str, torch.Tensor]):
    """The tensors of one file by name; a tensor's view of the map is made when it is used."""

    def __init__(self, buffer: mmap.mmap | None, start: int, entries: dict[str, _Entry]):
        self._buffer, self._start, self._entries = buffer, start, entries
        self._made: dict[str, torch.Tensor] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._made:
            e = self._entries[name]
            numel = (e.end - e.begin) // e.dtype.itemsize
            if numel == 0:
                self._made[name] = torch.empty(e.shape, dtype=e.dtype)
            else:  # a zero-copy view of the private map: pages are read from disk when touched
                flat = torch.frombuffer(
                    self._buffer, dtype=e.dtype, count=numel, offset=self._start + e.begin
                )
                self._made[name] = flat.reshape(e.shape)
        return self._made[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def read_safetensors(file: Path, f: BinaryIO, size: int) -> tuple[MappedTensors, dict[str, str]]:
    """The tensors and the `__metadata__` of an open safetensors file. Raises `LoadError`."""
    if size < 8:
        raise LoadError(file, "is truncated (no safetensors header)", _AGAIN)
    (header_len,) = struct.unpack("<Q", f.read(8))
    if header_len > size - 8:
        raise LoadError(
            file,
            f"is truncated or not a safetensors file (its header claims {header_len} bytes, "
            f"the file has {size})",
            _AGAIN,
        )
    if header_len > MAX_HEADER_BYTES:
        raise LoadError(
            file,
            f"has a {header_len / 2**20:.1f} MiB header; cediag reads safetensors headers up to "
            f"{MAX_HEADER_BYTES // 2**20} MiB (a loss call's few tensors need a few KB)",
            SAFETENSORS_HINT,
        )
    raw = f.read(header_len)
    if raw.count(b'"data_offsets"') > MAX_TENSORS:
        raise _too_many(file)
    header = _parse_header(file, raw)
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise LoadError(file, "has a bad header (__metadata__ must map strings to strings)", _AGAIN)
    if len(header) > MAX_TENSORS:
        raise _too_many(file)
    entries = {name: _entry(file, name, info) for name, info in header.items()}
    start = 8 + header_len
    _check_layout(file, entries, size - start, size)
    buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size > start else None
    return MappedTensors(buffer, start, entries), metadata


def _too_many(file: Path) -> LoadError:
    return LoadError(
        file,
        f"holds more than {MAX_TENSORS} tensors; cediag reads files of a loss call's few tensors",
        SAFETENSORS_HINT,
    )


def _parse_header(file: Path, raw: bytes) -> dict[str, Any]:
    objects = 0

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal objects
        objects += 1  # one per tensor, plus the metadata and the header: stop parsing early
        if objects > MAX_TENSORS + 2:
            raise _too_many(file)
        result = dict(pairs)
        if len(result) != len(pairs):
            seen: set[str] = set()
            twice = next(k for k, _ in pairs if k in seen or seen.add(k))
            raise LoadError(file, f"has a bad header (the key {twice!r} appears twice)", _AGAIN)
        return result

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        header = json.loads(
            raw.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constant
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise LoadError(file, "is not a safetensors file (bad header)", _AGAIN) from None
    if not isinstance(header, dict):
        raise LoadError(file, "is not a safetensors file (bad header)", _AGAIN)
    return header


def _is_count(value: Any) -> bool:
    return type(value) is int and 0 <= value < 2**63


def _entry(file: Path, name: str, info: Any) -> _Entry:
    def bad(what: str) -> LoadError:
        return LoadError(file, f"has a bad header for tensor {name!r} ({what})", _AGAIN)

    if not isinstance(info, dict):
        raise bad("not an object")
    dtype = DTYPES.get(info.get("dtype")) if isinstance(info.get("dtype"), str) else None
    if dtype is None:
        raise LoadError(
            file, f"has a tensor {name!r} of unsupported dtype {info.get('dtype')!r}", _AGAIN
        )
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise bad(f"shape {shape!r} is not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))):
        raise bad(f"data_offsets {offsets!r} are not two non-negative integers")
    numel, nonzero = 1, 1
    for d in shape:
        numel *= d
        nonzero *= max(d, 1)
    if nonzero >= 2**63:
        raise bad(f"shape {shape} has too many elements")
    begin, end = offsets
    if end < begin or end - begin != numel * dtype.itemsize:
        raise LoadError(
            file,
            f"has a corrupt header for tensor {name!r}: offsets {begin}..{end} hold "
            f"{end - begin} bytes, its shape and dtype need {numel * dtype.itemsize}",
            _AGAIN,
        )
    return _Entry(name, dtype, shape, begin, end)


def _check_layout(file: Path, entries: dict[str, _Entry], data_len: int, size: int) -> None:
    """The tensors tile the data section exactly: no overlap, no gap, nothing left over."""
    for e in entries.values():
        if e.end > data_len:
            raise LoadError(
                file,
                f"is truncated: tensor {e.name!r} needs {size - data_len + e.end} bytes, "
                f"the file has {size}",
                "copy or save it again",
            )
    expected = 0
    previous = None
    for e in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
        if e.begin != expected:
            what = f"overlaps {previous!r}" if e.begin < expected else "leaves a gap before it"
            raise LoadError(file, f"has a corrupt header: tensor {e.name!r} {what}", _AGAIN)
        expected, previous = e.end, e.name
    if expected != data_len:
        raise LoadError(
            file,
            f"has a corrupt header: {data_len - expected} bytes after the last tensor "
            "belong to no tensor",
            _AGAIN,
        )
