"""The report: what a check found, as data (pydantic) that renders to text or JSON.

Everything here is plain data. Rules produce `Diagnostic`s; the engine sorts them into a
`Report`; renderers and the CLI read the report and never look at tensors again.
"""

from __future__ import annotations

import enum
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
    """The call that was checked, without its data."""

    loss: str = "cross_entropy"
    input: ArgumentSummary
    target: ArgumentSummary
    weight: ArgumentSummary | None = None
    ignore_index: int | str = -100
    reduction: str = "mean"
    label_smoothing: float | str = 0.0


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


class CrossEntropyInputError(ValueError):
    """The (input, target) pair is wrong; `.report` holds every finding.

    A ValueError, so existing `except ValueError` around a loss still works.
    """

    def __init__(self, report: Report):
        self.report = report
        super().__init__(str(report))
