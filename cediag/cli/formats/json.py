"""`--format json`: the pydantic report (with `schema_version` and `ok`), one object per file.

One result -> the Report object (`cediag.Report.model_validate_json` reads it back); several ->
a list of them. A file that could not be checked is an entry of its own,
`{"path", "error", "fix", "ok": false}`, in its place. `--statistics` -> a list of
{code, rule, severity, count}, then one such entry per file that could not be checked.
Schemas: `cediag schema report`, `cediag schema check`, `cediag schema statistics`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TextIO

from . import Checked, Options, Result, errors, statistics


def entry(result: Result) -> dict[str, object]:
    if isinstance(result, Checked):
        return result.report.model_dump(mode="json")
    return result.model_dump(mode="json")


def write(results: Sequence[Result], options: Options, out: TextIO) -> None:
    if options.statistics:
        data: object = statistics(results) + [entry(e) for e in errors(results)]
    elif len(results) == 1:
        data = entry(results[0])
    else:
        data = [entry(result) for result in results]
    out.write(json.dumps(data, indent=2) + "\n")
