"""Reproducer dumps: the (input, target, options) of a failing call, saved to share or re-check.

Format (read back by `cediag.load` and `cediag check`):
- `<stem>.safetensors` with every tensor argument by role (`input`, `target`, and those of the
  loss's family that were given: `weight`, `pos_weight`, `linear_weight`, ...; detached,
  contiguous CPU copies) and string metadata `cediag_dump="1"`, `loss` and the family's scalar
  options (`ignore_index`, `reduction`, `label_smoothing` for cross-entropy);
- `<stem>.json`: {"schema_version": 1, "options": {...}, "report": <Report as JSON>,
  "call_site": "file.py:123"}.

Copying is fine here: a dump is written on the failure path only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from ._report import Report
from .families._declaration import FamilyCall

DUMP_SCHEMA_VERSION = 1


def _cpu_copy(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", copy=True).contiguous()


def dump_options(call: FamilyCall) -> dict[str, Any]:
    """The options as the loss received them. A value the check found invalid is written as it
    was (a JSON scalar, else its repr), never replaced by a default: a re-check of the dump must
    find what the guard found."""
    written = {name: _as_written(value) for name, value in call.written_options().items()}
    return {**written, "loss": call.loss}


def _as_written(value: Any) -> Any:
    if value is None or type(value) in (bool, int, float, str):
        return value
    return repr(value)


def write_dump(
    directory: str | Path, stem: str, call: FamilyCall, report: Report, site: str
) -> Path:
    """Write `<directory>/<stem>.safetensors` and its JSON sidecar; return the .safetensors path.

    Raises ValueError when the arguments cannot be saved (not tensors, or meta tensors).
    """
    from safetensors.torch import save_file

    tensors = call.tensors()
    for role, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"cannot save {role}: a {type(t).__name__}, not a tensor")
        if t.is_meta:
            raise ValueError(f"cannot save {role}: a meta tensor holds no data")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_.") or "cediag-dump"
    path = directory / f"{stem}.safetensors"
    options = dump_options(call)
    metadata = {"cediag_dump": "1", **{key: str(value) for key, value in options.items()}}
    save_file({k: _cpu_copy(v) for k, v in tensors.items()}, str(path), metadata=metadata)
    sidecar = {
        "schema_version": DUMP_SCHEMA_VERSION,
        "options": options,
        "report": report.model_dump(mode="json"),
        "call_site": site,
    }
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return path
