"""`cediag run train.py [args...]`: run an unmodified script under `watch()`, like
`python -m cProfile`, and print the findings to stderr when it ends.
"""

from __future__ import annotations

import os
import runpy
import sys
import traceback
from typing import Any


def run_script(script: str, args: list[str], **options: Any) -> int:
    """Run `script` as `__main__` with `sys.argv = [script, *args]` under `cediag.watch()`.

    `options` go to `watch()` (default `on_error="warn"`: the script runs on, each finding is
    warned once, and the summary lists them all). Returns the script's exit code: 0, the code
    of its `sys.exit`, or 1 when it raised (the traceback is printed to stderr).
    """
    from .guard import summary, watch

    options.setdefault("on_error", "warn")
    path = os.path.abspath(script)
    if not os.path.isfile(path):
        print(f"cediag run: no such script: {script}", file=sys.stderr)
        return 2
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
        print(summary(), file=sys.stderr)
    return code


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message") prints it and exits with 1
    return 1
