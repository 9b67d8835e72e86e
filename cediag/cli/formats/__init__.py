"""Output formats of `cediag check`: one module per format, each with the same tiny interface.

    write(results: Sequence[Checked], options: Options, out: TextIO) -> None

`text` is for people (rich, on stdout); `json`, `github`, `sarif` and `junit` are for tools and
are written unwrapped and uncoloured. The one-line human summary goes to stderr, whatever the
format (see `cediag.cli._app`).
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from ..._report import Diagnostic, Report, Severity

NAMES = ("text", "json", "github", "sarif", "junit")


@dataclass(frozen=True)
class Checked:
    """One checked file: `path` is where findings point (the input file), `report` what was found."""

    path: str
    report: Report


@dataclass(frozen=True)
class Options:
    fail_on: Severity = Severity.error
    statistics: bool = False


Writer = Callable[[Sequence[Checked], Options, TextIO], None]


def writer(name: str) -> Writer:
    if name not in NAMES:
        raise ValueError(f"unknown format {name!r}; choose one of {', '.join(NAMES)}")
    return importlib.import_module(f"{__name__}.{name}").write


def failing(report: Report, fail_on: Severity) -> list[Diagnostic]:
    """The diagnostics that make the run fail: at or above `fail_on`."""
    return report.at_least(fail_on)


def statistics(results: Sequence[Checked]) -> list[dict[str, object]]:
    """Counts per rule over all files, most frequent first (as `ruff --statistics`)."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for checked in results:
        for d in checked.report.diagnostics:
            counts[(d.code, d.rule, d.severity.value)] += 1
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0][0]))
    return [
        {"code": code, "rule": rule, "severity": severity, "count": n}
        for (code, rule, severity), n in ordered
    ]
