"""`[tool.cediag]` in pyproject.toml: found like ruff finds its section, command line over file,
unknown keys and bad values refused; the pytest plugin reads the same section."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from test_io import labels, logits
from typer.testing import CliRunner

from cediag import ExitCode
from cediag._settings import Settings, SettingsError, find_pyproject, load_settings
from cediag.cli import app

runner = CliRunner()

pytest_plugins = ["pytester"]


def cli(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("CEDIAG_FORMAT", raising=False)
    monkeypatch.delenv("CEDIAG_FAIL_ON", raising=False)


def pyproject(directory: Path, body: str) -> Path:
    path = directory / "pyproject.toml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder holding a batch whose only finding is a warning (CE304)."""
    root = tmp_path / "project"
    (root / "sub" / "deeper").mkdir(parents=True)
    torch.save({"input": logits().sigmoid(), "target": labels()}, root / "sigmoided.pt")
    monkeypatch.chdir(root / "sub" / "deeper")
    return root


# ---------------------------------------------------------------- finding and reading


def test_found_walking_up_and_skipping_pyprojects_without_the_section(project):
    top = pyproject(project, '[tool.cediag]\nfail-on = "warning"\n')
    pyproject(project / "sub", '[project]\nname = "other"\n')  # closer, but no [tool.cediag]
    assert find_pyproject() == top
    settings = load_settings()
    assert settings.path == top and settings.fail_on == "warning"


def test_no_pyproject_means_no_settings(tmp_path):
    assert load_settings(tmp_path) == Settings()


def test_every_key_is_read(project):
    pyproject(
        project,
        """
        [tool.cediag]
        select = ["CE1", "CE3"]
        ignore = "CE303, relu-applied"
        fail-on = "info"
        format = "json"

        [tool.cediag.guard]
        on-error = "warn"
        first = 5
        every = 50
        budget = false
        sync = "deferred"
        dump-dir = "dumps"
        """,
    )
    settings = load_settings()
    assert settings.select == ("CE1", "CE3") and settings.ignore == ("CE303", "relu-applied")
    assert settings.fail_on == "info" and settings.format == "json"
    assert settings.guard == {
        "on_error": "warn",
        "first": 5,
        "every": 50,
        "budget": None,
        "sync": "deferred",
        "dump_dir": str((project / "dumps").resolve()),  # relative to the pyproject.toml
    }
    options = settings.guard_options()
    assert options["select"] == ["CE1", "CE3"] and options["fail_on"] == "info"
    import cediag

    with cediag.watch(**options):  # the guard accepts every option as given
        pass


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ('fail_on = "warning"', ["unknown key 'fail_on'", "did you mean 'fail-on'"]),
        ('formats = "json"', ["unknown key 'formats'", "did you mean 'format'"]),
        ("[tool.cediag.guard]\nevery_n = 3", ["[tool.cediag.guard]", "unknown key 'every_n'"]),
        ('fail-on = "fatal"', ["fail-on must be one of error, warning, info", "'fatal'"]),
        ('format = "yaml"', ["format must be one of text, json"]),
        ('select = ["CE999"]', ["CE999: matches no rule"]),
        ('ignore = ["softmax-aplied"]', ["did you mean softmax-applied"]),
        ("select = 3", ["select must be a list"]),
        ("[tool.cediag.guard]\nbudget = 2", ["budget must be a fraction"]),
        ("[tool.cediag.guard]\nevery = -1", ["every must be an integer >= 0"]),
        ('[tool.cediag.guard]\non-error = "explode"', ["on-error must be one of raise"]),
    ],
)
def test_unknown_keys_and_bad_values_are_refused(project, body, fragments):
    path = pyproject(project, "[tool.cediag]\n" + body + "\n")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message
    # on the command line: exit 2, one line, nothing on stdout
    result = cli("check", project / "sigmoided.pt")
    assert result.exit_code == ExitCode.COULD_NOT_RUN
    assert result.stdout == "" and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"cediag: error: {path}: ")


def test_invalid_toml_is_refused(project):
    path = pyproject(project, "[tool.cediag]\nfail-on = \n")
    result = cli("check", project / "sigmoided.pt")
    assert result.exit_code == ExitCode.COULD_NOT_RUN
    assert f"{path}: is not valid TOML" in result.stderr


# ---------------------------------------------------------------- precedence on the command line


def test_file_sets_the_defaults(project):
    pyproject(project, '[tool.cediag]\nfail-on = "warning"\nformat = "json"\n')
    result = cli("check", project / "sigmoided.pt")
    assert result.exit_code == ExitCode.FINDINGS  # a warning fails: fail-on from the file
    assert json.loads(result.stdout)["diagnostics"][0]["code"] == "CE304"  # format from the file


def test_command_line_wins_over_the_file(project):
    pyproject(project, '[tool.cediag]\nfail-on = "warning"\nformat = "json"\nignore = ["CE304"]\n')
    assert cli("check", project / "sigmoided.pt").exit_code == ExitCode.CLEAN  # ignored
    result = cli("check", project / "sigmoided.pt", "--ignore", "CE1", "--fail-on", "error")
    assert result.exit_code == ExitCode.CLEAN and "CE304" in result.stdout
    result = cli("check", project / "sigmoided.pt", "--ignore", "CE1", "--format", "github")
    assert result.exit_code == ExitCode.FINDINGS and result.stdout.startswith("::warning ")


def test_environment_wins_over_the_file(project):
    pyproject(project, '[tool.cediag]\nformat = "json"\nfail-on = "warning"\n')
    result = cli(
        "check",
        project / "sigmoided.pt",
        env={"CEDIAG_FORMAT": "github", "CEDIAG_FAIL_ON": "error"},
    )
    assert result.stdout.startswith("::warning ") and result.exit_code == ExitCode.CLEAN


def test_select_from_the_file(project):
    pyproject(project, '[tool.cediag]\nselect = ["CE1"]\nfail-on = "warning"\n')
    assert cli("check", project / "sigmoided.pt").exit_code == ExitCode.CLEAN  # CE304 not selected


def test_isolated_and_config(project, tmp_path):
    pyproject(project, '[tool.cediag]\nfail-on = "warning"\n')
    assert cli("check", project / "sigmoided.pt").exit_code == ExitCode.FINDINGS
    assert cli("check", project / "sigmoided.pt", "--isolated").exit_code == ExitCode.CLEAN
    other = tmp_path / "other.toml"
    other.write_text('[tool.cediag]\nfail-on = "error"\n')
    assert cli("check", project / "sigmoided.pt", "--config", other).exit_code == ExitCode.CLEAN
    empty = tmp_path / "empty.toml"
    empty.write_text("[tool.other]\n")
    result = cli("check", project / "sigmoided.pt", "--config", empty)
    assert result.exit_code == ExitCode.COULD_NOT_RUN and "no [tool.cediag] table" in result.stderr


# ---------------------------------------------------------------- the pytest plugin


TEST_WITH_A_WARNING = """
import torch
import torch.nn.functional as F

def test_sigmoid_head():
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(0)).sigmoid()
    F.cross_entropy(x, torch.arange(8) % 5)
"""


def test_the_plugin_reads_fail_on_from_the_file(pytester):
    pytester.makepyfile(test_head=TEST_WITH_A_WARNING)
    pytester.makepyprojecttoml('[tool.cediag]\nfail-on = "warning"\n')
    result = pytester.runpytest_subprocess("--cediag", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*CE304*"])
    # the command line wins over the file
    result = pytester.runpytest_subprocess("--cediag", "--cediag-fail-on", "error")
    result.assert_outcomes(passed=1)


def test_the_plugin_refuses_an_unknown_key(pytester):
    pytester.makepyfile(test_head=TEST_WITH_A_WARNING)
    pytester.makepyprojecttoml('[tool.cediag]\nfail_on = "warning"\n')
    result = pytester.runpytest_subprocess("--cediag")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown key 'fail_on'*did you mean 'fail-on'*"])
