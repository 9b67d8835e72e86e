"""`--format json`: the pydantic report (with `schema_version` and `ok`), one object per file.

One file -> the Report object (`cediag.Report.model_validate_json` reads it back); several
files -> a list of them; `--statistics` -> a list of {code, rule, severity, count}.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TextIO

from . import Checked, Options, statistics


def write(results: Sequence[Checked], options: Options, out: TextIO) -> None:
    if options.statistics:
        data: object = statistics(results)
    elif len(results) == 1:
        data = results[0].report.model_dump(mode="json")
    else:
        data = [checked.report.model_dump(mode="json") for checked in results]
    out.write(json.dumps(data, indent=2) + "\n")
