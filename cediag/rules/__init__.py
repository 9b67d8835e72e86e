"""The rule catalogue. Importing this package registers every rule."""

from . import logits, options, shape, targets  # noqa: F401  (registration side effect)
from ._registry import (
    FAMILIES,
    RULES,
    Finding,
    Rule,
    find_rule,
    rule,
    select_rules,
    validate_patterns,
)

# Registration follows module import order; the catalogue reads in code order.
for _code in sorted(RULES):
    RULES[_code] = RULES.pop(_code)

__all__ = [
    "FAMILIES",
    "RULES",
    "Finding",
    "Rule",
    "find_rule",
    "rule",
    "select_rules",
    "validate_patterns",
]
