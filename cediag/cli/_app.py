"""The `cediag` command line: check saved tensors, gate CI, browse the rule catalogue.

Machine formats go to stdout, plain and unwrapped; everything for people (summary, progress,
warnings, errors) goes to stderr. Exit codes are `cediag.ExitCode`: 0 clean, 1 findings at or
above `--fail-on`, 2 could not run (always one line naming the file and what to do).
"""

from __future__ import annotations

import difflib
import json
import re
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


def _losses() -> dict[str, str]:
    from ..families import losses  # declarations only: no rule module is imported

    return {name: name for name in losses()}


Loss = Enum("Loss", _losses(), type=str)  # every family's `loss=` names


def fail(message: str) -> NoReturn:
    """Stop with exit code 2 and one plain line on stderr (never wrapped, never a traceback)."""
    _Announcement.clear()
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
    ctx: typer.Context,
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
    tensor: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME=FILE[:KEY]",
            help="Another tensor argument of the loss: pos_weight (BCE), linear_weight or "
            "linear_bias (linear cross-entropy). Repeatable. A dict file names them itself.",
            show_default=False,
        ),
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
        typer.Option(
            "--format",
            envvar="CEDIAG_FORMAT",
            help="Output format (default: [tool.cediag] format, else text).",
        ),
    ] = Format.text,
    output_file: Annotated[
        Path | None,
        typer.Option(
            "--output-file",
            "-o",
            metavar="FILE",
            help="Write the report to FILE instead of stdout.",
            show_default=False,
        ),
    ] = None,
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
        typer.Option(
            envvar="CEDIAG_FAIL_ON",
            help="Least severity that makes the exit code 1 (default: [tool.cediag] fail-on, "
            "else error).",
        ),
    ] = Level.error,
    exit_zero: Annotated[
        bool, typer.Option("--exit-zero", help="Exit 0 even with findings (not when unreadable).")
    ] = False,
    show_statistics: Annotated[
        bool, typer.Option("--statistics", help="Show counts per rule instead of each finding.")
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="Print the report only: no summary, notes or progress on stderr."
        ),
    ] = False,
    no_color: Annotated[
        bool, typer.Option("--no-color", help="No colour in the text report (as NO_COLOR=1).")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            metavar="PYPROJECT",
            help="Read [tool.cediag] from this file instead of the closest pyproject.toml.",
            show_default=False,
        ),
    ] = None,
    isolated: Annotated[
        bool, typer.Option("--isolated", help="Ignore every [tool.cediag] configuration.")
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
    announce = _announce_start(quiet)
    settings = _settings(config, isolated)
    if _from_default(ctx, "output_format") and settings.format is not None:
        output_format = Format(settings.format)
    if _from_default(ctx, "fail_on") and settings.fail_on is not None:
        fail_on = Level(settings.fail_on)
    selected = _patterns(select, "--select") if select else _listed(settings.select)
    ignored = _patterns(ignore, "--ignore") if ignore else _listed(settings.ignore)
    out = _open_output(output_file)

    from .. import _io  # noqa: F401  (imports torch: most of a cold start)
    from .._report import Severity
    from .formats import Checked, FileError, Options, partial_reason, writer

    announce.done()
    if unsafe_load:
        sys.stderr.write(
            "cediag: WARNING: --unsafe-load unpickles .pt/.pth files with weights_only=False: "
            "a malicious file runs arbitrary code on this machine. Use it only on files you "
            "created yourself.\n"
        )
    calls = _load_calls(files, weight, input_key, target_key, weight_key, unsafe_load, quiet)
    extra = _extra_tensors(tensor or [], unsafe_load)
    overrides = {
        "ignore_index": ignore_index,
        "label_smoothing": label_smoothing,
        "reduction": reduction.value if reduction else None,
        "loss": loss.value if loss else None,
        **extra,  # --tensor: given on the command line, so a loss without it is an error
    }
    results: list[Checked | FileError] = []
    for path, saved in calls:
        if isinstance(saved, FileError):
            results.append(saved)
            continue
        if not quiet:
            for note in saved.notes:
                sys.stderr.write(f"cediag: note: {path}: {note}\n")
        try:
            report = _check(saved, overrides, selected, ignored, path, quiet)
        except ValueError as error:  # an option the loss does not take (--ignore-index for BCE)
            fail(str(error))
        except Exception as error:  # check() never raises on tensors; this is a bug
            results.append(
                FileError(
                    path=path,
                    error=f"internal error while checking ({type(error).__name__}: {error})",
                    fix="please report it",
                )
            )
            continue
        results.append(
            Checked(path=path, report=report.model_copy(update={"source": saved.source}))
        )

    unreadable = [r for r in results if isinstance(r, FileError)]
    for error in unreadable:
        sys.stderr.write(f"cediag: error: {' '.join(error.message.split())}\n")
    level = Severity(fail_on.value)
    options = Options(fail_on=level, statistics=show_statistics, color=not no_color)
    try:
        writer(output_format.value)(results, options, out)
        out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    reports = [r for r in results if isinstance(r, Checked)]
    failed = any(r.report.at_least(level) for r in reports)
    # A check whose values could not be read is incomplete, never a clean pass.
    partial = [r for r in reports if not r.report.values_checked]
    for checked in partial:
        sys.stderr.write(f"cediag: error: {checked.path}: {partial_reason(checked.report)}\n")
    if not quiet and reports:
        _summary(reports, len(unreadable), level, failed, exit_zero, len(partial))
    if show_statistics and output_format not in (Format.text, Format.json) and not quiet:
        from rich.console import Console

        from .formats.text import write_statistics

        console = Console(stderr=True, soft_wrap=True, color_system=None if no_color else "auto")
        write_statistics(console, results)
    if unreadable or (partial and not failed):
        raise typer.Exit(ExitCode.COULD_NOT_RUN)
    raise typer.Exit(ExitCode.FINDINGS if failed and not exit_zero else ExitCode.CLEAN)


class _Announcement:
    """A transient "starting" line on a terminal, shown while torch imports (seconds, cold)."""

    current: _Announcement | None = None  # the line on screen, erased before any other output

    def __init__(self, shown: bool):
        self.shown = shown
        if shown:
            _Announcement.current = self

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")  # erase the line: the report takes its place
            sys.stderr.flush()
            self.shown = False
            _Announcement.current = None

    @classmethod
    def clear(cls) -> None:
        if cls.current is not None:
            cls.current.done()


def _announce_start(quiet: bool) -> _Announcement:
    """On a terminal, say that work has begun before the first (slow) import of torch.

    Only on a terminal (stderr a TTY) and only when torch is not loaded yet: in CI logs and
    pipes stderr stays the summary alone."""
    if quiet or "torch" in sys.modules or not sys.stderr.isatty():
        return _Announcement(False)
    sys.stderr.write("cediag: starting (loading torch)...")
    sys.stderr.flush()
    return _Announcement(True)


def _settings(config: Path | None, isolated: bool):
    from .._settings import Settings, SettingsError, load_settings

    if isolated:
        return Settings()
    try:
        return load_settings(config=config)
    except SettingsError as error:
        fail(str(error))


def _from_default(ctx: typer.Context, name: str) -> bool:
    """Whether an option kept its built-in default (not given, nor set by its env variable)."""
    source = ctx.get_parameter_source(name)  # typer may vendor click: compare by name
    return source is None or source.name == "DEFAULT"


def _listed(patterns: tuple[str, ...] | None) -> list[str] | None:
    return list(patterns) if patterns else None


def _open_output(path: Path | None):
    if path is None:
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed after writing)
    except OSError as error:
        fail(f"{path}: cannot write the report ({error.strerror or error}); check -o/--output-file")


def _patterns(values: list[str] | None, option: str) -> list[str] | None:
    """Split comma-separated rule patterns and refuse ones that match no rule (a typo in CI)."""
    if not values:
        return None
    from ..rules import validate_patterns

    patterns = [p.strip() for value in values for p in value.split(",") if p.strip()]
    for pattern in patterns:
        try:
            validate_patterns([pattern])
        except ValueError as error:
            fail(f"{option} {error}; see `cediag rules`")
    return patterns


def _extra_tensors(specs: list[str], unsafe: bool) -> dict:
    """`--tensor NAME=FILE[:KEY]` options, read once for every call; exit 2 on a bad one."""
    from .._io import TENSOR_OPTION_NAMES, LoadError, load_tensor

    found = {}
    for spec in specs:
        name, sep, source = spec.partition("=")
        if not sep or not source:
            fail(f"--tensor {spec!r}: expected NAME=FILE[:KEY], e.g. pos_weight=pw.pt")
        if name not in TENSOR_OPTION_NAMES:
            fail(
                f"--tensor {name}: not a tensor argument of any loss ({', '.join(TENSOR_OPTION_NAMES)})"
            )
        try:
            found[name] = load_tensor(source, role=name, unsafe=unsafe)
        except LoadError as error:
            fail(f"--tensor {name}: {error}")
    return found


def _load_calls(files, weight, input_key, target_key, weight_key, unsafe, quiet=False):
    """The calls to check, in command-line order: (path findings point at, SavedCall), or
    (path, FileError) for a file that could not be read, so the others are still checked."""
    from .._io import IncompleteCall, LoadError, load, split_key
    from .formats import FileError

    keys = {"input_key": input_key, "target_key": target_key, "weight_key": weight_key}
    if not quiet:
        _progress_read([split_key(f)[0] for f in files])

    def error_of(error: Exception, path: str) -> FileError:
        if isinstance(error, LoadError):
            return FileError(path=error.path, error=error.problem, fix=error.hint)
        return FileError(  # unforeseen: still one entry, naming the file
            path=path,
            error=f"could not be read ({type(error).__name__}: {error})",
            fix="check the file; if it loads with torch.load, please report this",
        )

    def whole(path: str):
        """A whole-call file, or a language-model batch (input_ids + labels, no logits);
        IncompleteCall (one tensor, no target) passes through."""
        try:
            return load(path, weight=weight, unsafe=unsafe, **keys)
        except IncompleteCall:
            raise
        except Exception as error:
            # Not a call: a batch, read only then (a call file is read, and unpickled, once).
            batch = _saved_batch(path, unsafe) if input_key is None and target_key is None else None
            return batch if batch is not None else error_of(error, path)

    def incomplete(error: IncompleteCall) -> FileError:
        return FileError(path=error.path, error=error.problem, fix=error.hint)

    if len(files) == 2:
        try:
            first = whole(files[0])
        except IncompleteCall:  # the input and the target as two files
            path = str(split_key(files[0])[0])
            try:
                pair = load(
                    files[0],
                    files[1],
                    weight=weight,
                    input_key=input_key,
                    target_key=target_key,
                    unsafe=unsafe,
                )
            except Exception as error:
                return [(path, error_of(error, path))]
            return [(path, pair)]
        try:
            second = whole(files[1])
        except IncompleteCall as error:
            if isinstance(first, FileError):  # the target of an input that could not be read
                return [(files[0], first)]
            second = FileError(
                path=error.path,
                error=f"{error.problem}, but {files[0]} already holds a whole call",
                fix="give each call in its own file, or the input and the target as two files",
            )
        return [(files[0], first), (files[1], second)]
    calls = []
    for path in files:
        try:
            calls.append((path, whole(path)))
        except IncompleteCall as error:
            calls.append((path, incomplete(error)))
    return calls


def _saved_batch(path: str, unsafe: bool):
    """A collated batch dict (`input_ids` + `labels`, no logits), or None."""
    from ..sequence._io import load_batch

    try:
        return load_batch(path, unsafe=unsafe)
    except Exception:  # the call loader's error names the file's problem
        return None


def _check(saved, overrides, select, ignore, path, quiet=False):
    from .._engine import check as run_check
    from ..sequence._io import SavedBatch

    if isinstance(saved, SavedBatch):  # a language-model batch: the sequence-context rules
        from ..sequence import check_batch

        options = dict(saved.options)
        if overrides.get("ignore_index") is not None:
            options["ignore_index"] = overrides["ignore_index"]
        return check_batch(saved.batch, **options, select=select, ignore=ignore)
    kwargs = saved.check_kwargs(**overrides)
    if quiet or not sys.stderr.isatty():
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


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _summary(
    reports, unreadable: int, level, failed: bool, exit_zero: bool, partial: int = 0
) -> None:
    """One sentence on stderr: "cediag: checked 3 files: 2 errors, 1 warning (exit 1: ...)."."""
    from .._render import count_phrase

    diagnostics = [d for r in reports for d in r.report.diagnostics]
    sentence = f"cediag: checked {_plural(len(reports), 'file')}: "
    sentence += count_phrase(diagnostics) or "no problems found"
    if unreadable:
        cannot = "file" if unreadable == 1 else "files"
        sentence += f"; {unreadable} more {cannot} could not be checked (exit 2)"
    elif partial and not failed:
        sentence += f"; the values of {_plural(partial, 'call')} could not be read (exit 2)"
    elif failed and exit_zero:
        sentence += " (exit 0: --exit-zero)"
    elif failed:
        worse = "" if level.value == "error" else " or worse"
        sentence += f" (exit 1: {level.value}s{worse} fail the check)"
    sys.stderr.write(sentence + "\n")


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
                "family": r.category,
                "loss_family": r.family,
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
    category = None
    for r in RULES.values():
        if r.code[:-2] != category:
            category = r.code[:-2]
            table.add_row(
                f"[bold]{category}xx[/]", f"[bold]{r.category}[/]", "", "", end_section=False
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
        word.upper() if re.match(r"[A-Za-z]{2,4}\d", word) else word.lower(), choices, n=2
    )
    return f" (did you mean {' or '.join(close)}?)" if close else ""


class SchemaKind(str, Enum):
    report = "report"
    check = "check"
    statistics = "statistics"
    summary = "summary"


DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_FILES = {kind: f"{kind.value}.schema.json" for kind in SchemaKind}
"""The committed copy of each schema, next to this package's `__init__.py`."""


def report_schema(kind: SchemaKind | str = SchemaKind.report) -> str:
    """A JSON schema, as `cediag schema KIND` prints it.

    report: one `cediag.Report` (what `--format json` writes for one file, and the `report` of
    a guard dump's sidecar). check: anything `cediag check --format json` writes: one entry or a
    list, each a report or a file that could not be checked. statistics: `--statistics --format
    json`. summary: a guard's summary (`cediag.summary()`, what `cediag run --format json`
    writes). Serialization schemas: they describe the JSON written, `ok` included.
    """
    from pydantic import TypeAdapter

    from .._report import Report
    from .formats import FileError, StatisticsRow

    kind = SchemaKind(kind)
    if kind is SchemaKind.report:
        schema = {"$schema": DIALECT, **Report.model_json_schema(mode="serialization")}
    elif kind is SchemaKind.summary:
        from ..guard import GuardSummary

        schema = {"$schema": DIALECT, **GuardSummary.model_json_schema(mode="serialization")}
    else:
        entry = Report | FileError
        shape = entry | list[entry] if kind is SchemaKind.check else list[StatisticsRow | FileError]
        title = {
            SchemaKind.check: "cediag check --format json",
            SchemaKind.statistics: "cediag check --statistics --format json",
        }[kind]
        adapter = TypeAdapter(shape)
        schema = {"$schema": DIALECT, "title": title, **adapter.json_schema(mode="serialization")}
    return json.dumps(schema, indent=2) + "\n"


@app.command()
def schema(
    kind: Annotated[
        SchemaKind,
        typer.Argument(
            help="report: one report (--format json for one file, a dump's report); check: "
            "anything check --format json writes; statistics: --statistics --format json; "
            "summary: a guard's summary (cediag run --format json)."
        ),
    ] = SchemaKind.report,
) -> None:
    """Print a JSON schema of cediag's JSON output (default: one report)."""
    sys.stdout.write(report_schema(kind))


# ---------------------------------------------------------------- demo and run


@app.command()
def demo(
    output_format: Annotated[
        ListFormat, typer.Option("--format", help="text (panels) or json.")
    ] = ListFormat.text,
) -> None:
    """Show the most common cross-entropy mistakes, what torch says, and what cediag says."""
    announce = _announce_start(quiet=False)
    from .._demo import run_demo

    announce.done()
    run_demo(output_format.value, sys.stdout)


class RunFormat(str, Enum):
    text = "text"
    json = "json"
    github = "github"


class OnError(str, Enum):
    warn = "warn"
    raise_ = "raise"
    log = "log"


class Sync(str, Enum):
    eager = "eager"
    deferred = "deferred"


@app.command(
    # Everything after the script's name is the script's, --help included.
    context_settings={"allow_extra_args": True, "allow_interspersed_args": False},
)
def run(
    ctx: typer.Context,
    script: Annotated[str, typer.Argument(help="The training script to run under watch().")],
    fail_on: Annotated[
        Level, typer.Option(help="Least severity that makes the exit code 1.")
    ] = Level.error,
    exit_zero: Annotated[
        bool,
        typer.Option("--exit-zero", help="Exit with the script's own code, whatever is found."),
    ] = False,
    on_error: Annotated[
        OnError,
        typer.Option(help="warn and go on (default), raise before the loss runs, or log."),
    ] = OnError.warn,
    first: Annotated[
        int, typer.Option(min=0, help="Full checks on the first N calls at each call site.")
    ] = 10,
    every: Annotated[
        int,
        typer.Option(min=0, help="Then a full check every N-th call (0: never; 1: every call)."),
    ] = 100,
    sync: Annotated[
        Sync, typer.Option(help="eager: read each check at once; deferred: in batches (GPU).")
    ] = Sync.eager,
    dump_dir: Annotated[
        str | None,
        typer.Option(
            metavar="DIR",
            help="Save a reproducer of each failing call site here.",
            show_default=False,
        ),
    ] = None,  # fmt: skip
    select: Annotated[
        list[str] | None,
        typer.Option(
            metavar="RULES", help="Only these rules (codes, prefixes or slugs).", show_default=False
        ),
    ] = None,  # fmt: skip
    ignore: Annotated[
        list[str] | None,
        typer.Option(metavar="RULES", help="Skip these rules.", show_default=False),
    ] = None,
    output_format: Annotated[
        RunFormat,
        typer.Option(
            "--format",
            help="The summary at the end: text or json (stderr), github "
            "(workflow annotations on stdout).",
        ),
    ] = RunFormat.text,  # fmt: skip
) -> None:
    """Run an unmodified script with every cross-entropy call checked (like python -m cProfile).

    cediag's options come before the script; everything after it goes to the script. Exit
    code: the script's own when it fails, else 1 when a finding at --fail-on or worse was seen,
    else 0.
    """
    options = {
        "on_error": on_error.value,
        "fail_on": fail_on.value,
        "first": first,
        "every": every,
        "sync": sync.value,
        "dump_dir": dump_dir,
        "select": _patterns(select, "--select"),
        "ignore": _patterns(ignore, "--ignore"),
    }
    # [tool.cediag] (and its [tool.cediag.guard] table) fills what the command line left unset.
    for name, value in _settings(None, False).guard_options().items():
        if name not in options or _from_default(ctx, name):
            options[name] = value
    announce = _announce_start(quiet=False)
    from .._runner import run_script

    announce.done()
    code = run_script(
        script,
        list(ctx.args),
        report_format=output_format.value,
        fail_on_findings=not exit_zero,
        **options,
    )
    raise typer.Exit(code)


def main() -> None:
    """Entry point of the `cediag` script and `python -m cediag`."""
    app(prog_name="cediag")
