"""`--format github`: GitHub Actions workflow commands, one annotation per finding.

    ::error file=batch.pt,title=CE301 softmax-applied::input (4, 3) is already ... (fix: ...)

error -> `::error`, warning -> `::warning`, info -> `::notice`. Values are escaped as the runner
expects (`%`, CR, LF everywhere; `:` and `,` in properties too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from . import Checked, Options

COMMAND = {"error": "error", "warning": "warning", "info": "notice"}


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def write(results: Sequence[Checked], options: Options, out: TextIO) -> None:
    for checked in results:
        for d in checked.report.diagnostics:
            properties = f"file={escape_property(checked.path)},title={escape_property(f'{d.code} {d.rule}')}"
            message = escape_data(f"{d.message} (fix: {d.fix})")
            out.write(f"::{COMMAND[d.severity.value]} {properties}::{message}\n")
