"""`--format sarif`: SARIF 2.1.0, for GitHub code scanning and other SARIF viewers.

Every rule of the catalogue is in `runs[0].tool.driver.rules` (id = code, name = slug, with its
documentation as help); each finding is a result pointing at the checked file. A file that
could not be checked is an error in `runs[0].invocations[0].toolExecutionNotifications` (and
`executionSuccessful` is false), so the findings of the other files are still uploaded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import PurePath
from typing import TextIO

from ..._docs import rule_markdown
from ...rules import RULES
from . import Checked, Options, Result, errors, partial_reason

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def driver() -> dict[str, object]:
    from ... import __version__

    return {
        "name": "cediag",
        "version": __version__,
        "rules": [
            {
                "id": rule.code,
                "name": rule.slug,
                "shortDescription": {"text": rule.summary},
                "fullDescription": {"text": rule.sections.get("What it does", rule.summary)},
                "help": {"text": rule_markdown(rule), "markdown": rule_markdown(rule)},
                "defaultConfiguration": {"level": LEVEL[rule.severity.value]},
                "properties": {"tags": [rule.category, rule.family]},
            }
            for rule in RULES.values()
        ],
    }


def artifact_uri(path: str) -> str:
    """A relative path stays relative (what code scanning expects); an absolute one is file://."""
    pure = PurePath(path)
    return pure.as_uri() if pure.is_absolute() else pure.as_posix()


def location(path: str) -> dict[str, object]:
    return {"physicalLocation": {"artifactLocation": {"uri": artifact_uri(path)}}}


def write(results: Sequence[Result], options: Options, out: TextIO) -> None:
    index = {code: i for i, code in enumerate(RULES)}
    sarif_results = []
    for checked in results:
        if not isinstance(checked, Checked):
            continue
        for d in checked.report.diagnostics:
            result: dict[str, object] = {
                "ruleId": d.code,
                "level": LEVEL[d.severity.value],
                "message": {"text": f"{d.message} Fix: {d.fix}"},
                "locations": [location(checked.path)],
            }
            if d.code in index:
                result["ruleIndex"] = index[d.code]
            sarif_results.append(result)
    unreadable = errors(results)
    notifications = [
        {
            "descriptor": {"id": "could-not-check"},
            "level": "error",
            "message": {"text": f"could not check {e.path}: {e.error}; {e.fix}"},
            "locations": [location(e.path)],
        }
        for e in unreadable
    ]
    notifications += [
        {
            "descriptor": {"id": "values-not-checked"},
            "level": "error",
            "message": {"text": f"{c.path}: {partial_reason(c.report)}"},
            "locations": [location(c.path)],
        }
        for c in results
        if isinstance(c, Checked) and not c.report.values_checked
    ]
    invocation: dict[str, object] = {"executionSuccessful": not notifications}
    if notifications:
        invocation["toolExecutionNotifications"] = notifications
    log = {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": driver()},
                "invocations": [invocation],
                "results": sarif_results,
                "artifacts": [{"location": {"uri": artifact_uri(r.path)}} for r in results],
            }
        ],
    }
    out.write(json.dumps(log, indent=2) + "\n")
