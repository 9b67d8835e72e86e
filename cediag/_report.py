"""The report: what a check found, as data (pydantic) that renders to text or JSON.

Everything here is plain data. Rules produce `Diagnostic`s; the engine sorts them into a
`Report`; renderers and the CLI read the report and never look at tensors again.
"""

from __future__ import annotations

import enum
import html
import sys
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

SCHEMA_VERSION = 1


class Severity(str, enum.Enum):
    """How sure we are that the call is wrong.

    error: torch raises, or the loss is certainly wrong. warning: very likely wrong.
    info: legal, but worth knowing.
    """

    error = "error"
    warning = "warning"
    info = "info"

    @property
    def rank(self) -> int:
        return {"error": 2, "warning": 1, "info": 0}[self.value]

    def __str__(self) -> str:
        return self.value


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------- evidence
# Each kind of evidence is a small record; `kind` discriminates them in JSON.


class TensorEvidence(_Frozen):
    """Metadata of one argument: enough to reproduce the shape problem."""

    kind: Literal["tensor"] = "tensor"
    role: str  # "input", "target", "weight"
    shape: list[int]
    dtype: str
    device: str = "cpu"


class ValueEvidence(_Frozen):
    """A count of offending values, with their range and where the first ones are."""

    kind: Literal["values"] = "values"
    role: str
    what: str  # e.g. "out of range", "NaN", "exact zeros"
    count: int
    total: int
    min: float | None = None
    max: float | None = None
    first_positions: list[list[int]] = Field(default_factory=list)
    examples: list[float] = Field(default_factory=list)


class RowSumEvidence(_Frozen):
    """Sums over one dim of sampled rows: the fingerprint of softmax / probability targets."""

    kind: Literal["row-sums"] = "row-sums"
    role: str
    dim: int
    rows_checked: int
    rows_total: int
    min_sum: float
    max_sum: float
    statistic: Literal["sum", "logsumexp"] = "sum"


class GraphEvidence(_Frozen):
    """An autograd node found behind the input: exact proof of an activation."""

    kind: Literal["graph"] = "graph"
    node: str
    dim: int | None = None


class OptionEvidence(_Frozen):
    """A loss option (weight, ignore_index, reduction, label_smoothing) and its value."""

    kind: Literal["option"] = "option"
    name: str
    value: str


Evidence = Annotated[
    TensorEvidence | ValueEvidence | RowSumEvidence | GraphEvidence | OptionEvidence,
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------- diagnostics


class Diagnostic(_Frozen):
    """One problem: stable code and slug, how sure we are, the proof, and what to type."""

    code: str
    rule: str
    severity: Severity
    message: str
    fix: str
    evidence: list[Evidence] = Field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.code} {self.rule} [{self.severity.value}] {self.message}\n    fix: {self.fix}"
        )


class ArgumentSummary(_Frozen):
    shape: list[int] | None = None
    dtype: str | None = None
    device: str | None = None
    type: str = "Tensor"


class CallSummary(_Frozen):
    """The call that was checked, without its data.

    `weight`, `ignore_index`, `reduction` and `label_smoothing` are cross-entropy's options (None
    where the loss has no such option); the other tensor arguments of a family (`pos_weight`,
    `linear_weight`) are in `arguments`, its other options in `options`."""

    loss: str = "cross_entropy"
    input: ArgumentSummary
    target: ArgumentSummary
    weight: ArgumentSummary | None = None
    ignore_index: int | str | None = -100
    reduction: str = "mean"
    label_smoothing: float | str | None = 0.0
    arguments: dict[str, ArgumentSummary] = Field(default_factory=dict)
    options: dict[str, int | float | str | bool | None] = Field(default_factory=dict)


class Report(_Frozen):
    """Everything one check found. `ok` is False when any diagnostic is an error."""

    schema_version: int = SCHEMA_VERSION
    call: CallSummary
    diagnostics: list[Diagnostic] = Field(default_factory=list)
    values_checked: bool = True
    notes: list[str] = Field(default_factory=list)  # what could not be checked, and why
    source: str | None = None  # where the tensors came from (a file, a call site)

    @model_validator(mode="before")
    @classmethod
    def _ignore_computed_ok(cls, data):
        # `ok` is derived from the diagnostics; accept it in JSON read back, never trust it.
        if isinstance(data, dict) and "ok" in data:
            data = {key: value for key, value in data.items() if key != "ok"}
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return not any(d.severity is Severity.error for d in self.diagnostics)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.error]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.warning]

    def worst(self) -> Severity | None:
        return self.diagnostics[0].severity if self.diagnostics else None

    def at_least(self, level: Severity | str) -> list[Diagnostic]:
        """Diagnostics whose severity is `level` or worse."""
        rank = Severity(level).rank
        return [d for d in self.diagnostics if d.severity.rank >= rank]

    def by_rule(self, rule: str) -> Diagnostic | None:
        """The diagnostic of one rule, by slug or code, or None."""
        return next((d for d in self.diagnostics if rule in (d.rule, d.code)), None)

    def raise_for_errors(self) -> Report:
        """Raise CrossEntropyInputError when the report has errors; return self otherwise."""
        if not self.ok:
            raise CrossEntropyInputError(self)
        return self

    def __str__(self) -> str:
        from ._render import render_text

        return render_text(self)

    def _repr_html_(self) -> str:
        """A notebook's view: the verdict, then one table row per finding. Every string is
        escaped (messages quote shapes like `(N, C)` and code like `x < 0`)."""
        from ._render import headline

        e = html.escape
        parts = [f"<div><p><strong>{e(headline(self))}</strong></p>"]
        if self.source:
            parts.append(f"<p>source: <code>{e(self.source)}</code></p>")
        if self.diagnostics:
            parts.append(
                "<table><thead><tr><th>severity</th><th>code</th><th>rule</th><th>message</th>"
                "<th>fix</th></tr></thead><tbody>"
            )
            for d in self.diagnostics:
                colour = _SEVERITY_COLOURS[d.severity]
                parts.append(
                    f'<tr><td style="color: {colour}; font-weight: bold">{e(d.severity.value)}'
                    f"</td><td>{e(d.code)}</td><td><code>{e(d.rule)}</code></td>"
                    f'<td style="text-align: left">{e(d.message)}</td>'
                    f'<td style="text-align: left"><code>{e(d.fix)}</code></td></tr>'
                )
            parts.append("</tbody></table>")
        parts.extend(f"<p>note: {e(note)}</p>" for note in self.notes)
        parts.append("</div>")
        return "".join(parts)


_SEVERITY_COLOURS = {
    Severity.error: "#c62828",
    Severity.warning: "#b26a00",
    Severity.info: "#1565c0",
}

# In a DataLoader worker, the error's message carries its report on a line of its own: torch
# passes a worker's exception to the main process as its formatted traceback and rebuilds it
# with `type(message)`, so only text crosses over.
_REPORT_LINE = "cediag report as JSON, for the process that re-raises this error: "


class CrossEntropyInputError(ValueError):
    """The (input, target) pair is wrong; `.report` holds every finding.

    A ValueError, so existing `except ValueError` around a loss still works. It survives
    pickling with its Report, and a DataLoader worker's error arrives in the main process with
    its Report too. Built from a message alone, `.report` is None.
    """

    report: Report | None

    def __init__(self, report: Report | str):
        if isinstance(report, Report):
            self.report = report
            message = str(report)
            if _in_dataloader_worker():
                message += f"\n{_REPORT_LINE}{report.model_dump_json()}"
        else:
            message, self.report = _split_report(str(report))
        super().__init__(message)

    def __reduce__(self):
        state = {key: value for key, value in self.__dict__.items() if key != "report"}
        state["args"] = self.args
        return type(self), (self.report if self.report is not None else str(self),), state


def _in_dataloader_worker() -> bool:
    data = sys.modules.get("torch.utils.data")  # loaded already wherever a worker runs
    get_worker_info = getattr(data, "get_worker_info", None)
    return get_worker_info is not None and get_worker_info() is not None


def _split_report(message: str) -> tuple[str, Report | None]:
    """The message without the report line a DataLoader worker added, and that report."""
    lines = message.split("\n")
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith(_REPORT_LINE):
            try:
                report = Report.model_validate_json(lines[index][len(_REPORT_LINE) :])
            except ValueError:
                return message, None
            return "\n".join(lines[:index] + lines[index + 1 :]), report
    return message, None
