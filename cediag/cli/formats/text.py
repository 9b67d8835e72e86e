"""`--format text` (the default): the reports for people, coloured by rich when on a terminal.

rich decides about colour (NO_COLOR, FORCE_COLOR, not a TTY); lines are not hard-wrapped, so a
redirected report stays one finding per line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..._render import headline
from . import Checked, Options, statistics

STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def write(results: Sequence[Checked], options: Options, out: TextIO) -> None:
    console = Console(file=out, soft_wrap=True, highlight=False)
    if options.statistics:
        write_statistics(console, results)
        return
    for checked in results:
        report = checked.report
        worst = report.worst()
        style = STYLE[worst.value] if worst else "green"
        console.print(f"[{style}]{escape(headline(report))}[/]")
        if report.source:
            console.print(f"  [dim]source:[/] {escape(report.source)}")
        for d in report.diagnostics:
            sev = d.severity.value
            console.print(
                f"  [{STYLE[sev]}]{sev:<7}[/] [bold]{d.code}[/] {d.rule}: {escape(d.message)}"
            )
            console.print(f"          [green]fix:[/] {escape(d.fix)}")
        for note in report.notes:
            console.print(f"  [dim]note: {escape(note)}[/]")


def write_statistics(console: Console, results: Sequence[Checked]) -> None:
    rows = statistics(results)
    if not rows:
        console.print("[green]no findings[/]")
        return
    table = Table(box=None, show_header=True, header_style="bold")
    for column in ("count", "code", "rule", "severity"):
        table.add_column(column, justify="right" if column == "count" else "left")
    for row in rows:
        sev = str(row["severity"])
        table.add_row(
            str(row["count"]), str(row["code"]), str(row["rule"]), f"[{STYLE[sev]}]{sev}[/]"
        )
    console.print(table)
