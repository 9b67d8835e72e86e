"""Differential tests against torch itself, on generated calls.

Two properties hold for every generated (input, target, options):
1. whenever F.cross_entropy (or F.nll_loss) raises, cediag reports at least one error;
2. cediag never raises, and when torch accepts the call, no structure-phase rule calls it an
   error unless the rule is one that flags a legal-but-certainly-wrong call (empty batch,
   ignored label smoothing).

Besides plain tensors and options, the generator makes the calls that once got through:
options of odd types and sizes (ints beyond int64, NumPy scalars, 0-d tensors, str, Decimal),
zero-stride and non-contiguous tensors, mixed dtypes under autocast, meta tensors (held to
torch's meta kernels), nested tensors, Tensor subclasses and weights that require grad.
"""

from __future__ import annotations

import contextlib
import decimal
import fractions
import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cediag
from cediag.rules import RULES

FLOATS = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
INTS = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool]
# Structure rules that may call a call torch accepts an error: it runs, but is certainly wrong.
LEGAL_BUT_WRONG = {"empty-batch", "label-smoothing-out-of-range", "single-class-output"}
STRUCTURE_SLUGS = {r.slug for r in RULES.values() if r.phase in ("arguments", "structure", "final")}
# CI replays a fixed sequence of examples (no flaky red); locally each run explores new ones.
DERANDOMIZE = bool(os.environ.get("CI"))


def _make(shape, dtype, low, high, draw):
    if dtype.is_floating_point:
        t = torch.empty(shape, dtype=torch.float32).uniform_(low, high)
        if draw(st.booleans()):
            t = t.round()
        return t.to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape).bool()
    lo = max(low, torch.iinfo(dtype).min)
    hi = min(high, torch.iinfo(dtype).max)
    return torch.randint(int(lo), int(hi) + 1, shape).to(dtype)


@st.composite
def calls(draw):
    torch.manual_seed(draw(st.integers(0, 2**16)))
    ndim = draw(st.integers(0, 5))
    shape = [draw(st.integers(0, 4)) for _ in range(ndim)]
    in_dtype = draw(st.sampled_from(FLOATS * 3 + INTS[:2] + [torch.bool]))
    x = _make(shape, in_dtype, -3, 3, draw)
    n_classes = shape[1] if ndim >= 2 else (shape[0] if ndim == 1 else 1)

    kind = draw(st.sampled_from(["index", "index", "probs", "mutated", "random"]))
    if kind == "probs":
        t_shape = list(shape)
    elif kind == "index":
        t_shape = [] if ndim <= 1 else [shape[0], *shape[2:]]
        if ndim == 1 and draw(st.booleans()):
            t_shape = [1]
    elif kind == "mutated":
        t_shape = [] if ndim <= 1 else [shape[0], *shape[2:]]
        op = draw(st.sampled_from(["add", "drop", "resize", "unsqueeze"]))
        if op == "add":
            t_shape.insert(draw(st.integers(0, len(t_shape))), draw(st.integers(0, 3)))
        elif op == "drop" and t_shape:
            t_shape.pop(draw(st.integers(0, len(t_shape) - 1)))
        elif op == "resize" and t_shape:
            t_shape[draw(st.integers(0, len(t_shape) - 1))] = draw(st.integers(0, 4))
        elif op == "unsqueeze":
            t_shape.insert(1 if t_shape else 0, 1)
    else:
        t_shape = [draw(st.integers(0, 4)) for _ in range(draw(st.integers(0, 4)))]
    t_dtype = draw(st.sampled_from([torch.int64] * 4 + INTS[1:] + FLOATS))
    if t_dtype.is_floating_point and kind == "probs":
        t = _make(t_shape, t_dtype, 0, 1, draw)
    else:
        t = _make(t_shape, t_dtype, -2, max(n_classes, 1) + 1, draw)
        if t.numel() and t_dtype == torch.int64 and draw(st.booleans()):
            t.view(-1)[0] = draw(st.sampled_from([-100, 255, -1]))

    weight = None
    if draw(st.integers(0, 3)) == 0:
        w_len = draw(st.sampled_from([n_classes, n_classes, n_classes + 1]))
        w_dtype = draw(
            st.sampled_from(
                [in_dtype if in_dtype.is_floating_point else torch.float32, torch.float64]
            )
        )
        weight = torch.rand(max(w_len, 0)).to(w_dtype)
        if draw(st.integers(0, 5)) == 0:
            weight = weight.reshape(1, -1)
    options = dict(
        weight=weight,
        ignore_index=draw(st.sampled_from([-100, -100, -1, 0, 1, 255])),
        reduction=draw(st.sampled_from(["mean", "sum", "none"])),
        label_smoothing=draw(st.sampled_from([0.0, 0.0, 0.1, 1.0, 1.5, -0.1])),
    )
    if draw(st.integers(0, 4)) == 0:  # one option of an odd type or size
        name = draw(st.sampled_from(sorted(ODD_OPTIONS)))
        options[name] = draw(st.sampled_from(ODD_OPTIONS[name]))
    if weight is not None and draw(st.integers(0, 4)) == 0:
        options["weight"] = weight.requires_grad_()
    layout = draw(st.sampled_from(["plain"] * 6 + ["expanded", "strided", "subclass"]))
    x, t = _relayout(x, layout), _relayout(t, draw(st.sampled_from(["plain", layout])))
    return x, t, options


# Option values torch's parser takes or refuses in ways a plain int / float / str does not show.
ODD_OPTIONS = {
    "ignore_index": [
        2**63, 2**64, -(2**63) - 1, 2**63 - 1, True, 3.0, "1", None, np.int64(1),
        np.uint64(2**63), np.bool_(False), torch.tensor(1), torch.tensor([255]),
        torch.tensor(1.0), torch.tensor([0, 1]),
    ],
    "label_smoothing": [
        2**1100, 10**308, "0.1", decimal.Decimal("0.1"), fractions.Fraction(1, 10), 0.5 + 0j,
        None, True, np.float32(0.2), np.float64(1.5), np.array(0.1), torch.tensor(0.1),
        torch.tensor([0.1]), torch.tensor(0.1, requires_grad=True),
    ],
    "reduction": ["elementwise_mean", "avg", "MEAN", None, np.str_("sum"), b"mean"],
}  # fmt: skip


class _Passthrough(torch.Tensor):
    """A subclass that leaves every op to torch (as most subclasses in the wild do)."""


def _relayout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as a zero-stride, a non-contiguous or a subclass tensor."""
    if layout == "expanded" and t.dim() >= 1 and t.shape[0] > 0:
        return t[:1].expand_as(t)  # every row a copy of the first
    if layout == "strided" and t.dim() >= 2:
        return t.transpose(0, -1).contiguous().transpose(0, -1)
    if layout == "subclass":
        return t.as_subclass(_Passthrough)
    return t


def _torch_raises(fn, x, t, options) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(x, t, **options)
    except Exception:
        return True
    return False


def _assert_agrees_with_torch(x, t, options, loss="cross_entropy", meta=False):
    fn = F.cross_entropy if loss == "cross_entropy" else F.nll_loss
    torch_options = dict(options)
    if loss == "nll":
        torch_options.pop("label_smoothing", None)
    raises = _torch_raises(fn, x, t, torch_options)
    report = cediag.check(x, t, loss=loss, **options)
    if meta:  # nothing to read on meta tensors, and that is all the notes may say
        assert not report.values_checked
        assert all(n.startswith("values not checked") for n in report.notes), report.notes
    elif report.by_rule("fused-linear-call"):  # hidden states: their values mean nothing here
        assert [n for n in report.notes if "fused-linear-call" not in n] == [], report.notes
    else:
        assert report.notes == [], report.notes
    described = f"\ninput {tuple(x.shape)} {x.dtype}, target {tuple(t.shape)} {t.dtype}, {options}\n{report}"
    if raises:
        assert not report.ok, "torch raises but cediag found no error" + described
    elif meta:
        pass  # the meta kernels skip checks the CPU kernels make: an error may still be right
    elif x.numel() and t.numel() and not report.by_rule("all-targets-ignored"):
        # On empty tensors, or when every target is ignored, torch skips some checks.
        wrong = {d.rule for d in report.errors} & (STRUCTURE_SLUGS - LEGAL_BUT_WRONG)
        assert not wrong, f"torch accepts but cediag calls the structure wrong: {wrong}" + described


@settings(
    max_examples=2000,
    deadline=None,
    derandomize=DERANDOMIZE,
    suppress_health_check=list(HealthCheck),
)
@given(calls())
def test_cross_entropy_errors_match_torch(call):
    x, t, options = call
    _assert_agrees_with_torch(x, t, options)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=DERANDOMIZE,
    suppress_health_check=list(HealthCheck),
)
@given(calls(), st.sampled_from([torch.bfloat16, torch.float16]))
def test_cross_entropy_errors_match_torch_under_autocast(call, cast):
    x, t, options = call
    with torch.autocast("cpu", dtype=cast):
        _assert_agrees_with_torch(x, t, options)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=DERANDOMIZE,
    suppress_health_check=list(HealthCheck),
)
@given(calls())
def test_meta_calls_torch_rejects_are_errors(call):
    x, t, options = call

    def meta(v):
        return v.to("meta") if isinstance(v, torch.Tensor) else v

    options = {name: meta(v) if name == "weight" else v for name, v in options.items()}
    with torch.no_grad() if options["weight"] is not None else contextlib.nullcontext():
        _assert_agrees_with_torch(meta(x), meta(t), options, meta=True)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=DERANDOMIZE,
    suppress_health_check=list(HealthCheck),
)
@given(calls())
def test_nll_loss_errors_match_torch(call):
    x, t, options = call
    options["label_smoothing"] = 0.0
    _assert_agrees_with_torch(x, t, options, loss="nll")


@pytest.mark.parametrize(
    "x, t, options",
    [
        (torch.randn(3), torch.tensor([1]), {}),
        (torch.randn(3), torch.tensor(1, dtype=torch.uint8), {}),
        (torch.randn(2, 0, 4), torch.zeros(2, 4, dtype=torch.long), {}),
        (torch.randn(0, 3, 4), torch.zeros(0, 5, dtype=torch.long), {}),
        (torch.randn(2, 3), torch.rand(2, 3), {"ignore_index": 0}),
        (torch.randn(2, 3), torch.rand(2, 3), {"weight": torch.ones(3, dtype=torch.float64)}),
        (torch.randn(2, 3).half(), torch.tensor([0, 1]), {"weight": torch.ones(3)}),
        (torch.randn(2, 3, 4, 5), torch.zeros(2, 1, 4, 5, dtype=torch.long), {}),
        (torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), {"ignore_index": 1.5}),
        (torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), {"reduction": "avg"}),
    ],
)
def test_known_corner_cases_match_torch(x, t, options):
    _assert_agrees_with_torch(x, t, options)


def test_weight_dtype_is_fine_under_autocast():
    logits = torch.randn(4, 3).bfloat16()
    target = torch.tensor([0, 1, 2, 0])
    weight = torch.ones(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        F.cross_entropy(logits, target, weight=weight)  # torch accepts: autocast casts to fp32
        assert cediag.check(logits, target, weight=weight).ok
    assert cediag.check(logits, target, weight=weight).by_rule("weight-dtype-mismatch")


@pytest.mark.parametrize(
    "bad",
    [
        [0, 1],
        None,
        3,
        torch.randn(4, 3).to_sparse(),
    ],
)
def test_check_never_raises_on_odd_arguments(bad):
    report = cediag.check(torch.randn(4, 3), bad)
    assert not report.ok
    assert report.by_rule("not-a-tensor")


def _odd_tensors():
    base = torch.randn(4, 6, 5)
    yield "non-contiguous", base.transpose(1, 2), torch.randint(0, 5, (4, 6))
    yield (
        "expanded (zero strides)",
        torch.randn(1, 6, 1).expand(4, 6, 5),
        torch.randint(0, 6, (4, 5)),
    )
    yield (
        "channels_last",
        torch.randn(2, 3, 4, 4).to(memory_format=torch.channels_last),
        torch.randint(0, 3, (2, 4, 4)),
    )
    yield "requires grad", torch.randn(4, 6, requires_grad=True), torch.randint(0, 6, (4,))
    yield "complex", torch.randn(4, 6, dtype=torch.cfloat), torch.randint(0, 6, (4,))
    yield "float8", torch.randn(4, 6).to(torch.float8_e4m3fn), torch.randint(0, 6, (4,))
    yield "uint16 target", torch.randn(4, 6), torch.randint(0, 6, (4,)).to(torch.uint16)
    yield "complex target", torch.randn(4, 6), torch.randn(4, 6, dtype=torch.cfloat)
    yield "huge values", torch.full((4, 6), 3e38), torch.tensor([0, 1, 2, 3])
    yield "int64 extremes in target", torch.randn(4, 6), torch.tensor([2**63 - 1, -(2**63), 0, 1])
    yield "0-d both", torch.tensor(1.0), torch.tensor(0)
    yield "meta", torch.empty(4, 6, device="meta"), torch.empty(4, dtype=torch.long, device="meta")
    yield "inference tensor", *_inference_pair()


def _inference_pair():
    with torch.inference_mode():
        return torch.randn(4, 6), torch.randint(0, 6, (4,))


@pytest.mark.parametrize(
    "name, x, t", list(_odd_tensors()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_check_never_raises_on_odd_tensors(name, x, t):
    report = cediag.check(x, t)
    if _torch_raises(F.cross_entropy, x, t, {}):
        assert not report.ok, f"{name}: torch raises\n{report}"
    assert str(report)
