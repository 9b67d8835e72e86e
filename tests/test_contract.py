"""cediag's mirror of what torch accepts, held against torch on the options, grad modes,
devices and tensor kinds where it once disagreed; and `check` never raising."""

from __future__ import annotations

import dataclasses
import decimal
import fractions
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cediag
from cediag import _engine
from cediag._call import torch_float, torch_int, torch_reduction
from cediag.families.cross_entropy.call import bind_call

X, T = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])


def _torch_raises(fn, *args, **kwargs) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(*args, **kwargs)
    except Exception:
        return True
    return False


class _Index:
    def __index__(self) -> int:
        return 2


IGNORE_INDEX_VALUES = [
    -100, 0, 255, 2**63 - 1, -(2**63), 2**63, 2**64, -(2**63) - 1, True, False, 3.0, "1",
    None, np.int64(3), np.int32(-1), np.uint64(3), np.uint64(2**63), np.bool_(True),
    np.array(3), np.array([3]), np.float64(3.0), torch.tensor(3), torch.tensor([3]),
    torch.tensor(3, dtype=torch.uint8), torch.tensor(3.0), torch.tensor(True),
    torch.tensor([1, 2]), _Index(), decimal.Decimal(3), fractions.Fraction(3, 1),
]  # fmt: skip
LABEL_SMOOTHING_VALUES = [
    0.0, 0.1, 1, True, -0.5, float("nan"), 1.5, 2**1100, -(2**1100), 10**308, "0.1", "x",
    decimal.Decimal("0.1"), fractions.Fraction(1, 10), 0.1 + 0j, None, np.float64(0.1),
    np.float32(0.1), np.float16(0.5), np.int8(1), np.bool_(True), np.complex64(0.5),
    np.array(0.1), np.array([0.1]), torch.tensor(0.1), torch.tensor(0.1, dtype=torch.float64),
    torch.tensor(1), torch.tensor(True), torch.tensor([0.1]), torch.tensor(0.1, requires_grad=True),
    torch.tensor(0.5 + 0j),
]  # fmt: skip
REDUCTION_VALUES = [
    "mean", "sum", "none", "elementwise_mean", "avg", "MEAN", None, b"mean", 1,
    np.str_("sum"), np.array("mean"), np.array(["mean", "sum"]),
]  # fmt: skip


def _ids(values):
    return [f"{type(v).__name__}-{i}" for i, v in enumerate(values)]


@pytest.mark.parametrize("value", IGNORE_INDEX_VALUES, ids=_ids(IGNORE_INDEX_VALUES))
def test_ignore_index_read_as_torch_reads_it(value):
    for fn, loss, x in (
        (F.cross_entropy, "cross_entropy", X),
        (F.nll_loss, "nll", X.log_softmax(1)),
    ):
        raises = _torch_raises(fn, x, T, ignore_index=value)
        assert (torch_int(value) is None) == raises, value
        report = cediag.check(x, T, ignore_index=value, loss=loss)
        assert report.ok != raises, report
        assert not report.notes, report.notes
    if not raises:  # the same loss as with the int cediag reads
        expected = F.cross_entropy(X, T, ignore_index=torch_int(value))
        assert torch.equal(F.cross_entropy(X, T, ignore_index=value), expected)


@pytest.mark.parametrize("value", LABEL_SMOOTHING_VALUES, ids=_ids(LABEL_SMOOTHING_VALUES))
def test_label_smoothing_read_as_torch_reads_it(value):
    raises = _torch_raises(F.cross_entropy, X, T, label_smoothing=value)
    parsed = torch_float(value)
    report = cediag.check(X, T, label_smoothing=value)
    assert not report.notes, report.notes
    if raises:
        assert not report.ok, report
        assert parsed is None or parsed > 1
    else:
        assert parsed is not None
        bad_range = report.by_rule("label-smoothing-out-of-range")
        assert report.ok or bad_range, report  # legal, though a negative value is ignored
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = F.cross_entropy(X, T, label_smoothing=parsed)
            assert torch.equal(F.cross_entropy(X, T, label_smoothing=value), expected)


@pytest.mark.parametrize("value", REDUCTION_VALUES, ids=_ids(REDUCTION_VALUES))
def test_reduction_read_as_torch_reads_it(value):
    raises = _torch_raises(F.cross_entropy, X, T, reduction=value)
    assert (torch_reduction(value) is None) == raises
    report = cediag.check(X, T, reduction=value)
    assert report.ok != raises, report
    assert str(report)  # the value is printed without raising


def test_elementwise_mean_is_the_mean():
    with pytest.warns(UserWarning, match="deprecated"):
        assert torch.isnan(F.cross_entropy(X, torch.full((4,), -100), reduction="elementwise_mean"))
    report = cediag.check(X, torch.full((4,), -100), reduction="elementwise_mean")
    assert report.by_rule("all-targets-ignored")
    assert report.call.reduction == "mean"


def test_option_messages_never_print_a_tensor():
    report = cediag.check(X, T, ignore_index=torch.arange(1000.0), label_smoothing=torch.ones(9))
    assert not report.ok
    text = str(report) + report.model_dump_json()
    assert "999" not in text and "1., 1." not in text
    assert "(1000,) float32 tensor" in text


# ---------------------------------------------------------------- weight that requires grad


@pytest.mark.parametrize(
    "x, t, options",
    [
        (torch.randn(4, 3), T, {}),
        (torch.randn(4, 3), T, {"label_smoothing": 0.1}),
        (torch.randn(2, 3, 5), torch.zeros(2, 5, dtype=torch.long), {}),
        (torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long), {"reduction": "none"}),
        (torch.randn(3), torch.tensor(1), {}),
        (torch.randn(4, 3), torch.randn(4, 3).softmax(1), {}),  # probabilities: torch takes it
    ],
)
@pytest.mark.parametrize("grad", [True, False])
def test_weight_requiring_grad_agrees_with_torch(x, t, options, grad):
    weight = torch.rand(3, requires_grad=True)
    with torch.set_grad_enabled(grad):
        raises = _torch_raises(F.cross_entropy, x, t, weight=weight, **options)
        report = cediag.check(x, t, weight=weight, **options)
    assert report.ok != raises, report
    if raises:
        assert "weight.detach()" in report.errors[0].fix
        assert raises == (grad and not t.dtype.is_floating_point)


def test_weight_requiring_grad_with_nll_loss():
    weight = torch.rand(3, requires_grad=True)
    assert _torch_raises(F.nll_loss, X, T, weight=weight)
    assert not cediag.check(X, T, weight=weight, loss="nll").ok


# ---------------------------------------------------------------- meta tensors


def _meta_cases():
    yield torch.randn(3), torch.tensor([1]), {}
    yield torch.randn(3), torch.tensor(1), {}
    yield torch.randn(2, 4), torch.tensor([0, 1], dtype=torch.uint8), {"label_smoothing": 0.5}
    yield (
        torch.randn(2, 4),
        torch.tensor([0, 1], dtype=torch.uint8),
        {"label_smoothing": 0.5, "reduction": "sum", "weight": torch.ones(4)},
    )
    yield torch.randn(0, 4), torch.zeros(0, dtype=torch.uint8), {"label_smoothing": 0.5}
    yield torch.randn(2, 3, 4), torch.zeros(2, 4, dtype=torch.long), {"weight": torch.ones(1, 3)}
    yield (
        torch.randn(2, 3, 4, 5),
        torch.zeros(2, 4, 5, dtype=torch.long),
        {"weight": torch.ones(3, 1)},
    )
    yield (
        torch.randn(0, 0, 1, 0),
        torch.zeros(0, 1, 0, dtype=torch.long),
        {"weight": torch.ones(1, 0)},
    )
    yield torch.randn(2, 3, 4), torch.zeros(2, 4, dtype=torch.long), {"weight": torch.ones(3)}


@pytest.mark.parametrize("x, t, options", list(_meta_cases()))
def test_meta_calls_agree_with_the_meta_kernels(x, t, options):
    def meta(v):
        return v.to("meta") if isinstance(v, torch.Tensor) else v

    x, t = meta(x), meta(t)
    options = {k: meta(v) for k, v in options.items()}
    raises = _torch_raises(F.cross_entropy, x, t, **options)
    report = cediag.check(x, t, **options)
    if raises:
        assert not report.ok, report
    else:  # an empty batch is legal, and certainly wrong
        assert {d.rule for d in report.errors} <= {"empty-batch"}, report
    assert not report.values_checked


# ---------------------------------------------------------------- autocast


def test_half_logits_under_bfloat16_autocast_are_value_checked():
    probs = torch.randn(8, 5).half().softmax(1)
    target = torch.tensor([0, 1, 2, 3, 4, 0, 1, 9])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        report = cediag.check(probs, target)
    assert report.values_checked and not report.notes, report.notes
    assert report.by_rule("softmax-applied").severity == "error"
    assert report.by_rule("target-out-of-range").severity == "error"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("cast", [torch.float16, torch.bfloat16])
def test_every_float_dtype_under_autocast_is_value_checked(dtype, cast):
    probs = torch.randn(6, 4).to(dtype).softmax(1)
    soft = torch.rand(6, 4).to(dtype)
    with torch.autocast("cpu", dtype=cast):
        index_report = cediag.check(probs, torch.tensor([0, 1, 2, 3, 0, 7]))
        soft_report = cediag.check(probs.log(), soft)
    for report in (index_report, soft_report):
        assert report.values_checked and not report.notes, report.notes
    assert index_report.by_rule("target-out-of-range")
    assert soft_report.by_rule("probability-target-not-normalized") or soft_report.diagnostics


def test_arguments_swapped_keeps_every_field_of_the_call():
    # Under autocast a float32 weight is fine with bf16 logits, so the swapped call is legal.
    labels, logits, weight = torch.tensor([0, 1, 2, 0]), torch.randn(4, 3).bfloat16(), torch.ones(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        F.cross_entropy(logits, labels, weight=weight)
        report = cediag.check(labels, logits, weight=weight)
        call = bind_call(labels, logits, weight=weight, label_smoothing=0.2)
    assert report.by_rule("arguments-swapped"), report
    swapped = dataclasses.replace(call, input=call.target, target=call.input)
    assert swapped.autocast and swapped.label_smoothing == 0.2


# ---------------------------------------------------------------- check never raises


def _nested(layout):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.nested.nested_tensor([torch.randn(2, 3), torch.randn(3, 3)], layout=layout)


@pytest.mark.parametrize("layout", [torch.strided, torch.jagged])
@pytest.mark.parametrize("role", ["input", "target"])
def test_nested_tensors_are_reported_not_raised(layout, role):
    nested = _nested(layout)
    x, t = (nested, torch.tensor([0, 1])) if role == "input" else (torch.randn(2, 3), nested)
    assert _torch_raises(F.cross_entropy, x, t)
    report = cediag.check(x, t)
    assert report.by_rule("not-a-tensor").severity == "error"
    assert f"{role} is a nested tensor" in report.by_rule("not-a-tensor").message
    assert not report.values_checked


class _Raising(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError("refused by the subclass")


def test_tensor_subclass_that_raises_is_checked_as_its_data():
    probs = torch.randn(4, 3).softmax(1).as_subclass(_Raising)
    target = torch.tensor([0, 1, 2, 0])
    report = cediag.check(probs, target)
    assert report.by_rule("softmax-applied")
    assert any("_Raising" in note for note in report.notes)


def test_parameter_is_a_plain_tensor_to_the_check():
    report = cediag.check(torch.nn.Parameter(torch.randn(4, 3)), T)
    assert report.ok and report.values_checked and not report.notes


def test_a_failure_inside_the_checker_becomes_a_note(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the checker broke")

    monkeypatch.setattr(_engine, "check_structure", broken)
    report = cediag.check(X, T)
    assert not report.values_checked
    assert report.notes == ["not checked: RuntimeError: the checker broke"]
    assert report.call.input.shape == [4, 3]


def test_huge_label_smoothing_is_reported_not_raised():
    assert _torch_raises(F.cross_entropy, X, T, label_smoothing=2**1100)
    report = cediag.check(X, T, label_smoothing=2**1100)
    assert report.by_rule("invalid-option").severity == "error"
    assert "too large for a float" in report.by_rule("invalid-option").message
    assert len(report.by_rule("invalid-option").message) < 200


@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("w_dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("n", [0, 2])
def test_weight_dtype_under_autocast_agrees_with_torch(x_dtype, w_dtype, n):
    # autocast casts float16 / bfloat16 to float32 and leaves float64: a float64 side still
    # has to match the other.
    x, t, w = torch.randn(n, 3).to(x_dtype), torch.zeros(n, dtype=torch.long), torch.ones(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        raises = _torch_raises(F.cross_entropy, x, t, weight=w.to(w_dtype), reduction="sum")
        report = cediag.check(x, t, weight=w.to(w_dtype), reduction="sum")
    assert {d.rule for d in report.errors} - {"empty-batch"} == (
        {"weight-dtype-mismatch"} if raises else set()
    ), report
