"""`cediag run train.py [args...]`: run an unmodified script under `watch()`, like
`python -m cProfile`, and report the findings when it ends.
"""

from __future__ import annotations

import os
import runpy
import sys
import traceback
from typing import Any

from ._exit import ExitCode


def run_script(
    script: str,
    args: list[str],
    *,
    report_format: str = "text",
    fail_on_findings: bool = True,
    **options: Any,
) -> int:
    """Run `script` as `__main__` with `sys.argv = [script, *args]` under `cediag.watch()`.

    `options` go to `watch()` (default `on_error="warn"`: the script runs on, each finding is
    warned once, and the summary lists them all). The summary goes to stderr (`"text"`,
    `"json"`) or stdout as GitHub workflow commands (`"github"`).

    Returns the script's exit code when it failed (its `sys.exit` code, 1 when it raised, 130 on
    Ctrl-C); else 1 when a finding at `fail_on` (default "error") or worse was seen and
    `fail_on_findings`; else 0. 2 when the script does not exist.
    """
    from .guard import summary, watch

    options.setdefault("on_error", "warn")
    path = os.path.abspath(script)
    if not os.path.isfile(path):
        print(f"cediag run: no such script: {script}", file=sys.stderr)
        return ExitCode.COULD_NOT_RUN
    saved_argv, saved_path0 = sys.argv[:], sys.path[0] if sys.path else None
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(path))
    code = 0
    summary(clear=True)
    try:
        with watch(**options):
            runpy.run_path(path, run_name="__main__")
    except SystemExit as exit_:
        code = _exit_code(exit_.code)
    except KeyboardInterrupt:
        code = 130
        print("cediag run: interrupted", file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.argv = saved_argv
        if sys.path and sys.path[0] == os.path.dirname(path):
            del sys.path[0]
        elif saved_path0 is not None and saved_path0 not in sys.path:
            sys.path.insert(0, saved_path0)
        sys.stdout.flush()
    result = summary()
    _print_summary(result, report_format)
    if code == 0 and fail_on_findings and result.at_least(options.get("fail_on", "error")):
        return ExitCode.FINDINGS
    return code


def _print_summary(result: Any, report_format: str) -> None:
    if report_format == "json":
        print(result.model_dump_json(indent=2), file=sys.stderr)
        return
    if report_format == "github":
        from .cli.formats.github import COMMAND, escape_data, escape_property

        for entry in result.entries:
            file, _, line = entry.site.rpartition(":")
            title = escape_property(f"{entry.code} {entry.rule}")
            where = f"file={escape_property(file)},line={line},title={title}"
            text = escape_data(f"{entry.message} (fix: {entry.fix})")
            print(f"::{COMMAND[entry.severity.value]} {where}::{text}")
        print(str(result).splitlines()[0], file=sys.stderr)
        return
    print(result, file=sys.stderr)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message") prints it and exits with 1
    return 1
