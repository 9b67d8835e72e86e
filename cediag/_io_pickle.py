"""What a `.pt` file's pickle may do, decided by reading its opcodes before `torch.load` runs.

`torch.load(weights_only=True)` refuses code, but it still calls a few allowed builtins with
arguments taken from the file: `bytearray(6_000_000_000)`, `torch.UntypedStorage(n)` or
`torch.Tensor(n)` in a 2 KB file allocate gigabytes. So before torch sees the file, cediag reads
the pickle's opcodes (building no objects) and allows only what `torch.save` writes for tensors
and plain values:

- calls (REDUCE) of the tensor rebuild functions and `collections.OrderedDict` only, with the
  arguments torch.save gives them (sizes as tuples of integers, never a tensor to iterate);
- storage types, dtypes, `torch.Tensor` and `torch.nn.Parameter` named as values, never called;
- the opcodes torch's own weights-only unpickler reads, nothing else.

Anything else is refused with the name of the offending global. The same pass bounds the rest:
the pickle's size, a zip archive's records (stored, not compressed, as `torch.save` writes them),
and for a legacy (non-zip) file the storage sizes it declares, which torch allocates up front.
"""

from __future__ import annotations

import io
import struct
import sys
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, BinaryIO

from ._io_base import MAX_PICKLE_BYTES, MAX_TENSORS, zip_entries

TENSOR_REBUILDS = frozenset(
    {
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch._utils._rebuild_meta_tensor_no_storage",
    }
)
CALLABLE = TENSOR_REBUILDS | {
    "torch._tensor._rebuild_from_type_v2",  # a tensor with attributes: its first argument is checked
    "collections.OrderedDict",
    "torch.Size",
    "torch.device",
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class Refused(Exception):
    """The pickle does something a file of tensors never needs. `problem` says what."""

    def __init__(self, problem: str, *, code: bool = False, corrupt: bool = False):
        super().__init__(problem)
        self.problem = problem
        self.code = code  # a global torch itself would refuse: it could run code
        self.corrupt = corrupt  # not a pickle torch could read at all


@lru_cache(maxsize=1)
def _value_globals() -> frozenset[str]:
    """Globals a tensor pickle names without calling them: storage types, dtypes, classes."""
    import torch

    names = {"torch.Tensor", "torch.nn.parameter.Parameter"}
    for attr in dir(torch):
        value = getattr(torch, attr, None)
        if isinstance(value, torch.dtype):
            names.add(str(value))
        elif isinstance(value, type) and attr.endswith("Storage"):
            names.add(f"{value.__module__}.{value.__name__}")
    return frozenset(names)


def _torch_allows(name: str) -> bool:
    """Whether torch's weights-only unpickler would accept the global (so it is not code)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return name in _get_allowed_globals()
    except Exception:  # a torch without that helper: call it code, the safer wording
        return False


@dataclass(frozen=True)
class _Global:
    name: str


class _Other:
    """Any value the scan does not need to know (a list, a dict, a storage, a tensor)."""


_OTHER = _Other()


@dataclass
class Scan:
    """What the pickle holds that matters for memory: the storages it declares."""

    value: Any = None
    storages: list[tuple[Any, ...]] = field(default_factory=list)  # persistent ids


def scan_pickle(file: BinaryIO, limit: int = MAX_PICKLE_BYTES) -> Scan:
    """Read one pickle from `file` the way torch's weights-only unpickler does, calling nothing.

    Raises `Refused`. Leaves `file` just after the pickle's STOP, as unpickling would.
    """
    import _compat_pickle

    consumed = 0

    def read(n: int) -> bytes:
        nonlocal consumed
        if consumed + n > limit:  # before reading: a string may claim gigabytes
            raise Refused(f"its pickle is larger than {limit // 2**20} MiB")
        data = file.read(n)
        consumed += len(data)
        if len(data) < n:
            raise Refused("ends in the middle of its pickle (truncated)", corrupt=True)
        return data

    def readline() -> bytes:
        nonlocal consumed
        line = file.readline(limit - consumed + 1)
        consumed += len(line)
        if consumed > limit:
            raise Refused(f"its pickle is larger than {limit // 2**20} MiB")
        return line

    result = Scan()
    stack: list[Any] = []
    metastack: list[list[Any]] = []
    memo: dict[int, Any] = {}

    def pop_mark() -> list[Any]:
        nonlocal stack
        items = stack
        stack = metastack.pop()
        return items

    def push_global() -> None:
        try:
            module = readline()[:-1].decode("utf-8")
            name = readline()[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise Refused("is not a pickle torch can read (bad GLOBAL)", corrupt=True) from None
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        if full not in CALLABLE and full not in _value_globals():
            if _torch_allows(full):
                raise Refused(
                    f"refused to unpickle: it uses {full}, which a file of tensors never needs "
                    "and which torch would call with arguments from the file (a few bytes can "
                    "make it allocate gigabytes)"
                )
            raise Refused(
                "refused to unpickle: it holds Python objects other than tensors "
                f"({full}), which could run code when loaded",
                code=True,
            )
        stack.append(_Global(full))

    def reduce() -> None:
        args = stack.pop()
        func = stack[-1]
        name = func.name if isinstance(func, _Global) else None
        if name not in CALLABLE:
            shown = name or "a value that is not a function"
            raise Refused(
                f"refused to unpickle: it calls {shown}, which a file of tensors never calls "
                "(a few bytes of it can allocate gigabytes)"
            )
        _check_arguments(name, args)
        stack[-1] = _OTHER

    def short(value: bytes) -> Any:
        if len(value) > 256:
            return _OTHER
        try:
            return value.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return _OTHER

    def persistent() -> None:
        pid = stack.pop()
        if isinstance(pid, tuple):
            if not pid or pid[0] != "storage":
                raise Refused("refused to unpickle: a persistent id that is not a storage")
            result.storages.append(pid)
            if len(result.storages) > MAX_TENSORS:
                raise Refused(f"holds more than {MAX_TENSORS} storages")
        elif not isinstance(pid, int) or isinstance(pid, bool):
            raise Refused("refused to unpickle: a persistent id that is not a storage")
        stack.append(_OTHER)

    simple: dict[int, Callable[[], Any]] = {
        ord("N"): lambda: None,  # NONE
        0x89: lambda: False,  # NEWFALSE
        0x88: lambda: True,  # NEWTRUE
        ord(")"): tuple,  # EMPTY_TUPLE
        ord("]"): lambda: _OTHER,  # EMPTY_LIST
        ord("}"): lambda: _OTHER,  # EMPTY_DICT
        0x8F: lambda: _OTHER,  # EMPTY_SET
        ord("J"): lambda: struct.unpack("<i", read(4))[0],  # BININT
        ord("K"): lambda: read(1)[0],  # BININT1
        ord("M"): lambda: struct.unpack("<H", read(2))[0],  # BININT2
        ord("G"): lambda: struct.unpack(">d", read(8))[0],  # BINFLOAT
        0x8A: lambda: int.from_bytes(read(read(1)[0]), "little", signed=True),  # LONG1
        ord("U"): lambda: short(read(read(1)[0])),  # SHORT_BINSTRING
    }
    try:
        while True:
            op = read(1)[0]
            if op in simple:
                stack.append(simple[op]())
            elif op == 0x80:  # PROTO
                read(1)
            elif op == ord("."):  # STOP
                result.value = stack.pop()
                return result
            elif op == ord("c"):  # GLOBAL
                push_global()
            elif op == ord("R"):  # REDUCE
                reduce()
            elif op == ord("a"):  # APPEND
                stack.pop()
            elif op == ord("b"):  # BUILD: torch.save never writes it for tensors and values
                raise Refused(
                    "refused to unpickle: it sets the state of an object (BUILD), which a file "
                    "of tensors never does"
                )
            elif op in (ord("e"), ord("u")):  # APPENDS, SETITEMS
                pop_mark()
            elif op == ord("s"):  # SETITEM
                del stack[-2:]
            elif op == ord("("):  # MARK
                metastack.append(stack)
                stack = []
            elif op == ord("t"):  # TUPLE
                items = pop_mark()  # rebinds `stack`: append to the new one
                stack.append(tuple(items))
            elif op in (0x85, 0x86, 0x87):  # TUPLE1, TUPLE2, TUPLE3
                n = op - 0x84
                if len(stack) < n:
                    raise IndexError
                stack[-n:] = [tuple(stack[-n:])]
            elif op == ord("X"):  # BINUNICODE
                (length,) = struct.unpack("<I", read(4))
                if length > sys.maxsize:
                    raise Refused("is not a pickle torch can read (string too long)", corrupt=True)
                stack.append(short(read(length)))
            elif op == ord("Q"):  # BINPERSID
                persistent()
            elif op in (ord("h"), ord("j")):  # BINGET, LONG_BINGET
                index = read(1)[0] if op == ord("h") else struct.unpack("<I", read(4))[0]
                stack.append(memo[index])
            elif op in (ord("q"), ord("r")):  # BINPUT, LONG_BINPUT
                index = read(1)[0] if op == ord("q") else struct.unpack("<I", read(4))[0]
                memo[index] = stack[-1]
            else:
                raise Refused(
                    f"is not a pickle torch can read (unsupported opcode {bytes([op])!r})",
                    corrupt=True,
                )
    except (IndexError, KeyError):
        raise Refused("is not a well-formed pickle", corrupt=True) from None


def _ints(value: Any) -> bool:
    return isinstance(value, tuple) and all(type(v) is int for v in value)


def _check_arguments(name: str, args: Any) -> None:
    """The arguments of an allowed call are what torch.save writes: sizes and strides as tuples
    of integers (never a tensor, which torch would iterate element by element), an empty
    OrderedDict, and a subclass rebuilt only through a tensor rebuild function."""
    if not isinstance(args, tuple):
        ok = False
    elif name == "collections.OrderedDict":
        ok = args == ()
    elif name == "torch.Size":
        ok = len(args) == 1 and _ints(args[0])
    elif name == "torch.device":
        ok = len(args) <= 2 and all(isinstance(a, (str, int)) for a in args)
    elif name == "torch._tensor._rebuild_from_type_v2":
        func = args[0] if args else None
        if not (len(args) == 4 and isinstance(func, _Global) and func.name in TENSOR_REBUILDS):
            raise Refused(
                "refused to unpickle: it rebuilds a tensor subclass through "
                f"{getattr(func, 'name', 'an unknown function')}"
            )
        _check_arguments(func.name, args[2])
        return
    elif name == "torch._utils._rebuild_meta_tensor_no_storage":
        ok = len(args) == 4 and _ints(args[1]) and _ints(args[2])
    elif name in ("torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state"):
        ok = len(args) >= 3
    else:  # _rebuild_tensor, _v2, _v3: (storage, offset, size, stride, ...)
        ok = len(args) >= 4 and type(args[1]) is int and _ints(args[2]) and _ints(args[3])
    if not ok:
        raise Refused(
            f"refused to unpickle: it calls {name} with arguments torch.save never writes"
        )


@dataclass(frozen=True)
class TorchFile:
    """What the pre-scan learned: the format, and the bytes torch will copy into memory."""

    zipped: bool
    copied_bytes: int  # legacy storages, or a big-endian archive that torch byte-swaps


def inspect_torch_file(f: BinaryIO, size: int) -> TorchFile:
    """Check a `.pt` file before `torch.load` reads it. Raises `Refused`."""
    head = f.read(4)
    f.seek(0)
    if head == b"PK\x03\x04":
        return _inspect_zip(f, size)
    if head[:1] == b"\x80":
        return _inspect_legacy(f, size)
    raise Refused("is not a torch.save file (neither a zip archive nor a pickle)", corrupt=True)


def _inspect_zip(f: BinaryIO, size: int) -> TorchFile:
    if (zip_entries(f, size) or 0) > MAX_TENSORS + 16:
        raise Refused(f"holds more than {MAX_TENSORS} records")
    try:
        archive = zipfile.ZipFile(f)
    except zipfile.BadZipFile:
        raise Refused(
            "is truncated or corrupt (not a complete zip archive)", corrupt=True
        ) from None
    with archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        if not infos:
            raise Refused("is an empty zip archive, not a torch.save file", corrupt=True)
        if len(set(names)) != len(names):
            raise Refused("is a zip archive with two records of one name", corrupt=True)
        if len(infos) > MAX_TENSORS + 16:
            raise Refused(f"holds more than {MAX_TENSORS} records")
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                raise Refused(
                    f"has a compressed or encrypted record ({info.filename}); torch.save "
                    "never compresses, and unpacking one could take any amount of memory"
                )
            if info.file_size != info.compress_size or info.header_offset + info.file_size > size:
                raise Refused(
                    f"has a record that does not fit in the file ({info.filename})", corrupt=True
                )
        prefix = names[0].split("/", 1)[0]
        pickle_name = f"{prefix}/data.pkl"
        if pickle_name not in names:
            if f"{prefix}/constants.pkl" in names:
                raise Refused("is a TorchScript archive (torch.jit.save), not saved tensors")
            raise Refused("is a zip archive but not a torch.save file (no data.pkl)", corrupt=True)
        info = archive.getinfo(pickle_name)
        if info.file_size > MAX_PICKLE_BYTES:
            raise Refused(f"its pickle is larger than {MAX_PICKLE_BYTES // 2**20} MiB")
        data = archive.read(pickle_name)
        byteorder_name = f"{prefix}/byteorder"
        big = byteorder_name in names and archive.read(byteorder_name).strip() == b"big"
    _same_record_as_torch(f, archive, info)
    scan_pickle(io.BytesIO(data))
    return TorchFile(zipped=True, copied_bytes=size if big and sys.byteorder == "little" else 0)


def _same_record_as_torch(f: BinaryIO, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """The pickle just scanned is the one torch will unpickle: its reader finds the same bytes."""
    try:
        import torch

        reader = torch._C.PyTorchFileReader(f)
        offset = reader.get_record_offset("data.pkl")
    except Exception:  # torch cannot read the archive: torch.load will say so itself
        f.seek(0)
        return
    f.seek(info.header_offset)
    local = f.read(30)
    f.seek(0)
    if len(local) == 30 and local[:4] == b"PK\x03\x04":
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        if offset == info.header_offset + 30 + name_len + extra_len:
            return
    raise Refused("is a zip archive whose records two readers see differently", corrupt=True)


def _inspect_legacy(f: BinaryIO, size: int) -> TorchFile:
    """A pre-1.6 `torch.save` file: five pickles, then each storage as 8 bytes + its data."""
    magic = scan_pickle(f).value
    if magic != LEGACY_MAGIC:
        raise Refused("is not a torch.save file (a bare pickle)", corrupt=True)
    scan_pickle(f)  # protocol version
    scan_pickle(f)  # system info
    storages = scan_pickle(f).storages
    scan_pickle(f)  # the storage keys
    declared: dict[Any, int] = {}
    for pid in storages:
        if len(pid) != 6 or not isinstance(pid[4], int) or pid[4] < 0:
            raise Refused("declares a storage torch cannot read", corrupt=True)
        _, storage_type, key, _, numel, _ = pid
        declared[key] = numel * _element_size(storage_type)
    needed = sum(declared.values()) + 8 * len(declared)
    if needed > size - f.tell():
        raise Refused(
            f"declares {needed} bytes of tensor data but holds {size - f.tell()}: "
            "it is truncated or crafted",
            corrupt=True,
        )
    f.seek(0)
    return TorchFile(zipped=False, copied_bytes=sum(declared.values()))


def _element_size(storage_type: Any) -> int:
    import torch

    name = storage_type.name if isinstance(storage_type, _Global) else ""
    attr = name.rsplit(".", 1)[-1]
    if attr == "UntypedStorage":
        return 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy storage classes warn that they are deprecated
        dtype = getattr(getattr(torch, attr, None), "dtype", None)
    return dtype.itemsize if isinstance(dtype, torch.dtype) else 8
