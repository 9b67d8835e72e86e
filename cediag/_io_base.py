"""What every reader of `cediag.load` shares: its error, and the limits on what a file may cost.

A file can only make cediag allocate memory in proportion to its own size, and within fixed
limits (docs/cli.md, "Limits on what a file can make cediag allocate"):

- data that can be memory-mapped is mapped (never copied), and must lie inside the file;
- data that must be copied (a legacy `.pt`, a big-endian `.npy`, a compressed `.npz` member) is
  copied only up to `copy_limit()` bytes per file: `CEDIAG_MAX_COPY_MB` MiB (default 512);
- headers are bounded: a safetensors header at `MAX_HEADER_BYTES`, a pickle at
  `MAX_PICKLE_BYTES`, and a file holds at most `MAX_TENSORS` tensors.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

MAX_HEADER_BYTES = 8 * 2**20  # a safetensors header; the format allows 100 MB
MAX_PICKLE_BYTES = 4 * 2**20  # a .pt file's pickle; a dict of tensors pickles to a few KB
MAX_TENSORS = 10_000  # tensors (or storages, or arrays) in one file
MAX_SIDECAR_BYTES = 4 * 2**20  # a guard dump's JSON sidecar (options and report: a few KB)
DEFAULT_COPY_MB = 512
COPY_ENV = "CEDIAG_MAX_COPY_MB"

SAVE_HINT = "save it again with torch.save({'input': logits, 'target': target}, path)"
SAFETENSORS_HINT = (
    "save the tensors to check in a file of their own: "
    "safetensors.torch.save_file({'input': logits, 'target': target}, path)"
)


class LoadError(Exception):
    """A file could not be read as tensors. `str()` is one line: the file, the problem, the fix."""

    def __init__(self, path: str | os.PathLike, problem: str, hint: str):
        self.path = os.fspath(path)
        self.problem = problem
        self.hint = hint
        super().__init__(f"{self.path}: {problem}; {hint}")

    def __reduce__(self):  # survives pickling (a DataLoader worker, multiprocessing)
        return type(self), (self.path, self.problem, self.hint)


class IncompleteCall(LoadError):
    """The file holds tensors, but not a whole call (no target): give the target separately."""


def copy_limit(file: str | os.PathLike) -> int:
    """Bytes of one file that may be copied into memory: `CEDIAG_MAX_COPY_MB` MiB (default 512)."""
    text = os.environ.get(COPY_ENV, "").strip()
    if not text:
        return DEFAULT_COPY_MB * 2**20
    if not text.isdigit() or int(text) == 0:
        raise LoadError(
            file,
            f"{COPY_ENV}={text!r} is not a positive whole number of megabytes",
            f"set {COPY_ENV} to a number such as 2048, or unset it (default {DEFAULT_COPY_MB})",
        )
    return int(text) * 2**20


def too_big_to_copy(file: str | os.PathLike, nbytes: int, why: str, convert: str) -> LoadError:
    """The error for data that cannot be mapped and is bigger than `copy_limit`."""
    limit = copy_limit(file)
    return LoadError(
        file,
        f"needs {_size(nbytes)} copied into memory ({why}), more than the "
        f"{_size(limit)} cediag copies from one file",
        f"{convert}, or raise the limit with {COPY_ENV}={max(1, -(-nbytes // 2**20))}",
    )


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{nbytes} bytes"


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


def zip_entries(f: BinaryIO, size: int) -> int | None:
    """How many records a zip archive's end record declares, read before `zipfile` builds an
    object per record (a crafted central directory of a million records costs ~0.5 GB). Found
    the way `zipfile` finds it: at the very end, else the last signature in the comment area.
    None when there is no end record (zipfile will then say the file is not a zip)."""
    tail_len = min(size, 22 + 65535)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    f.seek(0)
    at = tail_len - 22 if tail[-22:-18] == b"PK\x05\x06" and tail[-2:] == b"\0\0" else -1
    if at < 0:
        at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > tail_len:
        return None
    (entries,) = struct.unpack("<H", tail[at + 10 : at + 12])
    locator = at - 20
    if entries == 0xFFFF and locator >= 0 and tail[locator : locator + 4] == b"PK\x06\x07":
        (record_at,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
        f.seek(min(record_at, size))
        record = f.read(56)
        f.seek(0)
        if len(record) == 56 and record[:4] == b"PK\x06\x06":
            (entries,) = struct.unpack("<Q", record[32:40])
    return entries
