"""Loading saved tensors safely: the batch that crashed, a reproducer dump, a CI fixture.

`load(path)` reads a file holding a whole call (a dict with `input` and `target`, or a dump
written by the training-loop guard); `load(input, target)` pairs two files. Every reader maps
the file instead of copying it where it can, so a multi-gigabyte logits file costs little
anonymous memory:

- `.pt` / `.pth`: the pickle's opcodes are checked first (`_io_pickle`: only what tensors need),
  then `torch.load(weights_only=True, map_location="cpu", mmap=True)`; arbitrary pickles are
  refused unless `unsafe=True` is passed deliberately;
- `.safetensors`: the header is validated here (`_io_safetensors`) and each tensor is a
  zero-copy view of a private (copy-on-write) memory map; `file.safetensors:logits` picks one;
- `.npy` / `.npz`: headers read here (`_io_numpy`), data mapped, or copied within the limit.

What a file may make cediag allocate is bounded (`_io_base`): a file that asks for more is
refused before anything is allocated. Every failure is a `LoadError` whose message is one line
naming the file and what to do.
"""

from __future__ import annotations

import html
import json
import os
import pickle
import re
import stat
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ._io_base import MAX_SIDECAR_BYTES, SAVE_HINT, copy_limit, first_line, too_big_to_copy
from ._io_base import IncompleteCall as IncompleteCall
from ._io_base import LoadError as LoadError
from ._io_numpy import read_npy, read_npz
from ._io_pickle import Refused, inspect_torch_file
from ._io_safetensors import read_safetensors


def _scalar_option_names() -> tuple[str, ...]:
    """Every family's scalar options (`ignore_index`, `reduction`, ...), and `loss`."""
    from .families import FAMILIES

    names = [o.name for f in FAMILIES.values() for o in f.options if o.kind != "tensor"]
    return (*dict.fromkeys(names), "loss")


def _tensor_option_names() -> tuple[str, ...]:
    """Every family's tensor options other than `weight` (`pos_weight`, `linear_weight`, ...)."""
    from .families import FAMILIES

    names = [o.name for f in FAMILIES.values() for o in f.options if o.kind == "tensor"]
    return tuple(n for n in dict.fromkeys(names) if n != "weight")


OPTION_NAMES = _scalar_option_names()
TENSOR_OPTION_NAMES = _tensor_option_names()
INPUT_KEYS = ("input", "logits", "inputs", "outputs", "output")
TARGET_KEYS = ("target", "targets", "labels", "label", "y")
WEIGHT_KEYS = ("weight",)
SUFFIXES = (".pt", ".pth", ".safetensors", ".npy", ".npz")


@dataclass(repr=False)
class SavedCall:
    """One loss call read back from disk: `cediag.check(**saved.check_kwargs())`."""

    input: Any
    target: Any
    weight: Any = None
    options: dict[str, Any] = field(default_factory=dict)  # ignore_index, reduction, loss, ...
    source: str = ""  # the file(s) it came from, for reports
    notes: list[str] = field(default_factory=list)  # what was skipped while reading
    # the family's other tensor arguments: pos_weight, linear_weight, linear_bias
    tensors: dict[str, Any] = field(default_factory=dict)

    def check_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Arguments for `cediag.check`; `overrides` (not None) win over the saved options."""
        from .families import family_of

        given = {k: v for k, v in overrides.items() if v is not None}
        options = {**self.options, **self.tensors, **given}  # the command line wins
        if self.weight is not None:
            options["weight"] = self.weight
        try:
            known = family_of(options.get("loss", "cross_entropy")).option_names
        except ValueError:  # an unknown loss: check() says so
            known = tuple(options)
        for name in [n for n in options if n not in known and n != "loss"]:
            if name in given:
                flag = f"--{name.replace('_', '-')}"
                if isinstance(given[name], torch.Tensor):
                    flag = f"--tensor {name}"
                raise ValueError(f"{flag} is not an option of loss={options.get('loss')!r}")
            del options[name]
            self.notes.append(f"{name} ignored: not an option of loss={options.get('loss')!r}")
        return {"input": self.input, "target": self.target, **options}

    def __repr__(self) -> str:
        """Shapes, dtypes and options, never the values: `SavedCall(input=(8, 5) float32, ...)`."""
        parts = [f"{role}={_summary(getattr(self, role))}" for role in ("input", "target")]
        if self.weight is not None:
            parts.append(f"weight={_summary(self.weight)}")
        parts += [f"{role}={_summary(value)}" for role, value in self.tensors.items()]
        if self.options:
            parts.append(f"options={self.options!r}")
        if self.source:
            parts.append(f"source={self.source!r}")
        if self.notes:
            parts.append(f"notes={len(self.notes)}")
        return f"SavedCall({', '.join(parts)})"

    def _repr_html_(self) -> str:
        """A small table for notebooks: one row per tensor, then the options, source and notes."""
        rows = [("input", self.input), ("target", self.target)]
        if self.weight is not None:
            rows.append(("weight", self.weight))
        rows += list(self.tensors.items())
        cells = "".join(
            f"<tr><td>{role}</td><td>{html.escape(_summary(value))}</td></tr>"
            for role, value in rows
        )
        extra = [("options", ", ".join(f"{k}={v!r}" for k, v in self.options.items()) or "-")]
        if self.source:
            extra.append(("source", self.source))
        extra.extend(("note", note) for note in self.notes)
        cells += "".join(
            f"<tr><td>{name}</td><td>{html.escape(str(text))}</td></tr>" for name, text in extra
        )
        return f"<table><caption>cediag SavedCall</caption>{cells}</table>"


def _summary(value: Any) -> str:
    """`(8, 5) float32` (plus the device when not CPU) for a tensor; the type name otherwise."""
    if not isinstance(value, torch.Tensor):
        return type(value).__name__
    try:
        dims = tuple(int(d) for d in value.shape)
        device = "" if value.device.type == "cpu" else f" {value.device}"
    except Exception:  # a nested or odd subclass that will not say
        return type(value).__name__
    shape = f"({dims[0]},)" if len(dims) == 1 else str(dims)
    return f"{shape} {str(value.dtype).removeprefix('torch.')}{device}"


@dataclass
class _Contents:
    """What a file holds: named tensors (a bare tensor is under the key ""), and options."""

    tensors: Mapping[str, torch.Tensor]
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
    taken = {input_name, target_name, weight_name}
    extra = {
        name: value
        for name, value in contents.tensors.items()
        if name in TENSOR_OPTION_NAMES and name not in taken
    }
    return SavedCall(
        contents.tensors[input_name],
        contents.tensors[target_name],
        w,
        options=contents.options,
        tensors=extra,
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
    candidates = {"input": INPUT_KEYS, "target": TARGET_KEYS, "weight": WEIGHT_KEYS}.get(
        role, (role,)
    )
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
    names = _names(tensors) or "one bare tensor"
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
    names = _names(contents.tensors) or "one bare tensor, no keys"
    return LoadError(file, f"has no tensor {key!r} (it holds {names})", "pick one of those keys")


def _names(tensors: Mapping[str, torch.Tensor], shown: int = 12) -> str:
    """The keys, quoted; past `shown`, how many more (a file may hold thousands)."""
    keys = [k for k in tensors if k]
    text = ", ".join(repr(k) for k in keys[:shown])
    return text + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


# ---------------------------------------------------------------- reading files


def _read(file: Path, unsafe: bool) -> _Contents:
    try:
        info = os.stat(file)
    except FileNotFoundError:
        raise LoadError(
            file, "no such file", "check the path (and the working directory)"
        ) from None
    except PermissionError:
        raise _denied(file) from None
    except OSError as error:
        raise LoadError(
            file, f"cannot be read ({error.strerror or error})", "check the path"
        ) from None
    if stat.S_ISDIR(info.st_mode):
        raise LoadError(file, "is a directory", "give a file (.pt, .safetensors, .npy, .npz)")
    if not stat.S_ISREG(info.st_mode):
        raise LoadError(
            file,
            "is not a regular file (a pipe, socket or device)",
            "save the tensors to a file and give its path",
        )
    size = info.st_size
    if size == 0:
        raise LoadError(
            file, "is empty (0 bytes)", "the save was probably interrupted: " + SAVE_HINT
        )
    kind = "?"
    try:
        with open(file, "rb") as f:
            kind = _kind(file, f.read(16))
            f.seek(0)
            if kind == "torch":
                return _read_torch(file, f, size, unsafe)
            if kind == "safetensors":
                tensors, metadata = read_safetensors(file, f, size)
                options, notes = _dump_options(file, metadata)
                return _Contents(tensors, options, notes)
            if kind == "npy":
                return _Contents({"": read_npy(file, f, size)})
            arrays, notes = read_npz(file, f, size)
            return _Contents(arrays, notes=notes)
    except LoadError:
        raise
    except PermissionError:
        raise _denied(file) from None
    except MemoryError:
        raise LoadError(file, "does not fit in memory", "save it as .safetensors or .pt") from None
    except Exception as error:  # a reader failed in a way not classified below: still one line
        raise LoadError(
            file,
            f"could not be read as {kind} ({type(error).__name__}: {first_line(error)})",
            "check that the file is complete and of that type",
        ) from None


def _denied(file: Path) -> LoadError:
    return LoadError(
        file,
        "cannot be read (permission denied)",
        "check its permissions and those of the folders above it",
    )


def _kind(file: Path, head: bytes) -> str:
    suffix = file.suffix.lower()
    if suffix in (".pt", ".pth"):
        return "torch"
    if suffix in (".safetensors", ".npy", ".npz"):
        return suffix[1:]
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


def _read_torch(file: Path, f: BinaryIO, size: int, unsafe: bool) -> _Contents:
    zipped = f.read(4) == b"PK\x03\x04"
    f.seek(0)
    if not unsafe:
        zipped = _inspect_torch(file, f, size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: not for users
            # The zip format is mapped; a legacy file can only be copied (its size was checked).
            obj = torch.load(
                _torch_path(file, f), weights_only=not unsafe, map_location="cpu", mmap=zipped
            )
    except pickle.UnpicklingError as error:
        text = str(error)
        if "Weights only load failed" in text:
            culprit = re.search(r"(?:GLOBAL|global) ([\w.]+)", text)
            what = f" ({culprit.group(1)})" if culprit else ""
            raise LoadError(
                file,
                f"refused to unpickle: it holds Python objects other than tensors{what}, "
                "which could run code when loaded",
                _UNSAFE_HINT,
            ) from None
        raise LoadError(file, "is not a torch.save file (bad pickle)", SAVE_HINT) from None
    except PermissionError:
        raise _denied(file) from None
    except (OSError, EOFError, zipfile.BadZipFile):
        raise LoadError(
            file, "is truncated or corrupt (not a complete torch.save file)", SAVE_HINT
        ) from None
    except RuntimeError as error:
        text = str(error)
        if "magic number" in text or "PytorchStreamReader" in text or "zip archive" in text:
            raise LoadError(
                file, f"is truncated or corrupt ({first_line(error)})", SAVE_HINT
            ) from None
        raise
    return _from_object(file, obj)


_UNSAFE_HINT = (
    "save plain tensors (a dict of tensors, or .safetensors), "
    "or pass --unsafe-load only if you trust where the file came from"
)


def _inspect_torch(file: Path, f: BinaryIO, size: int) -> bool:
    """Read the pickle's opcodes before torch runs them; True for the zip format."""
    try:
        found = inspect_torch_file(f, size)
    except Refused as refused:
        if refused.corrupt:
            raise LoadError(file, refused.problem, SAVE_HINT) from None
        hint = (
            _UNSAFE_HINT
            if refused.code
            else "save plain tensors (a dict of tensors, or .safetensors)"
        )
        raise LoadError(file, refused.problem, hint) from None
    finally:
        f.seek(0)
    if found.copied_bytes > copy_limit(file):
        if found.zipped:
            why = "it was saved big-endian, and torch byte-swaps it in memory"
            convert = (
                "load it once and save it again on a little-endian machine, or as .safetensors"
            )
        else:
            why = "a legacy (pre-1.6 format) torch.save file cannot be mapped"
            convert = "save it again with a current torch.save (the zip format) or as .safetensors"
        raise too_big_to_copy(file, found.copied_bytes, why, convert)
    return found.zipped


def _torch_path(file: Path, f: BinaryIO) -> str:
    """A path torch's C++ reader can open: the file's own, or its descriptor's when the name is
    not valid UTF-8 (torch cannot encode it; Python and the OS can)."""
    text = os.fspath(file)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    for folder in ("/proc/self/fd", "/dev/fd"):
        candidate = f"{folder}/{f.fileno()}"
        if os.path.exists(candidate):
            return candidate
    raise LoadError(
        file, "has a file name that is not valid UTF-8, which torch cannot open", "rename it"
    )


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


def _dump_options(file: Path, metadata: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Options of a guard dump: safetensors metadata, overridden by the JSON sidecar."""
    options: dict[str, Any] = {}
    notes: list[str] = []
    if metadata.get("cediag_dump") == "1":
        options = {k: _parse_option(k, metadata[k]) for k in OPTION_NAMES if k in metadata}
    sidecar = file.with_suffix(".json")
    if sidecar.is_file():
        try:
            with open(sidecar, "rb") as f:
                text = f.read(MAX_SIDECAR_BYTES + 1)
            if len(text) > MAX_SIDECAR_BYTES:
                raise ValueError(f"larger than {MAX_SIDECAR_BYTES // 2**20} MiB")
            data = json.loads(text.decode("utf-8"))
            saved = data.get("options", {}) if isinstance(data, dict) else {}
            if not isinstance(saved, dict):
                raise ValueError("its options are not an object")
            options.update({k: saved[k] for k in OPTION_NAMES if k in saved})
        except (OSError, ValueError, RecursionError) as error:  # JSON and UTF-8 errors too
            notes.append(f"ignored the sidecar {sidecar.name}: {first_line(error)}")
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
