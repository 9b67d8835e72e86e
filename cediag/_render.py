"""Plain-text rendering of a Report (what `str(report)` prints). The CLI adds colour."""

from __future__ import annotations

from ._report import ArgumentSummary, Report


def describe(argument: ArgumentSummary) -> str:
    if argument.shape is None:
        return argument.type
    dims = tuple(argument.shape)
    shape = f"({dims[0]},)" if len(dims) == 1 else str(dims)
    device = "" if argument.device in (None, "cpu") else f" {argument.device}"
    return f"{shape} {argument.dtype}{device}"


def headline(report: Report) -> str:
    counts = {}
    for d in report.diagnostics:
        counts[d.severity.value] = counts.get(d.severity.value, 0) + 1
    parts = [f"{n} {sev}{'s' if n > 1 else ''}" for sev, n in counts.items()]
    verdict = ", ".join(parts) if parts else "no problems found"
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
