"""Project defaults from `[tool.cediag]` in pyproject.toml, read as ruff reads `[tool.ruff]`.

    [tool.cediag]
    select = ["CE1", "CE2", "softmax-applied"]   # codes, prefixes or slugs
    ignore = ["CE303"]
    fail-on = "warning"                          # error | warning | info
    format = "github"                            # text | json | github | sarif | junit

    [tool.cediag.guard]                          # defaults for pytest --cediag and cediag run
    first = 10
    every = 100
    budget = 0.002                               # a fraction, "auto", or false (no cap)
    sync = "eager"                               # eager | deferred
    on-error = "raise"                           # raise | warn | log
    dump-dir = "cediag-dumps"                    # relative to the pyproject.toml

The file is the closest pyproject.toml with a `[tool.cediag]` table, walking up from the working
directory (pyproject.toml files without one are skipped). What the command line says wins over
an environment variable (`CEDIAG_FORMAT`, `CEDIAG_FAIL_ON`), which wins over the file, which
wins over the built-in defaults. Unknown keys and bad values are errors (`SettingsError`, exit
2 on the command line), so a typo cannot silently change a CI gate.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMATS = ("text", "json", "github", "sarif", "junit")
LEVELS = ("error", "warning", "info")
TOP_KEYS = ("select", "ignore", "fail-on", "format", "guard")
GUARD_KEYS = ("on-error", "first", "every", "budget", "sync", "dump-dir")


class SettingsError(ValueError):
    """`[tool.cediag]` has an unknown key or a bad value; the message names the file and key."""


@dataclass(frozen=True)
class Settings:
    """What `[tool.cediag]` says; None (or empty) where it says nothing."""

    path: Path | None = None  # the pyproject.toml read, None when there is none
    select: tuple[str, ...] | None = None
    ignore: tuple[str, ...] | None = None
    fail_on: str | None = None
    format: str | None = None
    guard: dict[str, Any] = field(default_factory=dict)  # GuardOptions keyword arguments

    def guard_options(self) -> dict[str, Any]:
        """Keyword arguments for `cediag.watch` / `wrap` / `configure`: the guard table plus
        the shared `select`, `ignore` and `fail-on`."""
        options = dict(self.guard)
        for name in ("select", "ignore", "fail_on"):
            value = getattr(self, name)
            if value is not None:
                options[name] = list(value) if isinstance(value, tuple) else value
        return options


def _toml_loads(text: str, path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise SettingsError(
                f"{path}: reading [tool.cediag] on Python 3.10 needs tomli; pip install tomli"
            ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{path}: is not valid TOML ({error})") from None


def _table(path: Path) -> dict[str, Any] | None:
    """The `[tool.cediag]` table of a pyproject.toml, or None when it has none."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SettingsError(f"{path}: could not be read ({error.strerror or error})") from None
    if "cediag" not in text:  # cheap: most pyproject.toml files never mention it
        return None
    tool = _toml_loads(text, path).get("tool", {})
    table = tool.get("cediag") if isinstance(tool, dict) else None
    if table is not None and not isinstance(table, dict):
        raise SettingsError(f"{path}: [tool.cediag] must be a table")
    return table


def find_pyproject(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The closest pyproject.toml with a `[tool.cediag]` table, from `start` (default: the
    working directory) up to the filesystem root; None when there is none."""
    directory = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (directory, *directory.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file() and _table(candidate) is not None:
            return candidate
    return None


def load_settings(
    start: str | os.PathLike[str] | None = None, *, config: str | os.PathLike[str] | None = None
) -> Settings:
    """Read `[tool.cediag]` from `config` (a pyproject.toml), or from the closest pyproject.toml
    found walking up from `start`. Returns empty `Settings` when there is none."""
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise SettingsError(f"{path}: no such file; check the --config path")
        table = _table(path)
        if table is None:
            raise SettingsError(f"{path}: has no [tool.cediag] table")
        return parse_settings(table, path)
    found = find_pyproject(start)
    if found is None:
        return Settings()
    return parse_settings(_table(found) or {}, found)


def _unknown(path: Path, where: str, key: str, known: tuple[str, ...]) -> SettingsError:
    close = difflib.get_close_matches(key.replace("_", "-"), known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return SettingsError(
        f"{path}: unknown key {key!r} in {where}{hint}; known keys: {', '.join(known)}"
    )


def _choice(path: Path, where: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise SettingsError(
            f"{path}: {where} must be one of {', '.join(choices)}, but got {value!r}"
        )
    return value


def _patterns(path: Path, where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise SettingsError(
            f"{path}: {where} must be a list of rule codes, prefixes or slugs, but got {value!r}"
        )
    patterns = tuple(p.strip() for p in value if p.strip())
    from .rules import validate_patterns

    for pattern in patterns:
        try:
            validate_patterns([pattern])
        except ValueError as error:
            raise SettingsError(f"{path}: {where}: {error}; see `cediag rules`") from None
    return patterns


def _count(path: Path, where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SettingsError(f"{path}: {where} must be an integer >= 0, but got {value!r}")
    return value


def _budget(path: Path, where: str, value: Any) -> float | str | None:
    if value is False:
        return None
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise SettingsError(
            f'{path}: {where} must be a fraction in (0, 1] (0.002 = 0.2%), "auto" or false, '
            f"but got {value!r}"
        )
    return float(value)


def parse_settings(table: dict[str, Any], path: Path) -> Settings:
    """Validate a `[tool.cediag]` table; `path` is named in every error."""
    for key in table:
        if key not in TOP_KEYS:
            raise _unknown(path, "[tool.cediag]", key, TOP_KEYS)
    where = "[tool.cediag]"
    select = _patterns(path, f"{where} select", table["select"]) if "select" in table else None
    ignore = _patterns(path, f"{where} ignore", table["ignore"]) if "ignore" in table else None
    fail_on = (
        _choice(path, f"{where} fail-on", table["fail-on"], LEVELS) if "fail-on" in table else None
    )
    fmt = _choice(path, f"{where} format", table["format"], FORMATS) if "format" in table else None
    guard_table = table.get("guard", {})
    if not isinstance(guard_table, dict):
        raise SettingsError(f"{path}: [tool.cediag.guard] must be a table")
    guard: dict[str, Any] = {}
    where = "[tool.cediag.guard]"
    for key, value in guard_table.items():
        if key not in GUARD_KEYS:
            raise _unknown(path, where, key, GUARD_KEYS)
        name = key.replace("-", "_")
        if key == "on-error":
            guard[name] = _choice(path, f"{where} {key}", value, ("raise", "warn", "log"))
        elif key in ("first", "every"):
            guard[name] = _count(path, f"{where} {key}", value)
        elif key == "budget":
            guard[name] = _budget(path, f"{where} {key}", value)
        elif key == "sync":
            guard[name] = _choice(path, f"{where} {key}", value, ("eager", "deferred"))
        elif key == "dump-dir":
            if not isinstance(value, str) or not value:
                raise SettingsError(f"{path}: {where} {key} must be a path, but got {value!r}")
            guard[name] = str((path.parent / value).resolve())
    return Settings(path, select, ignore, fail_on, fmt, guard)
