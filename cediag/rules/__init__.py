"""The rule catalogue. Importing this package registers every rule, in code order."""

from . import logits, options, shape, targets  # noqa: F401  (registration side effect)
from ._registry import FAMILIES, RULES, Finding, Rule, find_rule, rule, select_rules

__all__ = ["FAMILIES", "RULES", "Finding", "Rule", "find_rule", "rule", "select_rules"]
