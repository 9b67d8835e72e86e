"""pytest plugin: `pytest --cediag` checks every cross-entropy call the tests make.

Each test runs inside `cediag.watch()`; a test whose calls have errors (or worse than
`--cediag-fail-on`) fails with the report, and a summary of all findings prints at the end.
Opt out per test with `@pytest.mark.no_cediag`. Nothing is imported from torch or cediag's
guard until `--cediag` is given.

Defaults come from `[tool.cediag]` in the closest pyproject.toml above pytest's rootdir (the
same section `cediag check` reads): `select`, `ignore`, `fail-on`, and from `[tool.cediag.guard]`
`first`, `every`, `budget`, `sync`, `dump-dir`. A command-line option wins over the file.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cediag", "cross-entropy input checks")
    group.addoption(
        "--cediag",
        action="store_true",
        default=False,
        help="check every loss call (cross-entropy, NLL, BCE, linear cross-entropy) made by the tests",
    )
    group.addoption(
        "--cediag-fail-on",
        choices=("error", "warning", "info"),
        default=None,
        help="least severity that fails the test making the call (default: [tool.cediag] "
        "fail-on, else error)",
    )
    group.addoption(
        "--cediag-every",
        type=int,
        default=None,
        help="full check on every N-th call at a site (default: [tool.cediag.guard] every, "
        "else 1: every call)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "no_cediag: do not check loss calls in this test")
    if config.getoption("--cediag", default=False):
        config.pluginmanager.register(_CediagPlugin(config), "cediag-checks")


class _CediagPlugin:
    def __init__(self, config: pytest.Config):
        from cediag import guard

        self.guard = guard
        self.options = watch_options(config)
        guard.summary(clear=True)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        if item.get_closest_marker("no_cediag") is not None:
            return (yield)
        from cediag.guard._watch import watch

        failing: list = []
        # on_error="log": the test runs as it would without the plugin; findings that matter
        # fail it afterwards, with the report.
        with watch(on_error="log", **self.options, _sink=failing.append):
            result = yield
        if failing:
            reports = "\n\n".join(str(report) for report in failing[:5])
            more = f"\n... and {len(failing) - 5} more" if len(failing) > 5 else ""
            pytest.fail(f"cediag found problems in loss calls:\n{reports}{more}", False)
        return result

    def pytest_terminal_summary(self, terminalreporter) -> None:
        summary = self.guard.summary()
        terminalreporter.write_sep("=", "cediag summary")
        terminalreporter.write_line(str(summary))


def watch_options(config: pytest.Config) -> dict:
    """Options for `watch()`: the command line over `[tool.cediag]` over the plugin's defaults
    (every call fully checked, errors fail the test)."""
    from cediag._settings import SettingsError, load_settings

    try:
        settings = load_settings(config.rootpath)
    except SettingsError as error:
        raise pytest.UsageError(f"cediag: {error}") from None
    options = settings.guard_options()
    options.pop("on_error", None)  # the plugin logs, then fails the test with the report
    options.setdefault("fail_on", "error")
    options.setdefault("every", 1)
    if config.getoption("--cediag-fail-on") is not None:
        options["fail_on"] = config.getoption("--cediag-fail-on")
    if config.getoption("--cediag-every") is not None:
        options["every"] = config.getoption("--cediag-every")
    return options
