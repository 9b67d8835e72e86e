"""How cediag reaches users: the pre-commit hooks, the GitHub Action, a built wheel and sdist.

The pre-commit hook runs through pre-commit itself, against a scratch git repository (offline:
the `cediag-system` hook uses the installed cediag; the `language: python` hook would pip
install torch, so it is checked against pre-commit's manifest schema only). The action's
structure is validated and its check step's script runs as the runner would run it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import torch
from test_io import labels, logits

ROOT = Path(__file__).resolve().parent.parent
HOOKS = ROOT / ".pre-commit-hooks.yaml"
ACTION = ROOT / "action.yml"

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
needs_script = pytest.mark.skipif(
    shutil.which("cediag") is None, reason="needs the cediag script on PATH (pip install -e .)"
)


def save_call(path: Path, softmaxed: bool) -> Path:
    x = logits()
    torch.save({"input": x.softmax(1) if softmaxed else x, "target": labels()}, path)
    return path


# ---------------------------------------------------------------- pre-commit


def test_hooks_manifest_is_valid_for_pre_commit():
    clientlib = pytest.importorskip(
        "pre_commit.clientlib", reason="validating the hook manifest needs pre-commit"
    )
    hooks = {hook["id"]: hook for hook in clientlib.load_manifest(str(HOOKS))}
    assert set(hooks) == {"cediag", "cediag-system"}
    for hook in hooks.values():
        assert hook["entry"] == "cediag check" and hook["pass_filenames"]
        pattern = re.compile(hook["files"])
        for name in ("a.pt", "dumps/b.safetensors", "c.pth", "d.npz"):
            assert pattern.search(name), name
        for name in ("x.npy", "train.py", "model.pt.txt"):  # .npy holds one tensor, not a call
            assert not pattern.search(name), name
    assert hooks["cediag"]["language"] == "python"


def git(cwd: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def try_repo(hook_repo: Path, project: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEDIAG_")}
    env["PRE_COMMIT_HOME"] = str(tmp_path / "pre-commit-home")
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "try-repo", str(hook_repo), "cediag-system"]
        + ["--all-files", "--verbose"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@needs_git
@needs_script
def test_pre_commit_runs_the_hook_on_a_repository(tmp_path):
    pytest.importorskip("pre_commit", reason="running the hook needs pre-commit")
    hook_repo = tmp_path / "hooks"
    hook_repo.mkdir()
    shutil.copy(HOOKS, hook_repo / ".pre-commit-hooks.yaml")
    git(hook_repo, "init", "-q")
    git(hook_repo, "add", ".")
    git(hook_repo, "commit", "-q", "-m", "hooks")

    project = tmp_path / "project"
    (project / "fixtures").mkdir(parents=True)
    save_call(project / "fixtures" / "good.pt", softmaxed=False)
    (project / "train.py").write_text("print('not a saved call')\n")
    git(project, "init", "-q")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "a clean fixture")
    clean = try_repo(hook_repo, project, tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "Passed" in clean.stdout

    save_call(project / "fixtures" / "bad.pt", softmaxed=True)
    git(project, "add", ".")
    failing = try_repo(hook_repo, project, tmp_path)
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "Failed" in failing.stdout and "CE301 softmax-applied" in failing.stdout
    assert "fixtures/bad.pt" in failing.stdout


# ---------------------------------------------------------------- the GitHub Action


def action() -> dict:
    yaml = pytest.importorskip("yaml", reason="reading action.yml needs PyYAML")
    return yaml.safe_load(ACTION.read_text())


def test_action_is_a_well_formed_composite_action():
    spec = action()
    assert spec["name"] and spec["description"]
    assert spec["runs"]["using"] == "composite"
    steps = spec["runs"]["steps"]
    inputs = spec["inputs"]
    step_ids = {step["id"] for step in steps if "id" in step}
    assert inputs["files"]["required"] is True
    for name, declared in inputs.items():
        assert declared["description"], name
        assert declared.get("required") or "default" in declared, name
    text = ACTION.read_text()
    for name in re.findall(r"inputs\.([A-Za-z0-9_-]+)", text):
        assert name in inputs, f"action.yml uses an undeclared input {name!r}"
    for step_id in re.findall(r"steps\.([A-Za-z0-9_-]+)\.outputs", text):
        assert step_id in step_ids, f"action.yml reads outputs of an unknown step {step_id!r}"
    for name, output in spec["outputs"].items():
        assert output["description"] and output["value"].startswith("${{ steps."), name
    for step in steps:
        assert step.get("name")
        assert ("run" in step) != ("uses" in step), step["name"]
        if "run" in step:
            assert step["shell"] == "bash", step["name"]  # composite steps must name a shell
            # inputs reach scripts through env, never pasted into the script (injection)
            assert "${{" not in step["run"], step["name"]
        else:
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+", step["uses"]), step["uses"]
    upload = next(step for step in steps if "upload-sarif" in step.get("uses", ""))
    assert upload["with"]["sarif_file"] == "${{ inputs.sarif-file }}"
    assert steps[-1]["run"].strip() == 'exit "$CODE"'  # the job fails after the upload


def run_check_step(tmp_path: Path, files: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the action's check step with bash as the runner would, inputs at their defaults."""
    spec = action()
    step = next(step for step in spec["runs"]["steps"] if step.get("id") == "check")
    inputs = {name: str(value.get("default", "")) for name, value in spec["inputs"].items()}
    inputs["files"] = files
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEDIAG_")}
    for name, value in step["env"].items():
        env[name] = re.sub(r"\$\{\{ inputs\.([\w-]+) \}\}", lambda m: inputs[m.group(1)], value)
    output = tmp_path / "github_output"
    output.touch()
    env["GITHUB_OUTPUT"] = str(output)
    result = subprocess.run(
        ["bash", "-e", "-c", step["run"]],  # the runner's shell: bash -e {0}
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    return result, outputs


@needs_script
def test_the_action_check_step_annotates_writes_sarif_and_reports_the_exit_code(tmp_path):
    (tmp_path / "fixtures").mkdir()
    save_call(tmp_path / "fixtures" / "good.pt", softmaxed=False)
    save_call(tmp_path / "fixtures" / "bad.pt", softmaxed=True)
    result, outputs = run_check_step(tmp_path, "fixtures/*.pt")
    assert result.returncode == 0, result.stderr  # the step itself passes; the last one fails
    assert outputs == {"exit-code": "1", "sarif-file": "cediag.sarif"}
    assert "::error file=fixtures/bad.pt,title=CE301 softmax-applied::" in result.stdout
    log = json.loads((tmp_path / "cediag.sarif").read_text())
    (finding,) = log["runs"][0]["results"]
    location = finding["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert location == "fixtures/bad.pt"  # relative to the workspace, as code scanning wants


@needs_script
def test_the_action_still_uploads_when_a_file_cannot_be_read(tmp_path):
    save_call(tmp_path / "good.pt", softmaxed=True)
    (tmp_path / "empty.pt").touch()
    result, outputs = run_check_step(tmp_path, "good.pt empty.pt")
    assert outputs["exit-code"] == "2"
    log = json.loads((tmp_path / "cediag.sarif").read_text())
    run = log["runs"][0]
    assert [r["ruleId"] for r in run["results"]] == ["CE301"]
    assert run["invocations"][0]["executionSuccessful"] is False


# ---------------------------------------------------------------- a built wheel and sdist


def test_ci_docs_install_what_exists():
    """cediag is on no package index: the CI docs must not tell users to `pip install cediag`."""
    text = (ROOT / "docs" / "ci.md").read_text()
    code = "\n".join(re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.DOTALL))
    commands = [line for line in code.splitlines() if "pip install" in line]
    assert commands
    for line in commands:
        assert not re.search(r"pip install (-U )?cediag(\s|$)", line), line
    assert "git+https://" in code and "python -m build" in code


def venv_python(directory: Path) -> Path:
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(directory)
    bin_dir = "Scripts" if os.name == "nt" else "bin"
    return directory / bin_dir / ("python.exe" if os.name == "nt" else "python")


SMOKE = """
import json, pathlib, subprocess, sys
import cediag
assert pathlib.Path(cediag.__file__).resolve().is_relative_to(pathlib.Path(sys.prefix).resolve()), cediag.__file__
for name in ("report", "check", "statistics", "summary"):
    package = pathlib.Path(cediag.__file__).parent
    assert json.loads((package / f"{name}.schema.json").read_text())["$schema"]
import torch
torch.save({"input": torch.randn(4, 3).softmax(1), "target": torch.tensor([0, 1, 2, 0])}, "b.pt")
script = pathlib.Path(sys.executable).parent / "cediag"
result = subprocess.run([str(script), "check", "b.pt", "--format", "json"], capture_output=True, text=True)
assert result.returncode == 1, result.stderr
assert cediag.Report.model_validate_json(result.stdout).by_rule("CE301")
print("smoke ok", cediag.__version__)
"""


@pytest.mark.slow
def test_build_makes_a_wheel_and_an_sdist_that_install_and_run(tmp_path):
    pytest.importorskip("build", reason="building the distributions needs the build package")
    dist = tmp_path / "dist"
    source = tmp_path / "source"
    # build from a copy of the tracked files: a clean tree, as a release would be
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listing.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = dist.glob("cediag-*.whl")
    (sdist,) = dist.glob("cediag-*.tar.gz")
    for artifact in (wheel, sdist):
        env_dir = tmp_path / f"venv-{artifact.suffix.strip('.')}"
        python = venv_python(env_dir)
        installed = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps"]
            + ["--no-build-isolation", "--no-index", "--disable-pip-version-check", str(artifact)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
        work = tmp_path / f"work-{artifact.suffix.strip('.')}"
        work.mkdir()
        smoke = subprocess.run(
            [str(python), "-c", SMOKE], cwd=work, capture_output=True, text=True, timeout=300
        )
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        assert "smoke ok" in smoke.stdout
