"""The rule catalogue: the registry, and every family's rules. Importing this package
registers them all (each family's `rules` module, then the sequence-context rules)."""

import importlib

from ._registry import (
    CATEGORIES,
    RULES,
    Finding,
    Rule,
    find_rule,
    rule,
    select_rules,
    validate_patterns,
)


def _register_family_rules() -> None:
    from ..families import FAMILIES

    for family in FAMILIES.values():
        for digit, title in family.categories.items():
            CATEGORIES.setdefault(f"{family.prefix}{digit}", title)
        importlib.import_module(family.rules, family.package or None)


def _register_sequence_rules() -> None:
    """The sequence-context rules (CE5xx, phase "batch") live with their checks in
    cediag.sequence; the catalogue lists them too, so `cediag rules`, `explain`, the docs and
    select patterns know them. Imported here, after the registry is complete."""
    from ..sequence._rules import register

    register()


_register_family_rules()
_register_sequence_rules()


def _catalogue_order(code: str) -> tuple[int, str]:
    """Family by family, in registration order, then by code."""
    from ..families import FAMILIES

    prefixes = [family.prefix for family in FAMILIES.values()]
    prefix = RULES[code].prefix
    return (prefixes.index(prefix) if prefix in prefixes else len(prefixes), code)


# Registration follows module import order; the catalogue reads in catalogue order.
for _code in sorted(RULES, key=_catalogue_order):
    RULES[_code] = RULES.pop(_code)

__all__ = [
    "CATEGORIES",
    "RULES",
    "Finding",
    "Rule",
    "find_rule",
    "rule",
    "select_rules",
    "validate_patterns",
]
