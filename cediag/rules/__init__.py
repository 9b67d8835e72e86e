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


def _register_sequence_rules() -> None:
    """The sequence-context rules (CE5xx, phase "batch") live with their family in
    cediag.sequence; the catalogue lists them too, so `cediag rules`, `explain`, the docs and
    select patterns know them. Imported here, after the registry is complete."""
    from ..sequence._rules import register

    register()


_register_sequence_rules()

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
