"""`cediag demo`: the most common real classification-loss mistakes, each next to what torch
says.

Every case builds small synthetic tensors on the fly (seeded, so the output is the same on each
run), calls the loss (`F.cross_entropy`, `F.binary_cross_entropy_with_logits`,
`F.linear_cross_entropy`) the way the mistaken code would, and checks the same call with
`cediag.check`. Half of the mistakes torch does not notice at all.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import torch
import torch.nn.functional as F

from ._engine import check
from ._report import Report


@dataclass(frozen=True)
class Case:
    title: str
    code: str  # the line the user wrote
    story: str  # where this mistake comes from
    build: Callable[[torch.Generator], dict[str, Any]]  # cediag.check keyword arguments


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g)


def _labels(g: torch.Generator, high: int, *shape: int) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=g)


def _softmax_twice(g):
    return {"input": (2 * _randn(g, 8, 5)).softmax(dim=1), "target": _labels(g, 5, 8)}


def _class_dim_last(g):
    return {"input": _randn(g, 4, 7, 10), "target": _labels(g, 10, 4, 7)}


def _column_targets(g):
    return {"input": _randn(g, 8, 5), "target": _labels(g, 5, 8, 1)}


def _one_based(g):
    return {"input": _randn(g, 8, 5), "target": _labels(g, 5, 8) + 1}


def _void_255(g):
    mask = _labels(g, 4, 2, 8, 8)
    void = _labels(g, 10, 2, 8, 8) == 0
    return {"input": _randn(g, 2, 4, 8, 8), "target": torch.where(void, 255, mask)}


def _all_ignored(g):
    return {"input": _randn(g, 3, 5, 6), "target": torch.full((3, 6), -100)}


def _mixup(g):
    a = F.one_hot(_labels(g, 5, 8), 5).float()
    b = F.one_hot(_labels(g, 5, 8), 5).float()
    lam = 0.7
    return {"input": _randn(g, 8, 5), "target": lam * a + lam * b}  # should be lam, 1 - lam


def _teacher_logits(g):
    return {"input": _randn(g, 8, 5), "target": 3 * _randn(g, 8, 5)}


def _int32_targets(g):
    return {"input": _randn(g, 8, 5), "target": _labels(g, 5, 8).int()}


def _nan_logits(g):
    logits = _randn(g, 8, 5)
    logits[3, 2] = float("nan")
    return {"input": logits, "target": _labels(g, 5, 8)}


def _pad_token(g):
    target = _labels(g, 50, 4, 12)
    target[:, 5:] = 0  # token id 0 is the tokenizer's pad
    return {"input": _randn(g, 4, 50, 12), "target": target}


def _sigmoid_then_bce_with_logits(g):
    logits = _randn(g, 8, 5).requires_grad_()
    target = (torch.rand(8, 5, generator=g) < 0.3).float()
    return {"input": logits.sigmoid(), "target": target, "loss": "bce_with_logits"}


def _class_indices_to_bce(g):
    return {"input": _randn(g, 8, 5), "target": _labels(g, 5, 8), "loss": "bce_with_logits"}


def _token_beyond_vocabulary(g):
    target = _labels(g, 100, 16)
    target[[3, 11]] = 100  # a token added to the tokenizer, the embedding never resized
    return {
        "input": _randn(g, 16, 32),
        "target": target,
        "loss": "linear_cross_entropy",
        "linear_weight": _randn(g, 100, 32),
    }


def _hidden_not_flattened(g):
    return {
        "input": _randn(g, 4, 8, 32),
        "target": _labels(g, 100, 4, 8),
        "loss": "linear_cross_entropy",
        "linear_weight": _randn(g, 100, 32),
    }


def _correct(g):
    return {"input": _randn(g, 8, 5), "target": _labels(g, 5, 8), "label_smoothing": 0.1}


CASES: list[Case] = [
    Case(
        "Softmax applied twice",
        "F.cross_entropy(model(x).softmax(dim=1), y)",
        "the model ends in nn.Softmax, and cross_entropy applies log_softmax again",
        _softmax_twice,
    ),
    Case(
        "Classes in the last dim",
        "F.cross_entropy(logits, y)  # logits (B, T, C) from a transformer",
        "sequence models emit (batch, time, classes); torch wants the classes in dim 1",
        _class_dim_last,
    ),
    Case(
        "Targets of shape (N, 1)",
        "F.cross_entropy(logits, y)  # y read from a CSV column: (N, 1)",
        "a label column kept its second dim",
        _column_targets,
    ),
    Case(
        "Labels counted from 1",
        "F.cross_entropy(logits, y)  # y in 1..5, five classes",
        "labels from a dataset that counts classes from 1 (on a GPU: a device-side assert)",
        _one_based,
    ),
    Case(
        "Segmentation void label 255",
        "F.cross_entropy(logits, mask)  # mask uses 255 for 'void'",
        "VOC / Cityscapes masks mark unlabelled pixels 255; ignore_index=255 was forgotten",
        _void_255,
    ),
    Case(
        "Every target ignored",
        "F.cross_entropy(logits, y)  # a batch of pure padding",
        "a batch where every position is -100 padding: the mean over zero targets is NaN",
        _all_ignored,
    ),
    Case(
        "Mixup targets that do not sum to 1",
        "y = lam * one_hot(a) + lam * one_hot(b)",
        "mixup should weigh the second label by (1 - lam)",
        _mixup,
    ),
    Case(
        "Teacher logits as soft targets",
        "F.cross_entropy(student_logits, teacher_logits)",
        "distillation needs teacher probabilities: teacher_logits.softmax(dim=1)",
        _teacher_logits,
    ),
    Case(
        "int32 targets",
        "F.cross_entropy(logits, torch.from_numpy(labels))  # labels.dtype == int32",
        "numpy < 2 on Windows makes int32 arrays by default, and some data loaders keep them",
        _int32_targets,
    ),
    Case(
        "NaN in the logits",
        "F.cross_entropy(logits, y)  # after an fp16 overflow upstream",
        "one NaN logit makes the whole mean loss NaN",
        _nan_logits,
    ),
    Case(
        "Pad token trained as a class",
        "F.cross_entropy(logits, tokens)  # pad id 0, ignore_index left at -100",
        "padded sequences without ignore_index=pad_id: the model learns to predict padding",
        _pad_token,
    ),
    Case(
        "Sigmoid before BCEWithLogitsLoss",
        "nn.BCEWithLogitsLoss()(model(x).sigmoid(), y)  # multi-label",
        "the model ends in nn.Sigmoid, and the loss applies a sigmoid again: gradients vanish",
        _sigmoid_then_bce_with_logits,
    ),
    Case(
        "Class indices given to BCEWithLogitsLoss",
        "nn.BCEWithLogitsLoss()(logits, y)  # logits (N, C), y (N,) class ids",
        "multi-label BCE wants one 0/1 column per class: a multi-hot (N, C) float target",
        _class_indices_to_bce,
    ),
    Case(
        "Token id beyond the vocabulary (fused loss)",
        "F.linear_cross_entropy(hidden, lm_head.weight, labels)",
        "tokens added to the tokenizer without resize_token_embeddings (on a GPU kernel: an "
        "assert, or a NaN row)",
        _token_beyond_vocabulary,
    ),
    Case(
        "Hidden states not flattened (fused loss)",
        "F.linear_cross_entropy(hidden, lm_head.weight, labels)  # hidden (B, T, H)",
        "the fused loss takes (N, H) hidden states and (N,) labels",
        _hidden_not_flattened,
    ),
    Case(
        "A correct call (stays silent)",
        "F.cross_entropy(logits, y, label_smoothing=0.1)",
        "legal calls produce no findings",
        _correct,
    ),
]


@dataclass(frozen=True)
class Outcome:
    case: Case
    torch_raised: bool
    torch_says: str
    report: Report


def _torch_loss(kwargs: dict[str, Any]) -> torch.Tensor:
    """The torch function the case's code calls, with its arguments."""
    kwargs = dict(kwargs)
    loss = kwargs.pop("loss", "cross_entropy")
    if loss == "bce_with_logits":
        return F.binary_cross_entropy_with_logits(**kwargs)
    if loss == "linear_cross_entropy":
        x, t, w = kwargs.pop("input"), kwargs.pop("target"), kwargs.pop("linear_weight")
        return F.linear_cross_entropy(x, w, t, **kwargs)
    return F.cross_entropy(**kwargs)


def torch_verdict(kwargs: dict[str, Any], report: Report) -> tuple[bool, str]:
    """What torch does with the call: its exception, or the loss it returns."""
    try:
        with torch.no_grad():
            loss = _torch_loss(kwargs)
    except Exception as error:  # what torch raises is the point of the demo
        text = str(error).strip()
        return True, f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".strip()
    value = float(loss)
    shown = "nan" if math.isnan(value) else f"{value:.4g}"
    verdict = "silently wrong" if report.at_least("warning") else "correct"
    return False, f"no error - loss = {shown} ({verdict})"


def run_cases(cases: list[Case] | None = None) -> list[Outcome]:
    outcomes = []
    for case in CASES if cases is None else cases:
        generator = torch.Generator().manual_seed(0)
        kwargs = case.build(generator)
        report = check(**kwargs)
        raised, says = torch_verdict(kwargs, report)
        outcomes.append(Outcome(case, raised, says, report))
    return outcomes


def run_demo(output_format: str = "text", out: TextIO | None = None) -> list[Outcome]:
    """Run the gallery and print it (rich panels, or JSON with `output_format="json"`)."""
    import sys

    out = sys.stdout if out is None else out
    outcomes = run_cases()
    if output_format == "json":
        data = [
            {
                "title": o.case.title,
                "code": o.case.code,
                "torch": {"raised": o.torch_raised, "says": o.torch_says},
                "report": o.report.model_dump(mode="json"),
            }
            for o in outcomes
        ]
        out.write(json.dumps(data, indent=2) + "\n")
        return outcomes
    _render(outcomes, out)
    return outcomes


def _render(outcomes: list[Outcome], out: TextIO) -> None:
    from rich.console import Console, Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    console = Console(file=out, highlight=False)
    console.print(
        "[bold]cediag demo[/]: common classification-loss mistakes, what torch says, what cediag "
        "says\n"
    )
    silent = 0
    style = {"error": "bold red", "warning": "yellow", "info": "cyan"}
    for number, o in enumerate(outcomes, 1):
        torch_style = "red" if o.torch_raised else ("green" if o.report.ok else "bold magenta")
        if not o.torch_raised and o.report.at_least("warning"):
            silent += 1
        # a label column and a text column: wrapped text keeps its indent under the text
        verdicts = Table.grid(padding=(0, 1))
        verdicts.add_column(no_wrap=True, justify="right")
        verdicts.add_column()
        verdicts.add_row(Text("torch", style="bold"), Text(o.torch_says, style=torch_style))
        if not o.report.diagnostics:
            verdicts.add_row(Text("cediag", style="bold"), Text("no findings", style="green"))
        for d in o.report.diagnostics:
            sev = d.severity.value
            finding = Text.assemble((f"{d.code} {d.rule}", style[sev]), f" ({sev}): {d.message}")
            verdicts.add_row(Text("cediag", style="bold"), finding)
            verdicts.add_row(Text("fix:", style="green"), Text(d.fix))
        lines: list[Any] = [
            Text(o.case.code, style="bold"),
            Text(o.case.story, style="dim"),
            Text(""),
            verdicts,
        ]
        console.print(Panel(Group(*lines), title=f"{number}. {o.case.title}", title_align="left"))
    console.print(
        f"torch said nothing about {silent} of these {len(outcomes)} calls. "
        "Next: [bold]cediag check batch.pt[/] on saved tensors, "
        "[bold]cediag explain CE301[/] for one rule, "
        "[bold]cediag.watch()[/] around a training loop."
    )
