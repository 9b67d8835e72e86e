"""The rule registry: each rule is one small function, registered with its code and docs.

A code is the family's prefix, the category digit and two digits (`CE101`, `BCE201`); the
families (`cediag.families`) declare their prefixes and category titles.

A rule's docstring is its documentation, in four sections (as ruff writes its rules):
"What it does", "Why is this bad?", "Example", "Use instead". `cediag explain` and
docs/rules.md are generated from it, so the docs cannot drift from the code.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from .._report import Diagnostic, Evidence, Severity

# arguments: first, on anything (the arguments may not even be tensors); structure: metadata
# only; values: after the statistics pass; final: the safety net, last; batch: the sequence
# context's rules (cediag.sequence), which see a batch, not one loss call.
Phase = Literal["arguments", "structure", "values", "final", "batch"]

# "CE1" -> "Shape and layout": filled from the families' declarations, plus categories that
# live outside a loss family (the sequence context's CE5xx).
CATEGORIES: dict[str, str] = {}
_CODE = re.compile(r"([A-Z]{2,4})([1-9])\d\d")


@dataclass(frozen=True)
class Finding:
    """What a rule returns: the sentence with the numbers, the fix as code, the proof."""

    message: str
    fix: str
    evidence: list[Evidence] = field(default_factory=list)


@dataclass(frozen=True)
class Rule:
    code: str
    slug: str
    severity: Severity
    phase: Phase
    summary: str
    function: Callable = field(repr=False, compare=False)

    @property
    def prefix(self) -> str:
        return self.code[:-3]

    @property
    def category(self) -> str:
        """The title of the rule's category ("Shape and layout")."""
        return CATEGORIES.get(self.code[:-2], "")

    @property
    def family(self) -> str:
        """The name of the loss family whose prefix the code carries ("cross_entropy")."""
        from ..families import family_of_prefix

        found = family_of_prefix(self.prefix)
        return found.name if found is not None else ""

    @property
    def sections(self) -> dict[str, str]:
        """The docstring split into its titled sections ("What it does", ...)."""
        return parse_sections(inspect.getdoc(self.function) or "")


RULES: dict[str, Rule] = {}  # code -> Rule, in registration order


def rule(code: str, slug: str, severity: str, phase: Phase, summary: str):
    """Register a rule function under a stable code (`CE101`: prefix, category, number) and a
    slug unique across families."""
    if not _CODE.fullmatch(code):
        raise ValueError(f"bad rule code {code!r}")

    def register(function: Callable) -> Callable:
        if code in RULES or any(r.slug == slug for r in RULES.values()):
            raise ValueError(f"rule {code}/{slug} registered twice")
        RULES[code] = Rule(code, slug, Severity(severity), phase, summary, function)
        return function

    return register


def find_rule(code_or_slug: str) -> Rule | None:
    """Look a rule up by code (`CE101`, any case) or slug (`batch-size-mismatch`)."""
    key = code_or_slug.strip()
    if key.upper() in RULES:
        return RULES[key.upper()]
    return next((r for r in RULES.values() if r.slug == key.lower()), None)


def _matches(r: Rule, pattern: str) -> bool:
    pattern = pattern.strip()
    return r.code.startswith(pattern.upper()) or r.slug == pattern.lower()


def select_rules(
    select: Iterable[str] | None = None, ignore: Iterable[str] | None = None
) -> list[Rule]:
    """Rules matching `select` (codes, code prefixes like `CE1`, or slugs) minus `ignore`.

    A pattern that matches no rule raises ValueError (`validate_patterns`). The returned list
    is shared between callers asking for the same selection: do not change it.
    """
    select, ignore = _as_list(select), _as_list(ignore)
    try:
        key = (None if select is None else tuple(select), None if ignore is None else tuple(ignore))
        cached = _SELECTED.get(key)
    except TypeError:  # an unhashable pattern: validate_patterns says what is wrong
        key, cached = None, None
    if cached is not None and cached[0] == len(RULES):
        return cached[1]
    validate_patterns(select, "select")  # a typo must not switch every check off
    validate_patterns(ignore, "ignore")
    chosen = [r for r in RULES.values() if not select or any(_matches(r, p) for p in select)]
    chosen = [r for r in chosen if not ignore or not any(_matches(r, p) for p in ignore)]
    if key is not None and len(_SELECTED) < 256:
        _SELECTED[key] = (len(RULES), chosen)
    return chosen


# (select, ignore) -> (catalogue size when computed, the rules): the same list for the same
# selection, which callers treat as read-only (the engine keys its own cache by its identity).
_SELECTED: dict[tuple, tuple[int, list[Rule]]] = {}


def validate_patterns(patterns: Iterable[str] | None, option: str = "select") -> None:
    """Check rule patterns (codes, code prefixes like `CE3`, slugs) before anything runs.

    A bare string is one pattern. Raises TypeError for a pattern that is not a string, and
    ValueError naming each pattern that matches no rule, with the closest codes or slugs. The
    ValueError's message starts with the pattern (`CE999: matches no rule (did you mean
    ...?)`), so a caller can prefix the option it came from (`--select CE999: ...`).
    """
    problems = []
    for pattern in _as_list(patterns) or []:
        if not isinstance(pattern, str):
            raise TypeError(
                f"Expected every `{option}` pattern to be a string (a code like 'CE301', a "
                f"prefix like 'CE3', or a slug), but got {type(pattern).__name__} {pattern!r}"
            )
        if not pattern.strip():
            problems.append(f"{pattern!r}: an empty pattern matches no rule")
        elif not any(_matches(r, pattern) for r in RULES.values()):
            problems.append(f"{pattern.strip()}: matches no rule{_closest(pattern.strip())}")
    if problems:
        raise ValueError("; ".join(problems))


def _as_list(patterns: Iterable[str] | str | None) -> list[str] | None:
    """`select="CE3"` means one pattern, not the patterns "C", "E" and "3"."""
    if patterns is None:
        return None
    return [patterns] if isinstance(patterns, str) else list(patterns)


def _closest(pattern: str) -> str:
    """' (did you mean CE301 or CE302?)' from the codes or the slugs, whichever it resembles."""
    if re.match(r"[A-Za-z]{2,4}\d", pattern):  # code-like: CE999, bce1, ce30l
        word, choices = pattern.upper(), list(RULES)
    else:
        word, choices = pattern.lower(), [r.slug for r in RULES.values()]
    close = difflib.get_close_matches(word, choices, n=2)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


_SECTION = re.compile(r"^## (.+)$", re.MULTILINE)


def parse_sections(doc: str) -> dict[str, str]:
    parts = _SECTION.split(doc)
    sections = {"": parts[0].strip()}
    for title, body in zip(parts[1::2], parts[2::2], strict=False):
        sections[title.strip()] = body.strip()
    return sections


def diagnostic(slug: str, message: str, fix: str, *evidence: Evidence) -> Diagnostic:
    """A Diagnostic of the rule `slug`, built outside the rule (a sentinel's late report)."""
    found = find_rule(slug)
    if found is None:
        raise KeyError(f"no rule {slug!r}")
    return Diagnostic(
        code=found.code,
        rule=found.slug,
        severity=found.severity,
        message=message,
        fix=fix,
        evidence=list(evidence),
    )
