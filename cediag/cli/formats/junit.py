"""`--format junit`: JUnit XML for CI dashboards.

One `<testsuite name="cediag">` with one `<testcase>` per checked file; each finding at or above
`--fail-on` is a `<failure>` (type = code), findings below it go to `<system-out>`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import TextIO

from . import Checked, Options, failing


def write(results: Sequence[Checked], options: Options, out: TextIO) -> None:
    failures = sum(1 for c in results if failing(c.report, options.fail_on))
    suite = ET.Element(
        "testsuite",
        name="cediag",
        tests=str(len(results)),
        failures=str(failures),
        errors="0",
        skipped="0",
    )
    for checked in results:
        case = ET.SubElement(suite, "testcase", classname="cediag", name=checked.path)
        bad = failing(checked.report, options.fail_on)
        for d in bad:
            failure = ET.SubElement(
                case, "failure", type=d.code, message=f"{d.code} {d.rule}: {d.message}"
            )
            failure.text = f"{d.severity.value}: {d.message}\nfix: {d.fix}"
        rest = [d for d in checked.report.diagnostics if d not in bad]
        lines = [f"{d.code} {d.rule} [{d.severity.value}] {d.message}" for d in rest]
        lines += [f"note: {note}" for note in checked.report.notes]
        if lines:
            ET.SubElement(case, "system-out").text = "\n".join(lines)
    ET.indent(suite)
    out.write('<?xml version="1.0" encoding="utf-8"?>\n')
    out.write(ET.tostring(suite, encoding="unicode") + "\n")
