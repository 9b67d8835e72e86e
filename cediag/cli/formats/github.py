"""`--format github`: GitHub Actions workflow commands, one annotation per finding.

    ::error file=batch.pt,title=CE301 softmax-applied::input (4, 3) is already ... (fix: ...)

error -> `::error`, warning -> `::warning`, info -> `::notice`; a file that could not be checked
is an `::error` titled `cediag: could not check the file`. Values are escaped as the runner
expects (`%`, CR, LF everywhere; `:` and `,` in properties too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from . import Checked, Options, Result, partial_reason

COMMAND = {"error": "error", "warning": "warning", "info": "notice"}
UNREADABLE_TITLE = "cediag: could not check the file"


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def write(results: Sequence[Result], options: Options, out: TextIO) -> None:
    for result in results:
        if not isinstance(result, Checked):
            properties = (
                f"file={escape_property(result.path)},title={escape_property(UNREADABLE_TITLE)}"
            )
            out.write(
                f"::error {properties}::{escape_data(f'{result.error} (fix: {result.fix})')}\n"
            )
            continue
        if not result.report.values_checked:
            properties = f"file={escape_property(result.path)},title=cediag: values not checked"
            out.write(f"::error {properties}::{escape_data(partial_reason(result.report))}\n")
        for d in result.report.diagnostics:
            properties = (
                f"file={escape_property(result.path)},title={escape_property(f'{d.code} {d.rule}')}"
            )
            message = escape_data(f"{d.message} (fix: {d.fix})")
            out.write(f"::{COMMAND[d.severity.value]} {properties}::{message}\n")
