"""cediag: check cross-entropy inputs before they reach the loss.

    report = cediag.check(logits, target)
    report.raise_for_errors()

Public names load on first use, so `import cediag` (and the pytest plugin, which pytest
loads in every session) costs nothing until a check actually runs and imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "check": "._engine",
    "check_batch": ".sequence",
    "SCHEMA_VERSION": "._report",
    "CrossEntropyInputError": "._report",
    "Diagnostic": "._report",
    "Report": "._report",
    "Severity": "._report",
    "ExitCode": "._exit",
    "load": "._io",
    "LoadError": "._io",
    "SavedCall": "._io",
    "RULES": ".rules",
    "find_rule": ".rules",
    "CediagWarning": ".guard",
    "GuardSummary": ".guard",
    "checked": ".guard",
    "configure": ".guard",
    "summary": ".guard",
    "unwrap": ".guard",
    "watch": ".guard",
    "wrap": ".guard",
}

__all__ = [  # the same names as _EXPORTS, spelled out for linters and type checkers
    "RULES",
    "SCHEMA_VERSION",
    "CediagWarning",
    "CrossEntropyInputError",
    "Diagnostic",
    "ExitCode",
    "GuardSummary",
    "LoadError",
    "Report",
    "SavedCall",
    "Severity",
    "check",
    "check_batch",
    "checked",
    "configure",
    "find_rule",
    "load",
    "summary",
    "unwrap",
    "watch",
    "wrap",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cediag' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from ._engine import check
    from ._exit import ExitCode
    from ._io import LoadError, SavedCall, load
    from ._report import SCHEMA_VERSION, CrossEntropyInputError, Diagnostic, Report, Severity
    from .guard import (
        CediagWarning,
        GuardSummary,
        checked,
        configure,
        summary,
        unwrap,
        watch,
        wrap,
    )
    from .rules import RULES, find_rule
    from .sequence import check_batch
