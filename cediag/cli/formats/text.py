"""`--format text` (the default): the reports for people, coloured by rich when on a terminal.

rich decides about colour (NO_COLOR, FORCE_COLOR, not a TTY); `--no-color` turns it off. Lines
wrap at word boundaries at 80 columns (or a narrower terminal), and a wrapped message or fix
keeps its indent, so each finding reads as a block:

    error   CE301 softmax-applied: input (4, 3) is already probabilities: all values
            lie in [0.05737, 0.8355] and 4 sampled rows sum to 1 over dim 1. ...
            fix: remove the softmax before the loss: F.cross_entropy(logits,
                 target)  # drop .softmax(dim=1) / nn.Softmax from the model's forward

Files that could not be checked are reported on stderr (see `cediag.cli._app`), not here.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Sequence
from typing import TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..._render import headline
from . import Options, Result, checked, statistics

STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
WIDTH = 80
MIN_WIDTH = 40
FINDING_INDENT = 10  # "  error   " : where a finding's code, message and "fix:" start
FIX_INDENT = FINDING_INDENT + len("fix: ")


def width_for(out: TextIO) -> int:
    """80 columns, or the terminal's width when it is narrower (never under 40)."""
    isatty = getattr(out, "isatty", None)
    if isatty is not None and isatty():
        return max(MIN_WIDTH, min(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns))
    return WIDTH


def wrap(text: str, indent: int, width: int) -> str:
    """Wrap at word boundaries; continuation lines start at column `indent`.

    Words are never broken (a long path or shape stays whole, on a line of its own)."""
    return "\n".join(
        textwrap.wrap(
            text,
            width=width,
            subsequent_indent=" " * indent,
            break_long_words=False,
            break_on_hyphens=False,
        )
    )


def _styled(text: str, *spans: tuple[int, int, str]) -> Text:
    styled = Text(text)
    for start, end, style in spans:
        styled.stylize(style, start, end)
    return styled


def write(results: Sequence[Result], options: Options, out: TextIO) -> None:
    console = Console(
        file=out,
        soft_wrap=True,  # lines are wrapped here, at word boundaries; rich must not re-wrap
        highlight=False,
        color_system="auto" if options.color else None,
    )
    if options.statistics:
        write_statistics(console, results)
        return
    width = width_for(out)
    for one in checked(results):
        report = one.report
        worst = report.worst()
        style = STYLE[worst.value] if worst else "green"
        line = wrap(headline(report), 2, width)
        console.print(_styled(line, (0, len(line), style)))
        if report.source:
            line = wrap(f"  source: {report.source}", FINDING_INDENT, width)
            console.print(_styled(line, (2, 9, "dim")))
        for d in report.diagnostics:
            sev = d.severity.value
            start = FINDING_INDENT
            line = wrap(f"  {sev:<7} {d.code} {d.rule}: {d.message}", FINDING_INDENT, width)
            console.print(
                _styled(
                    line,
                    (2, 2 + len(sev), STYLE[sev]),
                    (start, start + len(d.code), "bold"),
                )
            )
            line = wrap(f"{' ' * FINDING_INDENT}fix: {d.fix}", FIX_INDENT, width)
            console.print(_styled(line, (FINDING_INDENT, FINDING_INDENT + 4, "green")))
        for note in report.notes:
            line = wrap(f"  note: {note}", 8, width)
            console.print(_styled(line, (0, len(line), "dim")))


def write_statistics(console: Console, results: Sequence[Result]) -> None:
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
