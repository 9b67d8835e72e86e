"""`--format junit`: JUnit XML for CI dashboards.

One `<testsuite name="cediag">` with one `<testcase>` per checked file; each finding at or above
`--fail-on` is a `<failure>` (type = code), findings below it go to `<system-out>`. A file that
could not be checked is a testcase with an `<error>` (type `could-not-check`), counted in the
suite's `errors`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import TextIO

from . import Checked, Options, Result, errors, failing

ERROR_TYPE = "could-not-check"


def write(results: Sequence[Result], options: Options, out: TextIO) -> None:
    failures = sum(
        1 for c in results if isinstance(c, Checked) and failing(c.report, options.fail_on)
    )
    suite = ET.Element(
        "testsuite",
        name="cediag",
        tests=str(len(results)),
        failures=str(failures),
        errors=str(len(errors(results))),
        skipped="0",
    )
    for result in results:
        case = ET.SubElement(suite, "testcase", classname="cediag", name=result.path)
        if not isinstance(result, Checked):
            error = ET.SubElement(case, "error", type=ERROR_TYPE, message=result.message)
            error.text = f"could not check {result.path}: {result.error}\nfix: {result.fix}"
            continue
        bad = failing(result.report, options.fail_on)
        for d in bad:
            failure = ET.SubElement(
                case, "failure", type=d.code, message=f"{d.code} {d.rule}: {d.message}"
            )
            failure.text = f"{d.severity.value}: {d.message}\nfix: {d.fix}"
        rest = [d for d in result.report.diagnostics if d not in bad]
        lines = [f"{d.code} {d.rule} [{d.severity.value}] {d.message}" for d in rest]
        lines += [f"note: {note}" for note in result.report.notes]
        if lines:
            ET.SubElement(case, "system-out").text = "\n".join(lines)
    ET.indent(suite)
    out.write('<?xml version="1.0" encoding="utf-8"?>\n')
    out.write(ET.tostring(suite, encoding="unicode") + "\n")
