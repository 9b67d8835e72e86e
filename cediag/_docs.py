"""Rule documentation, generated from the rule registry (docstrings are the single source).

`cediag explain CODE` prints `rule_markdown`; docs/rules.md is `catalogue_markdown()`, and a
test fails when the committed file is stale. Regenerate with `python -m cediag._docs`.
"""

from __future__ import annotations

import sys

from .families import FAMILIES
from .rules import CATEGORIES, RULES, Rule

SECTION_ORDER = ("What it does", "Why is this bad?", "Example", "Use instead")
# Sections a rule may add: value rules state the false-alarm rate they are built for.
OPTIONAL_SECTIONS = ("False alarms",)


def rule_markdown(rule: Rule, heading: str = "##") -> str:
    sections = rule.sections
    lines = [f"{heading} {rule.code} `{rule.slug}` ({rule.severity.value})", "", sections[""], ""]
    for title in SECTION_ORDER + OPTIONAL_SECTIONS:
        if title in sections:
            lines += [f"**{title}**", "", sections[title], ""]
    return "\n".join(lines).rstrip() + "\n"


def catalogue_markdown() -> str:
    lines = [
        "# Rule catalogue",
        "",
        "Generated from the rule docstrings by `python -m cediag._docs > docs/rules.md`;",
        "`tests/test_docs.py` fails when this file is stale. `cediag explain CODE` prints one entry.",
        "",
        "Severity: **error** when torch raises or the loss is certainly wrong, **warning** when it is",
        "very likely wrong, **info** when legal but worth knowing.",
        "",
        "| code | rule | severity | fires when |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r.code} | `{r.slug}` | {r.severity.value} | {r.summary} |" for r in RULES.values()
    ]
    lines += ["", "Loss families (`loss=`):", ""]
    for family in FAMILIES.values():
        losses = ", ".join(f"`{loss}`" for loss in family.losses)
        lines.append(f"- **{family.title}** ({family.prefix}xxx; {losses}): {family.docs}")
    for category, title in CATEGORIES.items():
        lines += ["", f"# {category}xx: {title}", ""]
        for r in RULES.values():
            if r.code[:-2] == category:
                lines.append(rule_markdown(r))
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(catalogue_markdown())
