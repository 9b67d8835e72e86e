"""Plain-text rendering of a Report (what `str(report)` prints). The CLI adds colour."""

from __future__ import annotations

from collections.abc import Iterable

from ._report import ArgumentSummary, Diagnostic, Report, Severity


def describe(argument: ArgumentSummary) -> str:
    if argument.shape is None:
        return argument.type
    dims = tuple(argument.shape)
    shape = f"({dims[0]},)" if len(dims) == 1 else str(dims)
    device = "" if argument.device in (None, "cpu") else f" {argument.device}"
    return f"{shape} {argument.dtype}{device}"


def count_phrase(diagnostics: Iterable[Diagnostic]) -> str:
    """How many of each severity, most severe first: "2 errors, 1 warning" ("" for none)."""
    counts = dict.fromkeys(Severity, 0)
    for d in diagnostics:
        counts[d.severity] += 1
    return ", ".join(
        f"{n} {severity.value}{'' if n == 1 else 's'}" for severity, n in counts.items() if n
    )


def headline(report: Report) -> str:
    verdict = count_phrase(report.diagnostics) or "no problems found"
    call = report.call
    return f"cediag: {verdict} - {call.loss} input {describe(call.input)}, target {describe(call.target)}"


def render_text(report: Report) -> str:
    lines = [headline(report)]
    if report.source:
        lines.append(f"  source: {report.source}")
    for d in report.diagnostics:
        lines.append(f"  {d.severity.value:<7} {d.code} {d.rule}: {d.message}")
        lines.append(f"          fix: {d.fix}")
    lines.extend(f"  note: {note}" for note in report.notes)
    return "\n".join(lines)
