"""Reading a saved batch: `cediag check batch.pt` on a file holding a collated batch dict.

The file is read by cediag's own safe loaders (`cediag._io`: a checked pickle and
`weights_only=True`, safetensors, npz); a file holds a batch when it has `input_ids` and
`labels` and no logits (a file with logits holds a loss call, read by `cediag.load`).
`pad_token_id`, `eos_token_id` and `ignore_index` saved with it as 0-d integer tensors
(`torch.tensor(tokenizer.pad_token_id)`) are read as the ids of the check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from .._io import INPUT_KEYS, _read, split_key

BATCH_KEYS = ("input_ids", "labels")
ID_KEYS = ("pad_token_id", "eos_token_id", "ignore_index")


@dataclass(repr=False)
class SavedBatch:
    """A collated batch read back from disk: `check_batch(saved.batch, **saved.options)`."""

    batch: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)  # ignore_index when saved with it
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        keys = ", ".join(sorted(self.batch))
        return f"SavedBatch({keys}, source={self.source!r})"


def load_batch(path: str | os.PathLike, *, unsafe: bool = False) -> SavedBatch | None:
    """The batch a file holds, or None when it holds something else (a call, one tensor).
    Raises `cediag._io.LoadError` when the file cannot be read at all."""
    file, key = split_key(path)
    if key is not None:
        return None
    contents = _read(file, unsafe)
    tensors = contents.tensors
    if not all(k in tensors for k in BATCH_KEYS) or any(k in tensors for k in INPUT_KEYS):
        return None
    batch = dict(tensors)
    options: dict[str, Any] = {}
    if isinstance(contents.options.get("ignore_index"), int):
        options["ignore_index"] = contents.options["ignore_index"]
    for name in ID_KEYS:  # ids saved next to the batch as 0-d integer tensors
        value = batch.get(name)
        if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point():
            options[name] = int(batch.pop(name))
    return SavedBatch(batch, options, str(path), list(contents.notes))
