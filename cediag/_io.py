"""Loading saved tensors safely: the batch that crashed, a reproducer dump, a CI fixture.

`load(path)` reads a file holding a whole call (a dict with `input` and `target`, or a dump
written by the training-loop guard); `load(input, target)` pairs two files. Every reader maps
the file instead of copying it, so a multi-gigabyte logits file costs little anonymous memory:

- `.pt` / `.pth`: `torch.load(weights_only=True, map_location="cpu", mmap=True)`; arbitrary
  pickles are refused unless `unsafe=True` is passed deliberately;
- `.safetensors`: the header is parsed here and each tensor is a zero-copy view of a private
  (copy-on-write) memory map; `file.safetensors:logits` picks a tensor by key;
- `.npy`: `numpy.load(mmap_mode="c", allow_pickle=False)`; `.npz` (zip, read into memory).

Every failure is a `LoadError` whose message is one line naming the file and what to do.
"""

from __future__ import annotations

import json
import mmap
import os
import pickle
import re
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

OPTION_NAMES = ("ignore_index", "reduction", "label_smoothing", "loss")
INPUT_KEYS = ("input", "logits", "inputs", "outputs", "output")
TARGET_KEYS = ("target", "targets", "labels", "label", "y")
WEIGHT_KEYS = ("weight",)
SUFFIXES = (".pt", ".pth", ".safetensors", ".npy", ".npz")

_SAVE_HINT = "save it again with torch.save({'input': logits, 'target': target}, path)"

_SAFETENSORS_DTYPES = {
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


class LoadError(Exception):
    """A file could not be read as tensors. `str()` is one line: the file, the problem, the fix."""

    def __init__(self, path: str | os.PathLike, problem: str, hint: str):
        self.path = str(path)
        self.problem = problem
        self.hint = hint
        super().__init__(f"{self.path}: {problem}; {hint}")


class IncompleteCall(LoadError):
    """The file holds tensors, but not a whole call (no target): give the target separately."""


@dataclass
class SavedCall:
    """One cross-entropy call read back from disk: `cediag.check(**saved.check_kwargs())`."""

    input: Any
    target: Any
    weight: Any = None
    options: dict[str, Any] = field(default_factory=dict)  # ignore_index, reduction, ...
    source: str = ""  # the file(s) it came from, for reports
    notes: list[str] = field(default_factory=list)  # what was skipped while reading

    def check_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Arguments for `cediag.check`; `overrides` (not None) win over the saved options."""
        options = {**self.options, **{k: v for k, v in overrides.items() if v is not None}}
        return {"input": self.input, "target": self.target, "weight": self.weight, **options}


@dataclass
class _Contents:
    """What a file holds: named tensors (a bare tensor is under the key ""), and options."""

    tensors: dict[str, torch.Tensor]
    options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- public entry points


def load(
    path: str | os.PathLike,
    target: str | os.PathLike | None = None,
    *,
    weight: str | os.PathLike | None = None,
    input_key: str | None = None,
    target_key: str | None = None,
    weight_key: str | None = None,
    unsafe: bool = False,
) -> SavedCall:
    """Read a saved call.

    With one path, the file holds the whole call: a dict `{"input": ..., "target": ...}`
    (`.pt`, `.safetensors`, `.npz`; other key names via `input_key` / `target_key`), or a dump of
    the training-loop guard (options from its metadata, or from the JSON sidecar next to it).
    With `target`, `path` and `target` each hold one tensor (`file.safetensors:KEY` picks one).
    Raises `LoadError` (one line: file, problem, what to do); never unpickles code unless
    `unsafe=True`.
    """
    if target is not None:
        x = load_tensor(path, role="input", key=input_key, unsafe=unsafe)
        t = load_tensor(target, role="target", key=target_key, unsafe=unsafe)
        w = None if weight is None else load_tensor(weight, role="weight", unsafe=unsafe)
        source = f"{path} (target {target}" + (f", weight {weight})" if weight else ")")
        return SavedCall(x, t, w, source=source)

    file, key = split_key(path)
    if key is not None:
        raise IncompleteCall(path, "a key picks a single tensor", "give the target file too")
    contents = _read(file, unsafe)
    input_name = _pick(file, contents, input_key, INPUT_KEYS, "input", whole_call=True)
    target_name = _pick(file, contents, target_key, TARGET_KEYS, "target", whole_call=True)
    weight_name = weight_key or next((k for k in WEIGHT_KEYS if k in contents.tensors), None)
    if weight_key is not None and weight_key not in contents.tensors:
        raise _missing_key(file, contents, weight_key)
    w = contents.tensors[weight_name] if weight_name else None
    if weight is not None:
        w = load_tensor(weight, role="weight", unsafe=unsafe)
    return SavedCall(
        contents.tensors[input_name],
        contents.tensors[target_name],
        w,
        options=contents.options,
        source=str(path),
        notes=contents.notes,
    )


def load_tensor(
    spec: str | os.PathLike,
    *,
    role: str = "input",
    key: str | None = None,
    unsafe: bool = False,
) -> torch.Tensor:
    """Read one tensor: a file holding one tensor, `file:KEY`, or the `role` entry of a dict."""
    file, spec_key = split_key(spec)
    key = spec_key or key
    contents = _read(file, unsafe)
    candidates = {"input": INPUT_KEYS, "target": TARGET_KEYS, "weight": WEIGHT_KEYS}[role]
    return contents.tensors[_pick(file, contents, key, candidates, role, whole_call=False)]


def split_key(spec: str | os.PathLike) -> tuple[Path, str | None]:
    """`data.safetensors:logits` -> (Path("data.safetensors"), "logits"); a plain path -> None."""
    text = os.fspath(spec)
    if os.path.exists(text):
        return Path(text), None
    head, sep, tail = text.rpartition(":")
    if sep and tail and head.lower().endswith(SUFFIXES):
        return Path(head), tail
    return Path(text), None


# ---------------------------------------------------------------- choosing tensors by key


def _pick(
    file: Path,
    contents: _Contents,
    key: str | None,
    candidates: tuple[str, ...],
    role: str,
    *,
    whole_call: bool,
) -> str:
    tensors = contents.tensors
    if key is not None:
        if key not in tensors:
            raise _missing_key(file, contents, key)
        return key
    found = next((k for k in candidates if k in tensors), None)
    if found is not None:
        return found
    if not whole_call and len(tensors) == 1:
        return next(iter(tensors))
    names = ", ".join(repr(k) for k in tensors if k) or "one bare tensor"
    if whole_call and role == "target":
        raise IncompleteCall(
            file,
            f"holds no target tensor (it holds {names})",
            "give the target file as a second argument, or name it with --target-key",
        )
    if whole_call and role == "input" and len(tensors) == 1:
        raise IncompleteCall(
            file, "holds a single tensor, not a call", "give the target file as a second argument"
        )
    option = {"input": "--input-key", "target": "--target-key", "weight": "--weight-key"}[role]
    raise LoadError(
        file,
        f"holds several tensors ({names}) and none is named {role!r}",
        f"pick the {role} with {file}:KEY or {option} KEY",
    )


def _missing_key(file: Path, contents: _Contents, key: str) -> LoadError:
    names = ", ".join(repr(k) for k in contents.tensors if k) or "one bare tensor, no keys"
    return LoadError(file, f"has no tensor {key!r} (it holds {names})", "pick one of those keys")


# ---------------------------------------------------------------- reading files


def _read(file: Path, unsafe: bool) -> _Contents:
    if not file.exists():
        raise LoadError(file, "no such file", "check the path (and the working directory)")
    if file.is_dir():
        raise LoadError(file, "is a directory", "give a file (.pt, .safetensors, .npy, .npz)")
    try:
        size = file.stat().st_size
    except OSError as error:
        raise LoadError(
            file, f"cannot be read ({error.strerror})", "check its permissions"
        ) from None
    if size == 0:
        raise LoadError(
            file, "is empty (0 bytes)", "the save was probably interrupted: " + _SAVE_HINT
        )
    kind = _kind(file)
    try:
        if kind == "torch":
            return _read_torch(file, unsafe)
        if kind == "safetensors":
            return _read_safetensors(file)
        if kind == "npy":
            return _read_npy(file)
        return _read_npz(file)
    except LoadError:
        raise
    except PermissionError:
        raise LoadError(
            file, "cannot be read (permission denied)", "check its permissions"
        ) from None
    except MemoryError:
        raise LoadError(file, "does not fit in memory", "save it as .safetensors or .pt") from None
    except Exception as error:  # a reader failed in a way not classified below: still one line
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise LoadError(
            file,
            f"could not be read as {kind} ({type(error).__name__}: {first[:200]})",
            "check that the file is complete and of that type",
        ) from None


def _kind(file: Path) -> str:
    suffix = file.suffix.lower()
    if suffix in (".pt", ".pth"):
        return "torch"
    if suffix in (".safetensors", ".npy", ".npz"):
        return suffix[1:]
    with open(file, "rb") as f:
        head = f.read(16)
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK"):
        return "torch"  # torch.save's zip; an .npz without its suffix reads as an error here
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    raise LoadError(
        file,
        f"unknown file type {file.suffix or '(no suffix)'}",
        "use .pt/.pth (torch.save), .safetensors, .npy or .npz",
    )


def _read_torch(file: Path, unsafe: bool) -> _Contents:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: not for users
            try:
                obj = torch.load(file, weights_only=not unsafe, map_location="cpu", mmap=True)
            except RuntimeError as error:
                if "mmap can only be used" not in str(error):
                    raise
                # A legacy (non-zip) torch.save file: readable, but only by copying it.
                obj = torch.load(file, weights_only=not unsafe, map_location="cpu")
    except pickle.UnpicklingError as error:
        text = str(error)
        if "Weights only load failed" in text:
            culprit = re.search(r"(?:GLOBAL|global) ([\w.]+)", text)
            what = f" ({culprit.group(1)})" if culprit else ""
            raise LoadError(
                file,
                f"refused to unpickle: it holds Python objects other than tensors{what}, "
                "which could run code when loaded",
                "save plain tensors (a dict of tensors, or .safetensors), "
                "or pass --unsafe-load only if you trust where the file came from",
            ) from None
        raise LoadError(file, "is not a torch.save file (bad pickle)", _SAVE_HINT) from None
    except (OSError, EOFError, zipfile.BadZipFile):
        raise LoadError(
            file, "is truncated or corrupt (not a complete torch.save file)", _SAVE_HINT
        ) from None
    except RuntimeError as error:
        text = str(error)
        if "magic number" in text or "PytorchStreamReader" in text or "zip archive" in text:
            raise LoadError(
                file, f"is truncated or corrupt ({_first_line(error)})", _SAVE_HINT
            ) from None
        raise
    return _from_object(file, obj)


def _from_object(file: Path, obj: Any) -> _Contents:
    """What torch.load returned: a tensor, a dict of tensors (and options), or a tuple."""
    if isinstance(obj, torch.Tensor):
        return _Contents({"": obj})
    is_sequence = isinstance(obj, (list, tuple)) and 2 <= len(obj) <= 3
    if is_sequence and all(isinstance(v, torch.Tensor) for v in obj):
        return _Contents(dict(zip(("input", "target", "weight"), obj, strict=False)))
    if isinstance(obj, dict):
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        options = {k: obj[k] for k in OPTION_NAMES if k in obj and _is_scalar(obj[k])}
        nested = obj.get("options")
        if isinstance(nested, dict):
            options.update(
                {k: nested[k] for k in OPTION_NAMES if k in nested and _is_scalar(nested[k])}
            )
        if tensors:
            return _Contents(tensors, options)
        kinds = sorted({type(v).__name__ for v in obj.values()}) or ["nothing"]
        raise LoadError(
            file, f"holds a dict of {', '.join(kinds)}, no tensors", "save the tensors themselves"
        )
    raise LoadError(
        file,
        f"holds a {type(obj).__name__}, not tensors",
        "save a tensor or a dict of tensors ({'input': logits, 'target': target})",
    )


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str)) and not isinstance(value, bool)


def _read_safetensors(file: Path) -> _Contents:
    size = file.stat().st_size
    with open(file, "rb") as f:
        if size < 8:
            raise LoadError(file, "is truncated (no safetensors header)", "save it again")
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > min(size - 8, 100_000_000):
            raise LoadError(
                file, "is truncated or not a safetensors file (header too long)", "save it again"
            )
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise LoadError(
                file, "is not a safetensors file (bad header)", "save it again"
            ) from None
        if not isinstance(header, dict):
            raise LoadError(file, "is not a safetensors file (bad header)", "save it again")
        metadata = header.pop("__metadata__", None) or {}
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size > 8 else None
    start = 8 + header_len
    tensors: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        try:
            dtype = _SAFETENSORS_DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise LoadError(
                file, f"has a tensor {name!r} of unsupported dtype or bad header", "save it again"
            ) from None
        numel = 1
        for d in shape:
            numel *= d
        if end - begin != numel * dtype.itemsize or begin < 0:
            raise LoadError(file, f"has a corrupt header for tensor {name!r}", "save it again")
        if start + end > size:
            raise LoadError(
                file,
                f"is truncated: tensor {name!r} needs {start + end} bytes, the file has {size}",
                "copy or save it again",
            )
        if numel == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
        else:  # a zero-copy view of the private map: pages are read from disk when touched
            flat = torch.frombuffer(mapped, dtype=dtype, count=numel, offset=start + begin)
            tensors[name] = flat.reshape(shape)
    options, notes = _dump_options(file, metadata)
    return _Contents(tensors, options, notes)


def _dump_options(file: Path, metadata: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Options of a guard dump: safetensors metadata, overridden by the JSON sidecar."""
    options: dict[str, Any] = {}
    notes: list[str] = []
    if metadata.get("cediag_dump") == "1":
        options = {k: _parse_option(k, metadata[k]) for k in OPTION_NAMES if k in metadata}
    sidecar = file.with_suffix(".json")
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text())
            saved = data.get("options", {}) if isinstance(data, dict) else {}
            options.update({k: saved[k] for k in OPTION_NAMES if k in saved})
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            notes.append(f"ignored the sidecar {sidecar.name}: {_first_line(error)}")
    return options, notes


def _parse_option(name: str, text: str) -> Any:
    try:
        if name == "ignore_index":
            return int(text)
        if name == "label_smoothing":
            return float(text)
    except ValueError:
        return text  # left as written: the check reports it as an invalid option
    return text


def _read_npy(file: Path) -> _Contents:
    import numpy as np

    try:
        array = np.load(file, mmap_mode="c", allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error) or "Python objects" in str(error):
            raise LoadError(
                file,
                "refused: it is an object array (a pickle), not numbers",
                "save a numeric array with numpy.save",
            ) from None
        raise LoadError(
            file, f"is truncated or corrupt ({_first_line(error)})", "save it again"
        ) from None
    return _Contents({"": _from_numpy(file, array)})


def _read_npz(file: Path) -> _Contents:
    import numpy as np

    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise LoadError(
                file, "refused: it holds an object array (a pickle)", "save numeric arrays only"
            ) from None
        raise LoadError(
            file, f"is truncated or corrupt ({_first_line(error)})", "save it again"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise LoadError(
            file, f"is truncated or corrupt ({_first_line(error)})", "save it again"
        ) from None
    if not arrays:
        raise LoadError(file, "holds no arrays", "save the arrays with numpy.savez")
    return _Contents({name: _from_numpy(file, a) for name, a in arrays.items()})


def _from_numpy(file: Path, array: Any) -> torch.Tensor:
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))  # torch reads native order only
    try:
        return torch.from_numpy(array)
    except TypeError:
        raise LoadError(
            file, f"holds a numpy {array.dtype} array, which torch cannot read", "save numbers"
        ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]
