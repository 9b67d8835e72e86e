"""The guard on the other families: `wrap`, `checked` and `watch` check every call of binary
cross-entropy and linear cross-entropy, a fault is reported on the call where it appears (past
the scheduled full checks, by the family's per-call check), legal loops stay silent, and a dump
of a failing call re-checks to the same finding.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import cediag
from cediag.guard._config import DEFAULT_FIRST

FAULT_AT = DEFAULT_FIRST + 23  # past the first full checks: the sentinel must see it


def _bce_call(step: int, fault: str | None = None):
    g = torch.Generator().manual_seed(step)
    logits = torch.randn(16, 6, generator=g)
    target = (torch.rand(16, 6, generator=g) < 0.3).float()
    if fault == "target":
        target[3, 2] = 255.0  # an ignore label copied from segmentation code
    elif fault == "nan":
        logits[5, 1] = float("nan")
    return logits, target


def _linear_call(step: int, fault: str | None = None, v: int = 40):
    g = torch.Generator().manual_seed(step)
    hidden = torch.randn(24, 8, generator=g)
    target = torch.randint(0, v, (24,), generator=g)
    target[::5] = -100  # padding
    if fault == "target":
        target[7] = v  # a token id the classifier has no row for
    elif fault == "nan":
        hidden[4, 3] = float("inf")
    return hidden, target


def _first_error(run_step, steps: int = FAULT_AT + 3, fault: str = "target"):
    """Run a loop whose calls turn faulty at FAULT_AT; (step, code) of the first raise."""
    for step in range(steps):
        try:
            run_step(step, fault if step >= FAULT_AT else None)
        except cediag.CrossEntropyInputError as error:
            return step, error.report.diagnostics[0].code
    return None


BCE_CODES = {"target": "BCE203", "nan": "BCE304"}
LINEAR_CODES = {"target": "CE206", "nan": "LCE301"}


@pytest.mark.parametrize("fault", ["target", "nan"])
def test_wrapped_bce_module_reports_the_fault_on_its_call(fault):
    criterion = cediag.wrap(nn.BCEWithLogitsLoss(pos_weight=torch.full((6,), 2.0)))

    def step(n, f):
        criterion(*_bce_call(n, f))

    assert _first_error(step, fault=fault) == (FAULT_AT, BCE_CODES[fault])


@pytest.mark.parametrize("fault", ["target", "nan"])
def test_watch_sees_bce_functions_and_modules(fault):
    with cediag.watch(on_error="raise"):
        found = _first_error(
            lambda n, f: F.binary_cross_entropy_with_logits(*_bce_call(n, f)), fault=fault
        )
        module = _first_error(lambda n, f: nn.BCEWithLogitsLoss()(*_bce_call(n, f)), fault=fault)
    assert found == module == (FAULT_AT, BCE_CODES[fault])


def test_bce_after_a_sigmoid_is_caught_by_watch_with_the_graph():
    logits = torch.randn(16, 6, requires_grad=True)
    target = (torch.rand(16, 6) < 0.3).float()
    with cediag.watch(on_error="raise"), pytest.raises(cediag.CrossEntropyInputError) as caught:
        nn.BCEWithLogitsLoss()(logits.sigmoid(), target)
    assert caught.value.report.diagnostics[0].code == "BCE301"


@pytest.mark.parametrize("fault", ["target", "nan"])
def test_linear_cross_entropy_under_wrap_checked_and_watch(fault):
    weight = torch.randn(40, 8)
    wrapped = cediag.wrap(F.linear_cross_entropy)

    @cediag.checked(loss="linear_cross_entropy", input_arg="hidden", target_arg="labels")
    def my_loss(hidden, labels, linear_weight):
        return F.linear_cross_entropy(hidden, linear_weight, labels)

    def via_wrap(n, f):
        hidden, target = _linear_call(n, f)
        wrapped(hidden, weight, target)

    def via_checked(n, f):
        hidden, target = _linear_call(n, f)
        my_loss(hidden, target, linear_weight=weight)

    def via_watch(n, f):
        hidden, target = _linear_call(n, f)
        F.linear_cross_entropy(hidden, weight, target)

    expected = (FAULT_AT, LINEAR_CODES[fault])
    assert _first_error(via_wrap, fault=fault) == expected
    assert _first_error(via_checked, fault=fault) == expected
    with cediag.watch(on_error="raise"):
        assert _first_error(via_watch, fault=fault) == expected


def test_linear_cross_entropy_module_under_watch():
    loss = nn.LinearCrossEntropyLoss(8, 40)

    def step(n, f):
        hidden, target = _linear_call(n, f)
        loss(hidden, target)

    with cediag.watch(on_error="raise"):
        assert _first_error(step) == (FAULT_AT, "CE206")


def test_liger_fused_module_is_wrapped_in_its_own_argument_order():
    """wrap() of Liger's fused loss reads (lin_weight, _input, target, bias) by its entry
    point: a bad label is reported before the kernel (a Triton kernel, which needs a GPU);
    before the fix, wrap() read the hidden states as logits and the classifier as weights."""
    fused = pytest.importorskip(
        "liger_kernel.transformers", reason="pip install --no-deps liger-kernel==0.8.5 triton"
    ).LigerFusedLinearCrossEntropyLoss()
    guarded = cediag.wrap(fused, on_error="raise")
    weight = torch.randn(40, 8)
    hidden, target = _linear_call(0, "target")
    with pytest.raises(cediag.CrossEntropyInputError) as caught:
        guarded(weight, hidden, target)
    report = caught.value.report
    assert report.call.loss == "linear_cross_entropy"
    assert [d.code for d in report.diagnostics] == ["CE206"]
    assert report.call.arguments["linear_weight"].shape == [40, 8]


def test_legal_loops_of_both_families_stay_silent():
    weight = torch.randn(40, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any finding would be a CediagWarning
        with cediag.watch(on_error="warn") as guard:
            for step in range(FAULT_AT + 5):
                logits, target = _bce_call(step)
                F.binary_cross_entropy_with_logits(logits, target * 0.9 + 0.05)  # smoothed
                F.binary_cross_entropy(logits.sigmoid(), target, reduction="none")
                hidden, labels = _linear_call(step)
                F.linear_cross_entropy(hidden, weight, labels, label_smoothing=0.1)
                F.linear_cross_entropy(hidden.bfloat16(), weight.bfloat16(), labels)
    assert guard is not None


def test_deferred_readings_of_the_new_families_are_read_and_reported():
    weight = torch.randn(40, 8)
    watched = cediag.watch(on_error="warn", sync="deferred", sync_every=4)
    with watched, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(FAULT_AT + 2):
            fault = "target" if step == FAULT_AT else None
            F.binary_cross_entropy_with_logits(*_bce_call(step, fault))
            hidden, labels = _linear_call(step, fault)
            try:
                F.linear_cross_entropy(hidden, weight, labels)
            except IndexError:  # the CPU kernel's own verdict on the faulty call
                assert fault == "target"
        summary = cediag.summary()
    codes = {
        w.message.diagnostic.code for w in caught if isinstance(w.message, cediag.CediagWarning)
    }
    codes |= {entry.code for entry in summary.entries}
    assert {"BCE203", "CE206"} <= codes


def test_a_dump_of_each_family_rechecks_to_the_same_finding(tmp_path):
    weight = torch.randn(40, 8)
    bce = cediag.wrap(nn.BCEWithLogitsLoss(), on_error="warn", dump_dir=tmp_path)
    linear = cediag.wrap(F.linear_cross_entropy, on_error="warn", dump_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bce(*_bce_call(0, "target"))
        hidden, labels = _linear_call(0, "target")
        with pytest.raises(IndexError):  # torch's own verdict, after the guard's warning
            linear(hidden, weight, labels)
    dumps = sorted(tmp_path.glob("*.safetensors"))
    assert len(dumps) == 2
    found = set()
    for path in dumps:
        saved = cediag.load(path)
        report = cediag.check(**saved.check_kwargs())
        found.add((report.call.loss, report.diagnostics[0].code))
    assert found == {("bce_with_logits", "BCE203"), ("linear_cross_entropy", "CE206")}


def test_a_fused_loss_of_your_own_is_named_not_misread():
    """wrap() of a fused loss function taking (hidden, weight, labels), left as cross-entropy,
    reports that one mistake (not labels out of range of H classes and a weight of the wrong
    shape); with the loss and option_args its fix names, it is checked as what it is."""

    def fused(hidden, weight, labels):
        return F.linear_cross_entropy(hidden, weight, labels)

    hidden, weight = torch.randn(32, 16), torch.randn(300, 16)
    labels = torch.randint(0, 300, (32,))
    with pytest.raises(cediag.CrossEntropyInputError) as caught:
        cediag.wrap(fused, target_arg="labels", on_error="raise")(hidden, weight, labels)
    report = caught.value.report
    assert [d.code for d in report.diagnostics] == ["CE112"]
    assert 'option_args={"linear_weight": "weight"}' in report.diagnostics[0].fix
    assert not report.values_checked

    guarded = cediag.wrap(
        fused,
        loss="linear_cross_entropy",
        target_arg="labels",
        option_args={"linear_weight": "weight"},
        on_error="raise",
    )
    torch.testing.assert_close(guarded(hidden, weight, labels), fused(hidden, weight, labels))
    labels[5] = 300
    with pytest.raises(cediag.CrossEntropyInputError) as caught:
        guarded(hidden, weight, labels)
    assert [d.code for d in caught.value.report.diagnostics] == ["CE206"]
    assert caught.value.report.call.arguments["linear_weight"].shape == [300, 16]


def test_option_args_must_name_an_option_and_a_parameter():
    def fused(hidden, weight, labels):
        return F.linear_cross_entropy(hidden, weight, labels)

    with pytest.raises(TypeError, match="not an option of this loss"):
        cediag.wrap(fused, loss="linear_cross_entropy", option_args={"classifier": "weight"})
    with pytest.raises(TypeError, match="has no argument 'head'"):
        cediag.wrap(fused, loss="linear_cross_entropy", option_args={"linear_weight": "head"})


def test_a_criterion_supplies_only_the_options_the_call_did_not_give():
    """One rule for every family (`LossFamily.options_with`): what `check(x, t, criterion=c)`
    is not given explicitly is read from the criterion, and an explicit value wins even when
    it equals torch's default."""
    x, t = torch.randn(8, 5), torch.tensor([0, 1, 2, 3, 4, 255, 255, 1])
    criterion = nn.CrossEntropyLoss(ignore_index=255)
    assert cediag.check(x, t, criterion=criterion).ok  # 255 ignored, as criterion(x, t) does
    explicit = cediag.check(x, t, criterion=criterion, ignore_index=-100)
    assert explicit.by_rule("padding-label") is not None  # -100 asked for: 255 is out of range
    logits, target = torch.randn(8, 3), (torch.rand(8, 3) < 0.5).float()
    bce = nn.BCEWithLogitsLoss(pos_weight=torch.ones(8))  # per-sample: the wrong shape
    assert cediag.check(logits, target, criterion=bce).by_rule("bce-pos-weight-shape")
    assert cediag.check(logits, target, criterion=bce, pos_weight=torch.ones(3)).ok
