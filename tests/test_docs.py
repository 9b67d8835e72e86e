"""Docs are generated from the code; these tests fail when they drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from cediag._docs import SECTION_ORDER, catalogue_markdown
from cediag.rules import RULES

ROOT = Path(__file__).resolve().parents[1]


def test_rules_md_is_up_to_date():
    committed = (ROOT / "docs" / "rules.md").read_text()
    assert committed == catalogue_markdown(), "stale: run `python -m cediag._docs > docs/rules.md`"


@pytest.mark.parametrize("rule", list(RULES.values()), ids=lambda r: r.code)
def test_rule_docstring_has_every_section(rule):
    sections = rule.sections
    assert sections[""], f"{rule.code} needs a one-line summary"
    for title in SECTION_ORDER:
        assert sections.get(title), f"{rule.code} {rule.slug} lacks '## {title}'"


def test_readme_lists_every_rule():
    readme = (ROOT / "README.md").read_text()
    missing = [r.slug for r in RULES.values() if f"`{r.slug}`" not in readme]
    assert not missing, f"README catalogue lacks {missing}"


def test_codes_are_grouped_by_family_and_unique():
    from cediag.families import FAMILIES

    codes = list(RULES)
    prefixes = [family.prefix for family in FAMILIES.values()]
    assert codes == sorted(codes, key=lambda code: (prefixes.index(RULES[code].prefix), code))
    assert {RULES[code].prefix for code in codes} == set(prefixes)
    assert len({r.slug for r in RULES.values()}) == len(codes)
