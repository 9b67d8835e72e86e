"""Exit codes of the `cediag` command line, as ruff uses them."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What `cediag check` (and the other commands) exit with.

    CLEAN: nothing at or above `--fail-on` was found (or `--exit-zero` was given).
    FINDINGS: at least one finding at or above `--fail-on`.
    COULD_NOT_RUN: a file was missing, empty, truncated, unsafe or of the wrong kind, a key was
    wrong, or an option was bad; or a call's values could not be read and nothing else failed
    the check. The check did not run (in full); `--exit-zero` does not change this.
    """

    CLEAN = 0
    FINDINGS = 1
    COULD_NOT_RUN = 2
