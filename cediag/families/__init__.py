"""The loss families cediag checks, one folder each, registered here.

Each folder's `__init__.py` builds one `LossFamily` (`_declaration.py`): its rule-code prefix,
its losses, options, entry points, call binding, sentinel and rules. Everything else reads the
declarations through the functions below. docs/architecture.md shows how to add a family.

A folder's `__init__.py` imports nothing heavy (no torch): the CLI reads the declarations to
build its options before it imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._declaration import EntryPoint, LossFamily, Option

FAMILIES: dict[str, LossFamily] = {}  # name -> family, in registration order


def register(family: LossFamily) -> LossFamily:
    """Add a family (its loss names and code prefix must be new)."""
    for other in FAMILIES.values():
        if other.prefix == family.prefix or set(other.losses) & set(family.losses):
            raise ValueError(f"family {family.name!r} clashes with {other.name!r}")
    FAMILIES[family.name] = family
    return family


# ---------------------------------------------------------------------- the registered families
# One line per family: the folder's name. Its order is the catalogue's.
FOLDERS = (
    "cross_entropy",
    "bce",
    "linear_cross_entropy",
)
for _folder in FOLDERS:
    register(importlib.import_module(f".{_folder}", __name__).FAMILY)


# ---------------------------------------------------------------------- looking them up
def losses() -> tuple[str, ...]:
    """Every `loss=` name, in registration order."""
    return tuple(loss for family in FAMILIES.values() for loss in family.losses)


def family_of(loss: Any) -> LossFamily:
    """The family that checks `loss`; ValueError naming the known losses otherwise."""
    for family in FAMILIES.values():
        if isinstance(loss, str) and loss in family.losses:
            return family
    known = ", ".join(repr(name) for name in losses())
    raise ValueError(f"Expected `loss` to be one of {known}, but got {loss!r}")


def loss_of_criterion(criterion: Any) -> str | None:
    """The loss a criterion module computes (`nn.BCELoss()` -> "bce"), or None when no family
    declares its class (or a base class of it)."""
    if criterion is None:
        return None
    for family in FAMILIES.values():
        for path, loss in family.criteria:
            kind = _class(path)
            if kind is not None and isinstance(criterion, kind):
                return loss
    return None


def _class(path: str | type) -> type | None:
    """The class at a dotted path, imported on first use; None when its module is missing."""
    if isinstance(path, type):
        return path
    module, _, name = path.rpartition(".")
    try:
        found = importlib.import_module(module)
        for part in name.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return found if isinstance(found, type) else None


def family_of_prefix(prefix: str) -> LossFamily | None:
    return next((f for f in FAMILIES.values() if f.prefix == prefix), None)


def all_entry_points() -> tuple[EntryPoint, ...]:
    return tuple(entry for family in FAMILIES.values() for entry in family.entry_points())


__all__ = [
    "FAMILIES",
    "EntryPoint",
    "LossFamily",
    "Option",
    "all_entry_points",
    "family_of",
    "family_of_prefix",
    "loss_of_criterion",
    "losses",
    "register",
]
