"""The binary cross-entropy family (cediag/families/bce): every rule on a failing case and a
near-miss legal one, legal calls that stay silent, the contract held against torch on generated
calls, a false-alarm count on random legal calls, and the sentinel plan's methods.

Everything goes through `cediag.check` (the guard is tested elsewhere); the sentinel plan is
called directly.
"""

from __future__ import annotations

import contextlib
import functools
import random
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cediag
from cediag.families import family_of
from cediag.families.bce import FAMILY
from cediag.families.bce.call import bind_call
from cediag.families.bce.contract import broadcasts_into, torch_rejection
from cediag.rules import RULES

LOGITS, PROBS = "bce_with_logits", "bce"
FLOATS = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


@pytest.fixture
def one_thread():
    """Thousands of tiny calls: one intra-op thread, so that they do not wait on a shared
    machine's busy cores (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _check(x, t, loss=LOGITS, **options):
    return cediag.check(x, t, loss=loss, **options)


def _errors(report) -> list[str]:
    return [d.rule for d in report.errors]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _multi_hot(n: int, c: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 2, (n, c), generator=_gen(seed)).float()


# ---------------------------------------------------------------------- the declaration


def test_family_is_registered_with_its_losses_options_and_criteria():
    assert family_of(LOGITS) is FAMILY and family_of(PROBS) is FAMILY
    assert FAMILY.option_names == ("weight", "pos_weight", "reduction")
    codes = [code for code, r in RULES.items() if r.prefix == "BCE"]
    assert codes == sorted(codes) and len(codes) >= 15
    report = cediag.check(torch.randn(4, 3), torch.rand(4, 3), criterion=nn.BCELoss())
    assert report.call.loss == PROBS
    entries = {(e.attribute, e.loss) for e in FAMILY.entry_points()}
    assert entries == {
        ("binary_cross_entropy_with_logits", LOGITS),
        ("binary_cross_entropy", PROBS),
    }
    for entry in FAMILY.entry_points():
        assert callable(getattr(F, entry.attribute))


@pytest.mark.parametrize("code", [c for c, r in RULES.items() if r.prefix == "BCE"])
def test_every_rule_documents_itself_in_four_sections(code):
    sections = RULES[code].sections
    for title in ("What it does", "Why is this bad?", "Example", "Use instead"):
        assert sections.get(title), f"{code} lacks '{title}'"
    if RULES[code].phase == "values" and RULES[code].severity.value != "info":
        assert "False alarms" in sections, f"{code}: a value heuristic states its false alarms"


def test_slugs_are_unique_across_families():
    slugs = [r.slug for r in RULES.values()]
    assert len(slugs) == len(set(slugs))


# ---------------------------------------------------------------------- the example


def test_acceptance_sigmoid_before_bce_with_logits_is_an_error_with_a_fix():
    x = torch.randn(8, 5, requires_grad=True)
    p = x.sigmoid()
    report = cediag.check(p, torch.randint(0, 2, (8, 5)).float(), loss="bce_with_logits")
    found = report.by_rule("bce-sigmoid-applied")
    assert found is not None and found.code == "BCE301" and found.severity.value == "error"
    assert "F.binary_cross_entropy_with_logits(logits, target)" in found.fix
    assert "SigmoidBackward0" in found.message and "(8, 5)" in found.message


# ---------------------------------------------------------------------- every rule


def _linear_output(bias: float) -> torch.Tensor:
    """nn.Linear's output (AddmmBackward0) whose every value is `bias`: raw scores in [0, 1]."""
    layer = nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.fill_(bias)
    return layer(torch.randn(8, 4))


# (case id, failing call, near-miss legal call, code, severity, fix fragment). A call is a
# function returning (input, target, options), options holding `loss` and the loss's options.
RULE_CASES = [
    (
        "not-a-tensor",
        lambda: ([0.1, -0.3], torch.rand(2), {}),
        lambda: (torch.tensor([0.1, -0.3]), torch.rand(2), {}),
        "BCE101", "error", "torch.as_tensor",
    ),
    (
        "shape-permuted",
        lambda: (torch.randn(8, 5, 4, 6), torch.rand(8, 4, 6, 5), {}),
        lambda: (torch.randn(8, 5, 4, 6), torch.rand(8, 5, 4, 6), {}),
        "BCE102", "error", "target.permute(0, 3, 1, 2)",
    ),
    (
        "shape-other-batch",
        lambda: (torch.randn(8, 5), torch.rand(7, 5), {}),
        lambda: (torch.randn(7, 5), torch.rand(7, 5), {}),
        "BCE102", "error", "the same batch",
    ),
    (
        "singleton-input",
        lambda: (torch.randn(8, 1), torch.rand(8), {}),
        lambda: (torch.randn(8, 1), torch.rand(8, 1), {}),
        "BCE103", "error", "logits.squeeze(1)",
    ),
    (
        "singleton-target",
        lambda: (torch.randn(8), torch.rand(8, 1), {}),
        lambda: (torch.randn(8), torch.rand(8), {}),
        "BCE103", "error", "target.squeeze(1)",
    ),
    (
        "class-index-target",
        lambda: (torch.randn(8, 5), torch.randint(0, 5, (8,)), {}),
        lambda: (torch.randn(8, 5), F.one_hot(torch.randint(0, 5, (8,)), 5).float(), {}),
        "BCE104", "error", "F.one_hot(target.long(), num_classes=5)",
    ),
    (
        "device-mismatch",
        lambda: (torch.randn(4, 3), torch.rand(4, 3, device="meta"), {}),
        # a 0-d CPU pos_weight joins tensors of any device
        lambda: (
            torch.randn(4, 3, device="meta"),
            torch.rand(4, 3, device="meta"),
            {"pos_weight": torch.tensor(2.0)},
        ),
        "BCE105", "error", "target.to(logits.device)",
    ),
    (
        "input-not-float",
        lambda: (torch.randint(0, 2, (8, 5)), torch.rand(8, 5), {}),
        lambda: (torch.randint(0, 2, (8, 5)).float() - 0.5, torch.rand(8, 5), {}),
        "BCE106", "error", "F.binary_cross_entropy_with_logits(logits, target)",
    ),
    (
        # no rule names a float8 target: the safety net carries torch's reason
        "torch-rejects",
        lambda: (torch.randn(8, 5), torch.rand(8, 5).to(torch.float8_e4m3fn), {}),
        lambda: (torch.randn(8, 5), torch.rand(8, 5).to(torch.bfloat16), {}),
        "BCE107", "error", "broadcast to it",
    ),
    (
        "target-not-float",
        lambda: (torch.randn(8, 5), torch.randint(0, 2, (8, 5)), {}),
        lambda: (torch.randn(8, 5), torch.randint(0, 2, (8, 5)).half(), {}),
        "BCE201", "error", "target.float()",
    ),
    (
        "target-bool-bce",
        lambda: (torch.rand(8, 5), torch.rand(8, 5) > 0.5, {"loss": PROBS}),
        lambda: (torch.rand(8, 5), (torch.rand(8, 5) > 0.5).float(), {"loss": PROBS}),
        "BCE201", "error", "target.to(probs.dtype)",
    ),
    (
        "target-complex",
        lambda: (torch.randn(8, 5), torch.rand(8, 5).to(torch.complex64), {}),
        lambda: (torch.randn(8, 5), torch.rand(8, 5).double(), {}),
        "BCE201", "error", "target.float()",
    ),
    (
        "target-dtype-mismatch",
        lambda: (torch.rand(8, 5).half(), torch.rand(8, 5), {"loss": PROBS}),
        lambda: (torch.rand(8, 5).half(), torch.rand(8, 5).half(), {"loss": PROBS}),
        "BCE202", "error", "target.to(probs.dtype)",
    ),
    (
        "target-255-mask",
        lambda: (torch.randn(2, 1, 4, 4), torch.randint(0, 2, (2, 1, 4, 4)).float() * 255, {}),
        lambda: (torch.randn(2, 1, 4, 4), torch.randint(0, 2, (2, 1, 4, 4)).float(), {}),
        "BCE203", "error", "target / 255",
    ),
    (
        "target-255-ignored",
        lambda: (torch.randn(2, 1, 4, 4), torch.eye(4).expand(2, 1, 4, 4).masked_fill(torch.eye(4).flip(0) > 0, 255), {}),
        lambda: (torch.randn(2, 1, 4, 4), torch.eye(4).expand(2, 1, 4, 4), {}),
        "BCE203", "error", "valid = target != 255",
    ),
    (
        "target-minus-one",
        lambda: (torch.randn(16), torch.randint(0, 2, (16,)).float() * 2 - 1, {}),
        lambda: (torch.randn(16), torch.where(torch.arange(16) % 2 == 0, 0.05, 0.95), {}),
        "BCE203", "error", "(target + 1) / 2",
    ),
    (
        "target-nan",
        lambda: (torch.randn(4, 3), torch.tensor([[0.0, 1, float("nan")]] * 4), {}),
        lambda: (torch.randn(4, 3), torch.tensor([[0.0, 1, 0.5]] * 4), {}),
        "BCE203", "error", "nan_to_num",
    ),
    (
        "target-out-of-range-bce",
        lambda: (torch.rand(6), torch.tensor([0.0, 1, 2, 0, 1, 1]), {"loss": PROBS}),
        lambda: (torch.rand(6), torch.tensor([0.0, 1, 1, 0, 1, 1]), {"loss": PROBS}),
        "BCE203", "error", "(target > 0).float()",
    ),
    (
        "one-hot-targets",
        lambda: (torch.randn(16, 4), F.one_hot(torch.arange(16) % 4, 4).float(), {}),
        lambda: (
            torch.randn(16, 4),
            (F.one_hot(torch.arange(16) % 4, 4) + F.one_hot((torch.arange(16) + 1) % 4, 4))
            .float(),
            {},
        ),
        "BCE204", "info", "F.cross_entropy(logits, target.argmax(1))",
    ),
    (
        "sigmoid-by-values",
        lambda: (torch.randn(8, 5, generator=_gen()).sigmoid(), _multi_hot(8, 5), {}),
        # the same values straight out of nn.Linear: the graph vetoes them
        lambda: (_linear_output(0.5), _multi_hot(8, 3), {}),
        "BCE301", "error", "remove the torch.sigmoid",
    ),
    (
        "sigmoid-few-rows",
        lambda: (torch.randn(4, 5, generator=_gen()).sigmoid(), _multi_hot(4, 5), {}),
        # three rows are weak evidence: no error from the values
        lambda: (torch.randn(3, 5, generator=_gen()).sigmoid(), _multi_hot(3, 5), {}),
        "BCE301", "error", "F.binary_cross_entropy_with_logits(logits, target)",
    ),
    (
        "softmax-by-graph",
        lambda: (torch.randn(2, 5, requires_grad=True).softmax(1), _multi_hot(2, 5), {}),
        lambda: (torch.randn(2, 5, requires_grad=True) * 1, _multi_hot(2, 5), {}),
        "BCE302", "error", "drop the softmax",
    ),
    (
        "softmax-by-values",
        lambda: (torch.randn(8, 5, generator=_gen()).softmax(1), _multi_hot(8, 5), {}),
        lambda: (torch.randn(8, 5, generator=_gen()), _multi_hot(8, 5), {}),
        "BCE302", "error", "drop the softmax",
    ),
    (
        "logits-to-bce",
        lambda: (torch.randn(8, 5, generator=_gen()), _multi_hot(8, 5), {"loss": PROBS}),
        lambda: (torch.randn(8, 5, generator=_gen()).sigmoid(), _multi_hot(8, 5), {"loss": PROBS}),
        "BCE303", "error", "F.binary_cross_entropy_with_logits(logits, target)",
    ),
    (
        "linear-to-bce",
        lambda: (_linear_output(0.5), _multi_hot(8, 3), {"loss": PROBS}),
        lambda: (_linear_output(0.5).sigmoid(), _multi_hot(8, 3), {"loss": PROBS}),
        "BCE303", "error", "nn.BCEWithLogitsLoss()",
    ),
    (
        "non-finite-input",
        lambda: (torch.tensor([0.3, float("nan"), -1.0]), torch.tensor([0.0, 1, 1]), {}),
        lambda: (torch.tensor([0.3, 2.0, -1.0]), torch.tensor([0.0, 1, 1]), {}),
        "BCE304", "error", "set_detect_anomaly",
    ),
    (
        "invalid-reduction",
        lambda: (torch.randn(4, 3), torch.rand(4, 3), {"reduction": "avg"}),
        lambda: (torch.randn(4, 3), torch.rand(4, 3), {"reduction": "elementwise_mean"}),
        "BCE401", "error", 'reduction="mean"',
    ),
    (
        "pos-weight-per-sample",
        lambda: (torch.randn(8, 5), _multi_hot(8, 5), {"pos_weight": torch.full((8,), 3.0)}),
        lambda: (torch.randn(8, 5), _multi_hot(8, 5), {"pos_weight": torch.full((5,), 3.0)}),
        "BCE402", "error", "pos_weight=torch.full((5,), ratio)",
    ),
    (
        "pos-weight-segmentation",
        lambda: (torch.randn(2, 3, 4, 4), torch.rand(2, 3, 4, 4), {"pos_weight": torch.ones(3)}),
        lambda: (
            torch.randn(2, 3, 4, 4),
            torch.rand(2, 3, 4, 4),
            {"pos_weight": torch.ones(3, 1, 1)},
        ),
        "BCE402", "error", "pos_weight.view(3, 1, 1)",
    ),
    (
        "pos-weight-too-big",
        lambda: (torch.randn(8, 5), torch.rand(8, 5), {"pos_weight": torch.ones(2, 8, 5)}),
        lambda: (torch.randn(8, 5), torch.rand(8, 5), {"pos_weight": torch.ones(1, 5)}),
        "BCE402", "error", "pos_weight of shape (5,)",
    ),
    (
        "weight-per-sample",
        lambda: (torch.randn(8, 5), torch.rand(8, 5), {"weight": torch.rand(8)}),
        lambda: (torch.randn(8, 5), torch.rand(8, 5), {"weight": torch.rand(8, 1)}),
        "BCE403", "error", "weight.view(8, 1)",
    ),
    (
        "weight-per-sample-bce",
        lambda: (torch.rand(8, 5), torch.rand(8, 5), {"weight": torch.rand(8), "loss": PROBS}),
        lambda: (torch.rand(8, 5), torch.rand(8, 5), {"weight": torch.rand(5), "loss": PROBS}),
        "BCE403", "error", "weight.view(8, 1)",
    ),
    (
        "pos-weight-with-bce",
        lambda: (torch.rand(8, 5), torch.rand(8, 5), {"pos_weight": torch.ones(5), "loss": PROBS}),
        lambda: (torch.randn(8, 5), torch.rand(8, 5), {"pos_weight": torch.ones(5)}),
        "BCE404", "error", "binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)",
    ),
    (
        "weight-not-tensor",
        lambda: (torch.randn(8, 3), torch.rand(8, 3), {"pos_weight": [1.0, 3.0, 10.0]}),
        lambda: (torch.randn(8, 3), torch.rand(8, 3), {"pos_weight": torch.tensor([1.0, 3, 10])}),
        "BCE405", "error", "torch.as_tensor(pos_weight",
    ),
    (
        "pos-weight-bool",
        lambda: (torch.randn(8, 5), torch.rand(8, 5), {"pos_weight": torch.ones(5) > 0}),
        lambda: (torch.randn(8, 5), torch.rand(8, 5), {"weight": torch.ones(5) > 0}),
        "BCE407", "error", "pos_weight=pos_weight.float()",
    ),
    (
        "weight-requires-grad",
        lambda: (torch.randn(8, 5), torch.rand(8, 5), {"pos_weight": nn.Parameter(torch.ones(5))}),
        lambda: (torch.randn(8, 5), torch.rand(8, 5), {"pos_weight": torch.ones(5)}),
        "BCE406", "error", "pos_weight=pos_weight.detach()",
    ),
]  # fmt: skip


def _run(make):
    torch.manual_seed(0)
    x, t, options = make()
    options = dict(options)
    loss = options.pop("loss", LOGITS)
    return _check(x, t, loss, **options)


@pytest.mark.parametrize(
    ("failing", "legal", "code", "severity", "fix"),
    [case[1:] for case in RULE_CASES],
    ids=[case[0] for case in RULE_CASES],
)
def test_rule_fires_on_the_mistake_and_not_on_the_near_miss(failing, legal, code, severity, fix):
    report = _run(failing)
    found = report.by_rule(code)
    assert found is not None, f"{code} did not fire: {report}"
    assert found.severity.value == severity
    assert fix in found.fix, found.fix
    assert report.call.loss in (LOGITS, PROBS)
    near = _run(legal)
    assert near.by_rule(code) is None, str(near)
    assert near.ok, str(near)


def test_every_rule_has_a_case():
    covered = {case[3] for case in RULE_CASES}
    assert covered == {code for code, r in RULES.items() if r.prefix == "BCE"}


def test_weight_requires_grad_is_legal_under_no_grad():
    with torch.no_grad():
        report = _check(torch.randn(8, 5), torch.rand(8, 5), pos_weight=nn.Parameter(torch.ones(5)))
    assert report.ok, str(report)


def test_messages_quote_shapes_not_contents():
    x = torch.full((8, 5), 0.123456789)
    report = _check(x, torch.rand(7, 5) * 9.87654321)
    text = str(report)
    assert "(8, 5)" in text and "(7, 5)" in text
    assert "0.1234" not in text and "9.876" not in text


# ---------------------------------------------------------------------- legal calls stay silent


def _linear_logits(n: int, c: int, grad: bool = True) -> torch.Tensor:
    layer = nn.Linear(16, c)
    with contextlib.nullcontext() if grad else torch.no_grad():
        return layer(torch.randn(n, 16))


LEGAL = {
    "multi-label with pos_weight (C,)": lambda: (
        _linear_logits(32, 6),
        _multi_hot(32, 6),
        {"pos_weight": torch.tensor([1.0, 2, 3, 4, 5, 6])},
    ),
    "label-smoothed targets": lambda: (
        torch.randn(32, 6),
        _multi_hot(32, 6) * 0.9 + 0.05,
        {},
    ),
    "soft targets": lambda: (torch.randn(32, 6), torch.rand(32, 6), {}),
    "bf16 logits": lambda: (torch.randn(32, 6).bfloat16(), _multi_hot(32, 6), {}),
    "bf16 logits, bf16 targets": lambda: (
        torch.randn(32, 6).bfloat16(),
        _multi_hot(32, 6).bfloat16(),
        {},
    ),
    "reduction none": lambda: (torch.randn(32, 6), _multi_hot(32, 6), {"reduction": "none"}),
    "reduction sum with weight": lambda: (
        torch.randn(32, 6),
        _multi_hot(32, 6),
        {"reduction": "sum", "weight": torch.rand(32, 1)},
    ),
    "one-row batch": lambda: (torch.randn(1, 6), _multi_hot(1, 6), {}),
    "one-row batch of probabilities": lambda: (torch.rand(1, 6), _multi_hot(1, 6), {}),
    "binary (N,)": lambda: (torch.randn(64), torch.randint(0, 2, (64,)).float(), {}),
    "binary (N,) with pos_weight ()": lambda: (
        torch.randn(64),
        torch.randint(0, 2, (64,)).float(),
        {"pos_weight": torch.tensor(3.0)},
    ),
    "binary (N, 1) from nn.Linear(d, 1)": lambda: (
        _linear_logits(16, 1),
        torch.randint(0, 2, (16, 1)).float(),
        {},
    ),
    "segmentation with pos_weight (C, 1, 1)": lambda: (
        torch.randn(2, 3, 8, 8),
        torch.randint(0, 2, (2, 3, 8, 8)).float(),
        {"pos_weight": torch.ones(3, 1, 1)},
    ),
    "0-d": lambda: (torch.tensor(0.3), torch.tensor(1.0), {}),
    "empty batch": lambda: (torch.randn(0, 6), torch.rand(0, 6), {}),
    "float16 target of float32 logits": lambda: (torch.randn(8, 6), torch.rand(8, 6).half(), {}),
    "bce: sigmoid probabilities": lambda: (
        _linear_logits(32, 6).sigmoid(),
        _multi_hot(32, 6),
        {"loss": PROBS},
    ),
    "bce: weight (C,)": lambda: (
        torch.rand(32, 6),
        torch.rand(32, 6),
        {"loss": PROBS, "weight": torch.rand(6)},
    ),
    "bce: float64": lambda: (
        torch.rand(8, 6, dtype=torch.float64),
        torch.rand(8, 6, dtype=torch.float64),
        {"loss": PROBS},
    ),
    "bce: probabilities with exact 0 and 1": lambda: (
        torch.tensor([[0.0, 1.0, 0.5]] * 4),
        torch.tensor([[0.0, 1.0, 1.0]] * 4),
        {"loss": PROBS},
    ),
}


@pytest.mark.parametrize("make", list(LEGAL.values()), ids=list(LEGAL))
def test_legal_calls_stay_silent(make):
    report = _run(make)
    assert report.ok and not report.warnings, str(report)
    assert not [n for n in report.notes if "could not run" in n], report.notes
    x, t, options = make()
    options = dict(options)
    loss = options.pop("loss", LOGITS)
    function = F.binary_cross_entropy_with_logits if loss == LOGITS else F.binary_cross_entropy
    function(x, t, **options)  # torch agrees


def test_criterion_supplies_pos_weight_weight_and_reduction():
    criterion = nn.BCEWithLogitsLoss(pos_weight=torch.ones(6), reduction="sum")
    report = cediag.check(torch.randn(32, 6), _multi_hot(32, 6), criterion=criterion)
    assert report.ok and report.call.loss == LOGITS
    assert report.call.reduction == "sum" and report.call.arguments["pos_weight"].shape == [6]
    assert report.call.ignore_index is None and report.call.label_smoothing is None
    wrong = nn.BCEWithLogitsLoss(pos_weight=torch.ones(32))
    bad = cediag.check(torch.randn(32, 6), _multi_hot(32, 6), criterion=wrong)
    assert _errors(bad) == ["bce-pos-weight-shape"]
    probs = cediag.check(torch.randn(8, 6), torch.rand(8, 6), criterion=nn.BCELoss())
    assert "bce-logits-to-bce" in _errors(probs)


def test_legacy_reduction_spelling_is_read_as_mean():
    call = bind_call(torch.randn(3), torch.rand(3), reduction="elementwise_mean")
    assert call.reduction == "mean" and torch_rejection(call) is None


def test_call_tensors_and_options_for_a_dump():
    call = bind_call(
        torch.randn(4, 3), torch.rand(4, 3), weight=torch.ones(3), pos_weight=torch.ones(3)
    )
    assert set(call.tensors()) == {"input", "target", "weight", "pos_weight"}
    assert call.written_options() == {"reduction": "mean"}


# ---------------------------------------------------------------------- held against torch


def _shape_like(rng: random.Random, shape: list[int]) -> list[int]:
    """A weight shape: usually a suffix of `shape` with some dims set to 1, else anything."""
    roll = rng.random()
    if roll < 0.6:
        k = rng.randint(0, len(shape))
        suffix = shape[len(shape) - k :]
        return [1 if rng.random() < 0.3 else s for s in suffix]
    if roll < 0.8 and shape:
        return [rng.choice([1, *shape]) for _ in range(rng.randint(1, len(shape) + 1))]
    return [rng.randint(0, 5) for _ in range(rng.randint(0, 3))]


def _tensor(rng: random.Random, shape, dtype, kind: str) -> torch.Tensor:
    if kind == "logits":
        t = torch.randn(shape) * rng.choice([0.5, 1.0, 3.0])
    elif kind == "probs":
        t = torch.rand(shape)
    elif kind == "binary":
        t = torch.randint(0, 2, shape).float()
    elif kind == "soft":
        t = torch.rand(shape)
    else:  # "wild": out of range, maybe NaN
        t = torch.randn(shape) * 3
        if t.numel() and rng.random() < 0.3:
            t.view(-1)[0] = float("nan")
    if dtype.is_floating_point:
        return t.to(dtype)
    if dtype == torch.bool:
        return t > 0.5
    return t.round().clamp(0, 1).to(dtype)


def _generate(rng: random.Random):
    loss = rng.choice([LOGITS, PROBS])
    ndim = rng.choice([0, 1, 1, 2, 2, 2, 3, 4])
    shape = [rng.randint(0, 4) if rng.random() < 0.1 else rng.randint(1, 5) for _ in range(ndim)]
    x_dtype = rng.choice(FLOATS * 5 + [torch.int64, torch.bool])
    healthy = rng.random() < 0.7
    x_kind = "wild" if not healthy else ("logits" if loss == LOGITS else "probs")
    x = _tensor(rng, shape, x_dtype, x_kind)
    t_shape = list(shape)
    if rng.random() < 0.2:
        op = rng.choice(["add", "drop", "resize"])
        if op == "add":
            t_shape.insert(rng.randint(0, len(t_shape)), rng.choice([1, 1, 2, 3]))
        elif op == "drop" and t_shape:
            t_shape.pop(rng.randrange(len(t_shape)))
        elif t_shape:
            t_shape[rng.randrange(len(t_shape))] = rng.randint(0, 5)
    t_dtype = rng.choice(FLOATS * 5 + [torch.int64, torch.int32, torch.uint8, torch.bool])
    t_kind = rng.choice(["binary", "soft"]) if healthy or rng.random() < 0.5 else "wild"
    t = _tensor(rng, t_shape, t_dtype, t_kind)
    options = {}
    for role in ("weight", "pos_weight"):
        if rng.random() < (0.45 if role == "weight" or loss == LOGITS else 0.05):
            w_dtype = rng.choice([torch.float32] * 6 + [torch.float64, torch.float16, torch.int64, torch.bool])  # fmt: skip
            w = _tensor(rng, _shape_like(rng, shape), w_dtype, "soft")
            if w.is_floating_point() and rng.random() < 0.08:
                w.requires_grad_()
            options[role] = w
    roll = rng.random()
    if roll < 0.1:
        options["reduction"] = rng.choice(["avg", None, "Mean", "elementwise_mean"])
    elif roll < 0.5:
        options["reduction"] = rng.choice(["mean", "sum", "none"])
    if x.is_floating_point() and rng.random() < 0.2:
        x.requires_grad_()
    autocast = rng.random() < 0.1
    return loss, x, t, options, autocast, healthy and t_kind != "wild"


def _torch_raises(loss, x, t, options) -> bool:
    function = F.binary_cross_entropy_with_logits if loss == LOGITS else F.binary_cross_entropy
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            function(x, t, **options)
    except Exception:
        return True
    return False


def test_differential_against_torch(one_thread):
    rng = random.Random(20261126)
    torch.manual_seed(20261126)
    raised = accepted = 0
    for case in range(400):
        loss, x, t, options, autocast, healthy = _generate(rng)
        with torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
            raises = _torch_raises(loss, x, t, options)
            report = cediag.check(x, t, loss=loss, **options)  # never raises
        what = (
            f"case {case}: {loss} x {tuple(x.shape)} {x.dtype} t {tuple(t.shape)} {t.dtype} "
            + ", ".join(
                f"{k}={tuple(v.shape) if isinstance(v, torch.Tensor) else v!r}"
                + (f" {v.dtype}" if isinstance(v, torch.Tensor) else "")
                for k, v in options.items()
            )
            + (" autocast" if autocast else "")
        )
        assert not [n for n in report.notes if n.startswith(("not checked", "rule"))], what
        if raises:
            raised += 1
            assert not report.ok, f"torch raises, cediag is silent: {what}"
        elif healthy:
            accepted += 1
            assert report.ok, f"torch accepts, cediag reports an error: {what}\n{report}"
    assert raised > 100 and accepted > 60  # both sides of the property were exercised


def test_contract_agrees_with_torch_on_metadata():
    """The contract alone (no value rules): on healthy values, torch raises exactly when the
    contract says it would."""
    rng = random.Random(7)
    torch.manual_seed(7)
    checked = 0
    for _ in range(300):
        loss, x, t, options, autocast, healthy = _generate(rng)
        if not healthy:
            continue
        with torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
            raises = _torch_raises(loss, x, t, options)
            call = bind_call(x, t, loss=loss, **options)
            reason = torch_rejection(call)
        values_fault = loss == PROBS and x.is_floating_point() and not t.dtype.is_floating_point
        if values_fault:  # kernel refuses the dtype first anyway
            assert raises and reason is not None
            continue
        assert raises == (reason is not None), (loss, x.shape, x.dtype, t.shape, t.dtype, options, reason)  # fmt: skip
        checked += 1
    assert checked > 150


@pytest.mark.parametrize(
    ("shape", "into", "ok"),
    [((), (4, 3), True), ((3,), (4, 3), True), ((4, 1), (4, 3), True), ((4,), (4, 3), False),
     ((1, 4, 3), (4, 3), False), ((0,), (0,), True), ((1,), (0,), True), ((0,), (1,), False)],
)  # fmt: skip
def test_broadcasts_into(shape, into, ok):
    assert broadcasts_into(shape, into) is ok


# ---------------------------------------------------------------------- false alarms


@functools.cache
def _layers(out_features: int) -> list[nn.Linear]:
    """A few default-initialised layers per output size (building one per call is the test's
    main cost)."""
    return [nn.Linear(8, out_features) for _ in range(8)]


def _random_legal_call(rng: random.Random):
    n = rng.choice([1, 2, 3, 4, 8, 16, 32, 64])
    c = rng.choice([1, 2, 3, 5, 10, 20])
    layout = rng.choice(["2d", "2d", "2d", "1d", "4d"])
    shape = {"2d": (n, c), "1d": (n,), "4d": (max(1, n // 8), c, 3, 4)}[layout]
    dtype = rng.choice([torch.float32, torch.float32, torch.bfloat16, torch.float16, torch.float64])
    source = rng.choice(["randn", "linear", "linear-no-grad"])
    if source == "randn":
        x = torch.randn(shape) * rng.choice([0.01, 0.1, 0.5, 1, 3, 10, 30])
    else:
        features = torch.randn(*shape[:-1], 8) if layout != "1d" else torch.randn(n, 8)
        layer = rng.choice(_layers(shape[-1] if layout != "1d" else 1))
        with torch.no_grad() if source == "linear-no-grad" else contextlib.nullcontext():
            # nn.Linear's own op (AddmmBackward0) without its module call, which is slow on
            # ever-changing shapes here
            flat = features.reshape(-1, 8)
            x = torch.addmm(layer.bias, flat, layer.weight.t()).reshape(*features.shape[:-1], -1)
        if layout == "1d":
            x = x.squeeze(-1)
    x = x.to(dtype)
    kind = rng.choice(["multi-hot", "soft", "smoothed"])
    p = rng.uniform(0.05, 0.95)
    hot = (torch.rand(shape) < p).float()
    t = {"multi-hot": hot, "soft": torch.rand(shape), "smoothed": hot * 0.9 + 0.05}[kind]
    if rng.random() < 0.2:
        t = t.to(dtype)
    options: dict = {"reduction": rng.choice(["mean", "sum", "none"])}
    if rng.random() < 0.3 and layout != "1d":
        pw = torch.rand(c) * 5
        options["pos_weight"] = pw.view(c, 1, 1) if layout == "4d" else pw
    if rng.random() < 0.2:
        options["weight"] = torch.rand(shape[0], *[1] * (len(shape) - 1))
    loss = LOGITS
    if rng.random() < 0.25:
        loss = PROBS
        x = torch.sigmoid(x)
        t = t.to(x.dtype)
        options.pop("pos_weight", None)
    return loss, x, t, options


def test_no_false_alarms_on_random_legal_calls(one_thread):
    rng = random.Random(4242)
    torch.manual_seed(4242)
    errors = []
    for _ in range(3000):
        loss, x, t, options = _random_legal_call(rng)
        report = cediag.check(x, t, loss=loss, **options)
        if not report.ok or report.warnings:
            errors.append(f"{loss} {tuple(x.shape)} {x.dtype}: {report}")
    assert errors == []


# ---------------------------------------------------------------------- the sentinel plan


def _plan(x, t, loss=LOGITS, **options):
    return FAMILY.sentinel(bind_call(x, t, loss=loss, **options))


def test_sentinel_healthy_call_reads_nothing_to_follow():
    plan = _plan(torch.randn(32, 5), _multi_hot(32, 5))
    assert plan is not None and plan.on_cpu
    assert plan.read_now(torch.randn(32, 5), _multi_hot(32, 5)) == ()
    assert plan.exact == ("nonfinite", "targets") and set(plan.hints) == {"range", "graph"}


def test_sentinel_sees_sigmoid_by_range_and_graph():
    x = torch.randn(32, 5, requires_grad=True)
    plan = _plan(x, _multi_hot(32, 5))
    found = plan.read_now(x.sigmoid(), _multi_hot(32, 5))
    assert found == ("range", "graph")
    assert "[0, 1]" in plan.explain("range")


def test_sentinel_exact_faults_and_their_late_report():
    plan = _plan(torch.randn(8, 5), _multi_hot(8, 5))
    x = torch.randn(8, 5)
    x[2, 3] = float("nan")
    t = _multi_hot(8, 5) * 255
    found = plan.read_now(x, t)
    assert found == ("nonfinite", "targets")
    reading = plan.measure(x, t)
    assert reading.dtype == torch.float64 and reading.dim() == 1
    values = reading.tolist()
    assert plan.reasons(values) == found
    report = plan.late_report(values, 17)
    assert [d.code for d in report.diagnostics] == ["BCE304", "BCE203"]
    assert "call 17" in report.diagnostics[0].message and not report.ok
    assert plan.late_report(plan.measure(torch.randn(8, 5), _multi_hot(8, 5)).tolist(), 3) is None
    assert plan.explain("targets") and plan.explain("nonfinite")


def test_sentinel_for_bce_treats_logits_as_exact():
    plan = _plan(torch.rand(8, 5), _multi_hot(8, 5), loss=PROBS)
    assert "range" in plan.exact and plan.hints == ("graph",)
    assert plan.read_now(torch.rand(8, 5), _multi_hot(8, 5)) == ()
    logits = torch.randn(8, 5)
    assert plan.read_now(logits, _multi_hot(8, 5)) == ("range",)
    report = plan.late_report(plan.measure(logits, _multi_hot(8, 5)).tolist(), 2)
    assert [d.rule for d in report.diagnostics] == ["bce-logits-to-bce"]
    linear = nn.Linear(4, 5)(torch.rand(8, 4))
    assert "graph" in plan.read_now(linear, _multi_hot(8, 5))


def test_sentinel_has_no_plan_for_what_it_cannot_read():
    assert _plan(torch.randn(8, 5), torch.randint(0, 2, (8, 5))) is None
    assert _plan(torch.randn(0, 5), torch.rand(0, 5)) is None
    assert _plan(torch.randn(8, 5, device="meta"), torch.rand(8, 5, device="meta")) is None


def test_one_hot_info_reads_every_row_once_the_sample_says_so():
    """The statistics sample 64 rows; the one-hot info is given only when every row is one-hot
    (a multi-label row the sample skipped keeps it silent)."""
    from cediag._reading import sample_rows

    labels = torch.randint(0, 6, (200,))
    one_hot = F.one_hot(labels, 6).float()
    logits = torch.randn(200, 6)
    report = cediag.check(logits, one_hot, loss="bce_with_logits")
    assert [d.code for d in report.diagnostics] == ["BCE204"]
    sampled = {int(i) for i in sample_rows(torch.arange(200).unsqueeze(1), 1, 64).reshape(-1)}
    skipped = next(row for row in range(200) if row not in sampled)
    one_hot[skipped] = 1.0  # a multi-label row the sample does not see
    assert cediag.check(logits, one_hot, loss="bce_with_logits").diagnostics == []
