"""cediag: check cross-entropy inputs before they reach the loss.

report = cediag.check(logits, target)
report.raise_for_errors()
"""

from ._engine import check
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

__version__ = "0.1.0"

__all__ = [
    "RULES",
    "SCHEMA_VERSION",
    "CediagWarning",
    "CrossEntropyInputError",
    "Diagnostic",
    "GuardSummary",
    "Report",
    "Severity",
    "check",
    "checked",
    "configure",
    "find_rule",
    "summary",
    "unwrap",
    "watch",
    "wrap",
]
