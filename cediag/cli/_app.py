"""The `cediag` command line: check saved tensors, gate CI, browse the rule catalogue.

Machine formats go to stdout, plain and unwrapped; everything for people (summary, progress,
warnings, errors) goes to stderr. Exit codes are `cediag.ExitCode`: 0 clean, 1 findings at or
above `--fail-on`, 2 could not run (always one line naming the file and what to do).
"""

from __future__ import annotations

import difflib
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from .._exit import ExitCode

app = typer.Typer(
    name="cediag",
    help="Check cross-entropy inputs (logits, targets, options) before they reach the loss.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals would print tensors
    rich_markup_mode="rich",
)

PROGRESS_BYTES = 256 * 2**20  # pre-read (with a progress bar) inputs larger than this on a TTY


class Format(str, Enum):
    text = "text"
    json = "json"
    github = "github"
    sarif = "sarif"
    junit = "junit"


class ListFormat(str, Enum):
    text = "text"
    json = "json"


class Level(str, Enum):
    error = "error"
    warning = "warning"
    info = "info"


class Reduction(str, Enum):
    mean = "mean"
    sum = "sum"
    none = "none"


class Loss(str, Enum):
    cross_entropy = "cross_entropy"
    nll = "nll"


def fail(message: str) -> NoReturn:
    """Stop with exit code 2 and one plain line on stderr (never wrapped, never a traceback)."""
    sys.stderr.write(f"cediag: error: {' '.join(message.split())}\n")
    raise typer.Exit(ExitCode.COULD_NOT_RUN)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        sys.stdout.write(f"cediag {__version__}\n")
        raise typer.Exit(ExitCode.CLEAN)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Check cross-entropy inputs (logits, targets, options) before they reach the loss.

    cediag demo shows what it finds; cediag check FILE checks saved tensors.
    """


# ---------------------------------------------------------------- check


@app.command()
def check(
    files: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUT [TARGET]",
            help="A file holding the whole call (dict with input/target, or a guard dump), or "
            "the input and the target as two files. FILE:KEY picks a tensor by key. More than "
            "two whole-call files are checked one by one.",
            show_default=False,
        ),
    ],
    weight: Annotated[
        str | None,
        typer.Option(metavar="FILE[:KEY]", help="Class weights (C,).", show_default=False),
    ] = None,
    ignore_index: Annotated[
        int | None,
        typer.Option(help="As in F.cross_entropy (default: the saved value, else -100)."),
    ] = None,
    label_smoothing: Annotated[
        float | None, typer.Option(help="As in F.cross_entropy (default: the saved value, else 0).")
    ] = None,
    reduction: Annotated[
        Reduction | None,
        typer.Option(help="As in F.cross_entropy (default: the saved value, else mean)."),
    ] = None,
    loss: Annotated[
        Loss | None,
        typer.Option(
            help="The loss the call feeds (default: the saved value, else cross_entropy)."
        ),
    ] = None,
    input_key: Annotated[
        str | None, typer.Option(help="Key of the input in a dict file.", show_default=False)
    ] = None,
    target_key: Annotated[
        str | None, typer.Option(help="Key of the target in a dict file.", show_default=False)
    ] = None,
    weight_key: Annotated[
        str | None, typer.Option(help="Key of the weight in a dict file.", show_default=False)
    ] = None,
    output_format: Annotated[
        Format,
        typer.Option("--format", envvar="CEDIAG_FORMAT", help="Output format (stdout)."),
    ] = Format.text,
    select: Annotated[
        list[str] | None,
        typer.Option(
            metavar="RULES",
            help="Only these rules: codes, prefixes (CE3) or slugs; repeat or comma-separate.",
            show_default=False,
        ),
    ] = None,
    ignore: Annotated[
        list[str] | None,
        typer.Option(
            metavar="RULES", help="Skip these rules (codes, prefixes or slugs).", show_default=False
        ),
    ] = None,
    fail_on: Annotated[
        Level,
        typer.Option(envvar="CEDIAG_FAIL_ON", help="Least severity that makes the exit code 1."),
    ] = Level.error,
    exit_zero: Annotated[
        bool, typer.Option("--exit-zero", help="Exit 0 even with findings (not when unreadable).")
    ] = False,
    show_statistics: Annotated[
        bool, typer.Option("--statistics", help="Show counts per rule instead of each finding.")
    ] = False,
    unsafe_load: Annotated[
        bool,
        typer.Option(
            "--unsafe-load",
            help="DANGEROUS: unpickle .pt files with weights_only=False (runs any code they "
            "hold). Only for files you made yourself.",
        ),
    ] = False,
) -> None:
    """Check saved tensors: .pt/.pth, .safetensors, .npy, .npz, or a guard dump."""
    from .._io import LoadError
    from .._report import Severity
    from .formats import Checked, Options, writer

    selected = _patterns(select, "--select")
    ignored = _patterns(ignore, "--ignore")
    if unsafe_load:
        sys.stderr.write(
            "cediag: WARNING: --unsafe-load unpickles .pt/.pth files with weights_only=False: "
            "a malicious file runs arbitrary code on this machine. Use it only on files you "
            "created yourself.\n"
        )
    try:
        calls = _load_calls(files, weight, input_key, target_key, weight_key, unsafe_load)
    except LoadError as error:
        fail(str(error))
    except Exception as error:  # unforeseen: still one line, naming the files
        fail(f"{', '.join(files)}: could not be read ({type(error).__name__}: {error})")

    overrides = {
        "ignore_index": ignore_index,
        "label_smoothing": label_smoothing,
        "reduction": reduction.value if reduction else None,
        "loss": loss.value if loss else None,
    }
    results = []
    for path, saved in calls:
        for note in saved.notes:
            sys.stderr.write(f"cediag: note: {path}: {note}\n")
        try:
            report = _check(saved, overrides, selected, ignored, path)
        except Exception as error:  # check() never raises on tensors; this is a bug
            fail(
                f"{path}: internal error while checking ({type(error).__name__}: {error}); please report it"
            )
        results.append(
            Checked(path=path, report=report.model_copy(update={"source": saved.source}))
        )

    level = Severity(fail_on.value)
    options = Options(fail_on=level, statistics=show_statistics)
    writer(output_format.value)(results, options, sys.stdout)
    sys.stdout.flush()
    failed = any(r.report.at_least(level) for r in results)
    _summary(results, level, failed, exit_zero)
    if show_statistics and output_format not in (Format.text, Format.json):
        from rich.console import Console

        from .formats.text import write_statistics

        write_statistics(Console(stderr=True, soft_wrap=True), results)
    raise typer.Exit(ExitCode.FINDINGS if failed and not exit_zero else ExitCode.CLEAN)


def _patterns(values: list[str] | None, option: str) -> list[str] | None:
    """Split comma-separated rule patterns and refuse ones that match no rule (a typo in CI)."""
    if not values:
        return None
    from ..rules import RULES, select_rules

    patterns = [p.strip() for value in values for p in value.split(",") if p.strip()]
    for pattern in patterns:
        if not select_rules([pattern]):
            hint = _suggest(pattern, [*RULES, *(r.slug for r in RULES.values())])
            fail(f"{option} {pattern}: matches no rule{hint}; see `cediag rules`")
    return patterns


def _load_calls(files, weight, input_key, target_key, weight_key, unsafe):
    """The calls to check, as (path findings point at, SavedCall)."""
    from .._io import IncompleteCall, LoadError, load, split_key

    keys = {"input_key": input_key, "target_key": target_key, "weight_key": weight_key}
    _progress_read([split_key(f)[0] for f in files])
    if len(files) == 2:
        try:
            first = load(files[0], weight=weight, unsafe=unsafe, **keys)
        except IncompleteCall:
            pair = load(
                files[0],
                files[1],
                weight=weight,
                input_key=input_key,
                target_key=target_key,
                unsafe=unsafe,
            )
            return [(str(split_key(files[0])[0]), pair)]
        try:
            second = load(files[1], weight=weight, unsafe=unsafe, **keys)
        except IncompleteCall as error:
            raise LoadError(
                files[1],
                f"{error.problem}, but {files[0]} already holds a whole call",
                "give each call in its own file, or the input and the target as two files",
            ) from None
        return [(files[0], first), (files[1], second)]
    return [(files[i], load(f, weight=weight, unsafe=unsafe, **keys)) for i, f in enumerate(files)]


def _check(saved, overrides, select, ignore, path):
    from .._engine import check as run_check

    kwargs = saved.check_kwargs(**overrides)
    if not sys.stderr.isatty():
        return run_check(**kwargs, select=select, ignore=ignore)
    from rich.console import Console

    with Console(stderr=True).status(f"checking {path}", spinner="dots"):
        return run_check(**kwargs, select=select, ignore=ignore)


def _progress_read(paths: list[Path]) -> None:
    """Read big files once through a small buffer with a progress bar (TTY only).

    The check maps the files; reading them first shows how far a slow disk has got and leaves
    the pages in the OS cache. Memory use stays one buffer.
    """
    if not sys.stderr.isatty():
        return
    sizes = {p: p.stat().st_size for p in paths if p.is_file()}
    total = sum(sizes.values())
    if total < PROGRESS_BYTES:
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    buffer = bytearray(16 * 2**20)
    columns = ("[progress.description]{task.description}", BarColumn(), DownloadColumn())
    with Progress(*columns, TimeRemainingColumn(), transient=True) as progress:
        task = progress.add_task("reading", total=total)
        for path in sizes:
            progress.update(task, description=f"reading {path.name}")
            try:
                with open(path, "rb", buffering=0) as f:
                    while n := f.readinto(buffer):
                        progress.advance(task, n)
            except OSError:
                return  # the loader reports it, in one line


def _summary(results, level, failed: bool, exit_zero: bool) -> None:
    counts: dict[str, int] = {}
    for r in results:
        for d in r.report.diagnostics:
            counts[d.severity.value] = counts.get(d.severity.value, 0) + 1
    found = ", ".join(f"{n} {sev}{'s' if n > 1 else ''}" for sev, n in counts.items())
    files = f"{len(results)} file{'s' if len(results) != 1 else ''}"
    verdict = found or "no problems found"
    if failed:
        tail = " (exit 0: --exit-zero)" if exit_zero else f" at or above {level.value}"
        verdict += tail
    sys.stderr.write(f"cediag: checked {files}: {verdict}\n")


# ---------------------------------------------------------------- catalogue


@app.command()
def rules(
    output_format: Annotated[
        ListFormat, typer.Option("--format", help="text (a table) or json.")
    ] = ListFormat.text,
) -> None:
    """List the rule catalogue: code, slug, severity, what fires it."""
    from ..rules import RULES

    if output_format is ListFormat.json:
        data = [
            {
                "code": r.code,
                "rule": r.slug,
                "severity": r.severity.value,
                "family": r.family,
                "summary": r.summary,
            }
            for r in RULES.values()
        ]
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    from .formats.text import STYLE

    table = Table(title="cediag rules", title_justify="left")
    for column in ("code", "rule", "severity", "fires when"):
        table.add_column(column, no_wrap=column != "fires when")
    family = None
    for r in RULES.values():
        if r.family != family:
            family = r.family
            table.add_row(
                f"[bold]CE{r.code[2]}xx[/]", f"[bold]{family}[/]", "", "", end_section=False
            )
        sev = r.severity.value
        table.add_row(r.code, r.slug, f"[{STYLE[sev]}]{sev}[/]", r.summary)
    Console().print(table)


@app.command()
def explain(
    rule: Annotated[
        str, typer.Argument(metavar="CODE_OR_SLUG", help="e.g. CE301 or softmax-applied")
    ],
) -> None:
    """Explain one rule: what it detects, why it matters, a bad and a good example."""
    from .._docs import rule_markdown
    from ..rules import RULES, find_rule

    found = find_rule(rule)
    if found is None:
        hint = _suggest(rule, [*RULES, *(r.slug for r in RULES.values())])
        fail(f"no rule {rule!r}{hint}; `cediag rules` lists them all")
    from rich.console import Console
    from rich.markdown import Markdown

    Console().print(Markdown(rule_markdown(found)))


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(
        word.upper() if word[:2].lower() == "ce" else word.lower(), choices, n=2
    )
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def report_schema() -> str:
    """The JSON schema of `cediag.Report`, as `cediag schema` prints it."""
    from .._report import Report

    return json.dumps(Report.model_json_schema(), indent=2) + "\n"


@app.command()
def schema() -> None:
    """Print the JSON schema of the report (`--format json` output)."""
    sys.stdout.write(report_schema())


# ---------------------------------------------------------------- demo and run


@app.command()
def demo(
    output_format: Annotated[
        ListFormat, typer.Option("--format", help="text (panels) or json.")
    ] = ListFormat.text,
) -> None:
    """Show the most common cross-entropy mistakes, what torch says, and what cediag says."""
    from .._demo import run_demo

    run_demo(output_format.value, sys.stdout)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def run(
    ctx: typer.Context,
    script: Annotated[str, typer.Argument(help="The training script to run under watch().")],
) -> None:
    """Run an unmodified script with every cross-entropy call checked (like python -m cProfile)."""
    from .._runner import run_script

    raise typer.Exit(run_script(script, list(ctx.args)))


def main() -> None:
    """Entry point of the `cediag` script and `python -m cediag`."""
    app(prog_name="cediag")
