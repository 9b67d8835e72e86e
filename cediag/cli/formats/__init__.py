"""Output formats of `cediag check`: one module per format, each with the same tiny interface.

    write(results: Sequence[Checked | FileError], options: Options, out: TextIO) -> None

`results` follow the command line: a `Checked` for each call that was read and checked, a
`FileError` for each file that could not be (missing, truncated, unsafe, no target...). Every
format reports both kinds, so one bad file never empties the report of the others.

`text` is for people (rich); `json`, `github`, `sarif` and `junit` are for tools and are written
unwrapped and uncoloured. The one-line human summary goes to stderr, whatever the format (see
`cediag.cli._app`).
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field

from ..._report import Diagnostic, Report, Severity

NAMES = ("text", "json", "github", "sarif", "junit")


@dataclass(frozen=True)
class Checked:
    """One checked file: `path` is where findings point (the input file), `report` what was found."""

    path: str
    report: Report


def partial_reason(report: Report) -> str:
    """Why the values of a checked call were not read (its first "values not checked" note):
    such a check is incomplete, and the command exits 2 when nothing else failed it."""
    for note in report.notes:
        if note.startswith("values not checked"):
            return note
    return "values not checked: " + (report.notes[0] if report.notes else "unknown reason")


class FileError(BaseModel):
    """A file that could not be checked: what is wrong with it and what to do (JSON: one entry).

    `ok` is always False, so `[entry["ok"] for entry in data]` reads every entry of a list.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_serialization_defaults_required=True
    )

    path: str = Field(description="The file as given on the command line (without :KEY).")
    error: str = Field(description="What is wrong with it, e.g. 'is truncated or corrupt'.")
    fix: str = Field(description="What to do about it.")
    ok: Literal[False] = False

    @property
    def message(self) -> str:
        """One line, as printed on stderr after `cediag: error: `."""
        return f"{self.path}: {self.error}; {self.fix}"


class StatisticsRow(BaseModel):
    """One line of `--statistics`: how often a rule fired over all files."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    rule: str
    severity: Severity
    count: int = Field(ge=1)


Result = Checked | FileError


@dataclass(frozen=True)
class Options:
    fail_on: Severity = Severity.error
    statistics: bool = False
    color: bool = True  # False: --no-color (text only; machine formats are never coloured)


Writer = Callable[[Sequence[Result], Options, TextIO], None]


def writer(name: str) -> Writer:
    if name not in NAMES:
        raise ValueError(f"unknown format {name!r}; choose one of {', '.join(NAMES)}")
    return importlib.import_module(f"{__name__}.{name}").write


def failing(report: Report, fail_on: Severity) -> list[Diagnostic]:
    """The diagnostics that make the run fail: at or above `fail_on`."""
    return report.at_least(fail_on)


def checked(results: Sequence[Result]) -> list[Checked]:
    return [r for r in results if isinstance(r, Checked)]


def errors(results: Sequence[Result]) -> list[FileError]:
    return [r for r in results if isinstance(r, FileError)]


def statistics(results: Sequence[Result]) -> list[dict[str, object]]:
    """Counts per rule over all files, most frequent first (as `ruff --statistics`)."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for one in checked(results):
        for d in one.report.diagnostics:
            counts[(d.code, d.rule, d.severity.value)] += 1
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0][0]))
    return [
        {"code": code, "rule": rule, "severity": severity, "count": n}
        for (code, rule, severity), n in ordered
    ]
