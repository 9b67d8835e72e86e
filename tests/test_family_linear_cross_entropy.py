"""The linear (fused) cross-entropy family: `cediag.check(hidden, target,
loss="linear_cross_entropy", linear_weight=W, ...)`.

- the issue's acceptance: an out-of-range target id is reported against the vocabulary, a
  healthy call is silent, and no check ever builds the N x V logits (peak memory, measured in a
  subprocess);
- a differential test against `F.linear_cross_entropy` on generated calls;
- each LCE rule on a failing case and on a near-miss legal one; legal calls silent;
- the per-call sentinel, the criterion binding, and the entry points' mappings on the real
  signatures of torch, Liger and cut-cross-entropy.
"""

from __future__ import annotations

import inspect
import json
import math
import random
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import torch.nn.functional as F

import cediag
from cediag.families import family_of
from cediag.families.linear_cross_entropy import REUSED
from cediag.families.linear_cross_entropy.call import bind_linear_call, full_logits_bytes
from cediag.families.linear_cross_entropy.entry_points import (
    cut_cross_entropy,
    liger_function,
    liger_module,
    torch_function,
    torch_module,
)
from cediag.families.linear_cross_entropy.sentinel import LinearSentinelPlan
from cediag.rules import RULES

LOSS = "linear_cross_entropy"


def check(hidden, target, **options):
    return cediag.check(hidden, target, loss=LOSS, **options)


def codes(report) -> list[str]:
    return [d.code for d in report.diagnostics]


def _setup(n=16, h=8, v=50, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g).to(dtype)
    weight = (torch.randn(v, h, generator=g) / math.sqrt(h)).to(dtype)
    target = torch.randint(0, v, (n,), generator=g)
    target[0], target[-1] = 0, v - 1  # the whole range: no "numbered from 1" look
    return hidden, weight, target


# ---------------------------------------------------------------------- the acceptance


def test_out_of_range_target_names_the_vocabulary():
    hidden, W, target = _setup(n=256, v=1000)
    target[5] = 1000  # == W.shape[0]; one stray label in 256
    report = check(hidden, target, linear_weight=W)
    found = report.by_rule("target-out-of-range")
    assert found is not None and found.severity.value == "error"
    assert "[0, 1000)" in found.message  # C is the vocabulary: linear_weight.shape[0]
    assert "row 5" in found.fix
    assert not report.ok


def test_healthy_call_is_silent():
    hidden, W, target = _setup(n=64, v=1000)
    report = check(hidden, target, linear_weight=W)
    assert report.diagnostics == [] and report.values_checked and report.notes == []


def test_summary_shows_the_arguments_as_passed():
    hidden, W, target = _setup(n=4, h=8, v=50)
    call = bind_linear_call(hidden, target, {"linear_weight": W, "linear_bias": torch.zeros(50)})
    summary = call.summary()
    assert summary.loss == LOSS and summary.input.shape == [4, 8]
    assert summary.arguments["linear_weight"].shape == [50, 8]
    assert summary.arguments["linear_bias"].shape == [50]
    assert summary.ignore_index is None  # torch's default, read as -100 for class indices
    assert set(call.tensors()) == {"input", "linear_weight", "linear_bias", "target"}
    assert call.tensors()["input"] is hidden
    assert call.written_options() == {
        "ignore_index": None,
        "reduction": "mean",
        "label_smoothing": 0.0,
    }
    assert call.input.shape == (4, 50) and call.input.stride() == (0, 0)  # the stand-in: no bytes


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    import cediag

    torch.set_num_threads(1)
    N, H, V = 4096, 64, 50_000
    hidden = torch.randn(N, H)
    weight = torch.randn(V, H) / 8
    target = torch.randint(0, V, (N,))
    target[0] = 0  # labels from 0: a label equal to V is then a stray one, not 1-based labels
    bad = target.clone()
    bad[17] = V
    # Warm up on a small call of the same kind (imports, allocator pools), then measure.
    cediag.check(hidden[:8], target[:8] % 10, loss="linear_cross_entropy", linear_weight=weight[:10])

    # Anonymous memory only: file-backed pages (libtorch's code) that the machine reclaimed
    # while the process waited come back when the check runs, and are not the check's. Its
    # peak is sampled by a thread; building the N x V logits would take far longer than that
    # thread's period.
    import threading, time

    def anon_kb():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("RssAnon:"))

    peak_kb, done = [anon_kb()], threading.Event()

    def sample():
        while not done.is_set():
            peak_kb[0] = max(peak_kb[0], anon_kb())
            time.sleep(0.0005)

    before = anon_kb()
    sampler = threading.Thread(target=sample)
    sampler.start()
    healthy = cediag.check(hidden, target, loss="linear_cross_entropy", linear_weight=weight)
    faulty = cediag.check(hidden, bad, loss="linear_cross_entropy", linear_weight=weight)
    done.set()
    sampler.join()
    peak = max(peak_kb[0], anon_kb())
    json.dump({
        "extra_bytes": (peak - before) * 1024,
        "logits_bytes": N * V * 4,
        "healthy": [d.code for d in healthy.diagnostics],
        "faulty": [d.rule for d in faulty.diagnostics],
        "values_checked": healthy.values_checked and faulty.values_checked,
    }, sys.stdout)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_check_never_builds_the_logits():
    """Peak extra memory of a check, healthy and faulty, stays under 5% of the N x V logits
    torch would build (4096 x 50,000 float32: 800 MB)."""
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)
    assert got["healthy"] == [] and got["values_checked"]
    assert got["faulty"] == ["target-out-of-range"]
    assert got["extra_bytes"] <= 0.05 * got["logits_bytes"], got
    print(
        f"peak extra {got['extra_bytes'] / 2**20:.1f} MiB for {got['logits_bytes'] / 2**20:.0f} MiB of logits"
    )


def test_full_logits_bytes_is_what_torch_would_build():
    hidden, W, target = _setup(n=32, h=8, v=70)
    call = bind_linear_call(hidden, target, {"linear_weight": W})
    assert full_logits_bytes(call) == 32 * 70 * 4


# ---------------------------------------------------------------------- differential


def _torch_raises(hidden, W, target, options) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            F.linear_cross_entropy(hidden, W, target, **options)
    except Exception:
        return True
    return False


def _generated_call(rng: random.Random):
    """One call: shapes, dtypes and options drawn so that about half of them are refused."""
    n, h, c = rng.choice([1, 3, 5]), rng.choice([3, 4]), rng.choice([2, 5, 7])
    batched = rng.random() < 0.85
    hidden_dims = rng.choice([1, 2, 2, 2, 3]) if rng.random() < 0.15 else (2 if batched else 1)
    out = (rng.choice([2, 3]),) if rng.random() < 0.2 else ()
    dtype = rng.choice([torch.float32] * 4 + [torch.float64, torch.bfloat16])
    w_dtype = (
        dtype if rng.random() < 0.85 else rng.choice([torch.float32, torch.float64, torch.bfloat16])
    )
    hidden_shape = {1: (h,), 2: (n, h), 3: (2, n, h)}[hidden_dims]
    hidden = torch.randn(hidden_shape).to(dtype)
    w_shape = (c, *out, h)
    roll = rng.random()
    if roll < 0.08:
        w_shape = (c, *out, h + 1)  # in_features mismatch
    elif roll < 0.14:
        w_shape = (h, c)  # transposed
    elif roll < 0.17:
        w_shape = (c * h,)  # 1-D
    W = torch.randn(w_shape).to(w_dtype)
    options: dict = {}
    roll = rng.random()
    if roll < 0.25:
        options["linear_bias"] = torch.randn(w_shape[:-1]).to(w_dtype)
    elif roll < 0.32:
        options["linear_bias"] = torch.randn(rng.choice([(1, c), (c + 1,)])).to(w_dtype)
    elif roll < 0.35:
        options["linear_bias"] = torch.randn(w_shape[:-1]).to(torch.float64)
    batch = hidden_shape[:-1]
    logits_shape = (*batch, c, *out)
    ignore = rng.choice([None, None, None, -100, 1, 255])
    if ignore is not None:
        options["ignore_index"] = ignore
    kind = rng.random()
    if kind < 0.2:  # probabilities of the logits' shape
        target = (
            torch.randn(logits_shape).softmax(len(batch)).to(rng.choice([torch.float32, dtype]))
        )
    else:
        shape = (*batch, *out)
        if rng.random() < 0.1:
            shape = rng.choice([(n + 1,), (n, 1), (), (2, n)])
        target = torch.randint(0, c, shape)
        if target.dim() > 0 and target.numel() > 1 and rng.random() < 0.3:
            target.view(-1)[-1] = -100 if ignore is None else ignore  # padding
        if target.numel() > 0:
            target.view(-1)[0] = 0  # a counted, in-range label: never all ignored
        if rng.random() < 0.08:
            target = target.to(rng.choice([torch.int32, torch.float32]))
    roll = rng.random()
    if roll < 0.15:
        options["weight"] = torch.rand(c).to(dtype)
    elif roll < 0.2:
        options["weight"] = torch.rand(rng.choice([c + 1, c])).to(torch.float64)
    options["reduction"] = rng.choice(["mean", "mean", "mean", "sum", "none", "none", "avg"])
    options["label_smoothing"] = rng.choice([0.0, 0.0, 0.0, 0.1, 0.1, 1.0, 1.5])
    return hidden, W, target, options


def test_differential_against_torch():
    """torch raises => an error; torch accepts (healthy values) => no error; never raises."""
    rng = random.Random(1234)
    torch.manual_seed(1234)
    raised = accepted = 0
    for case in range(500):
        hidden, W, target, options = _generated_call(rng)
        torch_raises = _torch_raises(hidden, W, target, options)
        report = check(hidden, target, linear_weight=W, **options)
        assert not [n for n in report.notes if "could not run" in n or "not checked" in n], (
            case,
            report.notes,
        )
        context = (case, [str(d) for d in report.diagnostics], codes(report))
        if torch_raises:
            raised += 1
            assert not report.ok, context
        else:
            accepted += 1
            assert report.ok, context
    assert raised > 150 and accepted > 150  # both directions exercised


def test_differential_under_autocast():
    """CPU autocast casts float32/bfloat16 (not float64) before the projection."""
    rng = random.Random(7)
    for _ in range(60):
        dtypes = [torch.float32, torch.bfloat16, torch.float64]
        hd, wd, bd = rng.choice(dtypes), rng.choice(dtypes), rng.choice(dtypes + [None])
        hidden, W = torch.randn(3, 4).to(hd), torch.randn(5, 4).to(wd)
        options = {} if bd is None else {"linear_bias": torch.randn(5).to(bd)}
        if rng.random() < 0.5:
            options["weight"] = torch.rand(5).to(rng.choice(dtypes))
        target = torch.tensor([0, 4, 2])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch_raises = _torch_raises(hidden, W, target, options)
            report = check(hidden, target, linear_weight=W, **options)
        assert report.ok != torch_raises, (hd, wd, bd, codes(report))


# ---------------------------------------------------------------------- rules: fail and near miss


def _rule_cases():
    hidden, W, target = _setup(n=8, h=8, v=50)
    nan_hidden = hidden.clone()
    nan_hidden[3, 2] = float("nan")
    nan_weight = W.clone()
    nan_weight[7, 1] = float("inf")
    probs = torch.randn(8, 50).softmax(1)
    return [
        # code, severity, fix fragment, failing (hidden, target, options), near miss
        (
            "LCE101", "error", "lm_head.weight",
            (hidden, target, {"linear_weight": torch.nn.Linear(8, 50)}),
            (hidden, target, {"linear_weight": W}),
        ),
        (
            "LCE102", "error", "hidden.flatten(0, -2)",
            (hidden.reshape(2, 4, 8), target.reshape(2, 4), {"linear_weight": W}),
            (hidden, target, {"linear_weight": W}),
        ),
        (
            "LCE103", "error", "linear_weight.T",
            (hidden, target, {"linear_weight": W.T}),
            (hidden, target, {"linear_weight": torch.randn(8, 8)}),  # square: torch takes it
        ),
        (
            "LCE104", "error", "width 6",
            (hidden, target, {"linear_weight": torch.randn(50, 6)}),
            (hidden[:, :6], target, {"linear_weight": torch.randn(50, 6)}),
        ),
        (
            "LCE105", "error", "reshape(50)",
            (hidden, target, {"linear_weight": W, "linear_bias": torch.zeros(1, 50)}),
            (hidden, target, {"linear_weight": W, "linear_bias": torch.zeros(50)}),
        ),
        (
            "LCE106", "error", "hidden.to(linear_weight.dtype)",
            (hidden, target, {"linear_weight": W.bfloat16()}),
            (hidden.bfloat16(), target, {"linear_weight": W.bfloat16()}),
        ),
        (
            "LCE107", "error", "not token ids",
            (target, target, {"linear_weight": W}),
            (hidden.double(), target, {"linear_weight": W.double()}),
        ),
        (
            "LCE108", "error", "target.flatten()",
            (hidden, target.reshape(2, 4), {"linear_weight": W}),
            (hidden[:2], target[:2], {"linear_weight": W}),
        ),
        (
            "LCE109", "error", "target.to(hidden.device)",
            (hidden, target.to("meta"), {"linear_weight": W}),
            (hidden, target, {"linear_weight": W}),
        ),
        (
            "LCE110", "error", "(N, H) hidden states",
            (hidden, target[:7], {"linear_weight": W}),
            (hidden[:7], target[:7], {"linear_weight": W}),
        ),
        (
            "LCE301", "error", "set_detect_anomaly",
            (nan_hidden, target, {"linear_weight": W}),
            (hidden * 50, target, {"linear_weight": W}),
        ),
        (
            "LCE302", "error", "restore a checkpoint",
            (hidden, target, {"linear_weight": nan_weight}),
            (hidden, target, {"linear_weight": W * 100}),
        ),
        (
            "LCE303", "error", "bfloat16 or float32",
            (hidden.half() * 300, target, {"linear_weight": W.half() * 300}),
            (hidden.bfloat16() * 300, target, {"linear_weight": W.bfloat16() * 300}),
        ),
        (
            "LCE304", "warning", "final norm",
            (hidden * 3000, target, {"linear_weight": W}),
            (hidden * 100, target, {"linear_weight": W}),
        ),
        (
            "LCE305", "warning", "collapsed network",
            (hidden[:1].expand(8, 8), target, {"linear_weight": W}),
            (hidden[:1].expand(3, 8), target[:3], {"linear_weight": W}),  # 3 rows: too few
        ),
        (
            "LCE306", "info", "trainable",
            (hidden, target, {"linear_weight": torch.zeros(50, 8)}),
            (hidden, target, {"linear_weight": torch.zeros(50, 8).index_fill_(0, torch.tensor([3]), 1.0)}),
        ),
        (
            "LCE401", "error", "leave ignore_index out",
            (hidden, probs, {"linear_weight": W, "ignore_index": -100}),
            (hidden, probs, {"linear_weight": W}),
        ),
    ]  # fmt: skip


@pytest.mark.parametrize("case", _rule_cases(), ids=lambda case: case[0])
def test_rule_fires_and_near_miss_is_silent(case):
    code, severity, fix, failing, near_miss = case
    report = check(failing[0], failing[1], **failing[2])
    found = report.by_rule(code)
    assert found is not None, [str(d) for d in report.diagnostics]
    assert found.severity.value == severity
    assert fix in found.fix, found.fix
    assert RULES[code].family == LOSS
    quiet = check(near_miss[0], near_miss[1], **near_miss[2])
    assert quiet.by_rule(code) is None, [str(d) for d in quiet.diagnostics]


def test_every_lce_rule_has_a_case():
    tested = {case[0] for case in _rule_cases()}
    assert tested == {code for code in RULES if code.startswith("LCE")}


def test_each_rule_documents_itself():
    for code, r in RULES.items():
        if code.startswith("LCE"):
            assert {"What it does", "Why is this bad?", "Example", "Use instead"} <= set(r.sections)


# ---------------------------------------------------------------------- legal calls


def _legal_calls():
    hidden, W, target = _setup(n=32, h=16, v=100)
    padded = target.clone()
    padded[-5:] = -100
    vocab = torch.cat([W, torch.randn(28, 16) * 0.01])  # 100 used ids, padded to 128 = 2 * 64
    probs = torch.randn(32, 100).softmax(1)
    return {
        "ignore_index=-100 padding": (hidden, padded, {"linear_weight": W}),
        "vocabulary padded to a multiple of 64": (hidden, target, {"linear_weight": vocab}),
        "bf16 hidden and weight": (hidden.bfloat16(), target, {"linear_weight": W.bfloat16()}),
        "reduction none": (hidden, padded, {"linear_weight": W, "reduction": "none"}),
        "label smoothing": (hidden, target, {"linear_weight": W, "label_smoothing": 0.1}),
        "one-row batch": (hidden[:1], target[:1], {"linear_weight": W}),
        "unbatched": (hidden[0], target[0], {"linear_weight": W}),
        "bias and class weights": (
            hidden, target, {"linear_weight": W, "linear_bias": torch.randn(100),
                             "weight": torch.rand(100) + 0.5},
        ),
        "explicit ignore_index": (hidden, padded.masked_fill(padded == -100, -1),
                                  {"linear_weight": W, "ignore_index": -1}),
        "probability targets": (hidden, probs, {"linear_weight": W}),
        "K-dim classifier": (hidden, torch.randint(0, 100, (32, 3)),
                             {"linear_weight": torch.randn(100, 3, 16) / 4}),
        "hidden after a ReLU": (hidden.relu(), target, {"linear_weight": W}),
        "softcap on large logits": (hidden * 3000, target, {"linear_weight": W, "softcap": 30.0}),
    }  # fmt: skip


@pytest.mark.parametrize("name", list(_legal_calls()))
def test_legal_calls_are_silent(name):
    hidden, target, options = _legal_calls()[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        options_for_torch = {
            k: v for k, v in options.items() if k not in ("linear_weight", "softcap")
        }
        F.linear_cross_entropy(hidden, options["linear_weight"], target, **options_for_torch)
    report = check(hidden, target, **options)
    assert report.diagnostics == [], [str(d) for d in report.diagnostics]
    assert report.values_checked and report.notes == []


def test_reused_rules_read_no_logit_values():
    """The audit, kept honest: only target and option rules of cross-entropy are reused; none
    of the logits rules (CE3xx), and none that names the logits tensor (CE1xx)."""
    assert all(code in RULES for code in REUSED)
    assert not [code for code in REUSED if code.startswith(("CE1", "CE3"))]
    assert "CE403" not in REUSED  # LCE401 covers every ignore_index with probabilities
    assert family_of(LOSS).reuses == REUSED


def test_sparse_classifier_is_a_note_not_an_error():
    """torch's linear() takes sparse hidden states and weights; cediag reads dense ones."""
    hidden, W, target = _setup(n=8, h=8, v=50)
    F.linear_cross_entropy(hidden, W.to_sparse(), target)
    report = check(hidden, target, linear_weight=W.to_sparse())
    assert report.diagnostics == [] and not report.values_checked
    assert report.notes and "sparse" in report.notes[0]
    assert check(hidden, target.to_sparse(), linear_weight=W).by_rule("LCE101") is not None


def test_transposed_classifier_checks_targets_against_its_vocabulary():
    hidden, W, target = _setup(n=8, h=8, v=50)
    report = check(hidden, target, linear_weight=W.T)
    assert codes(report) == ["LCE103"]  # no "targets >= 8" from reading V off the wrong dim


# ---------------------------------------------------------------------- criterion


def test_criterion_supplies_classifier_and_options():
    torch.manual_seed(0)
    criterion = torch.nn.LinearCrossEntropyLoss(
        8, 50, bias=True, ignore_index=-1, label_smoothing=0.1
    )
    hidden, _, target = _setup(n=8, h=8, v=50)
    report = cediag.check(hidden, target, criterion=criterion)
    assert report.call.loss == LOSS and report.diagnostics == []
    assert report.call.arguments["linear_weight"].shape == [50, 8]
    assert report.call.ignore_index == -1 and report.call.label_smoothing == 0.1
    bad = target.clone()
    bad[2] = 50
    found = cediag.check(hidden, bad, criterion=criterion).by_rule("target-out-of-range")
    assert found is not None


def test_criterion_with_out_features():
    criterion = torch.nn.LinearCrossEntropyLoss(8, 10, out_features=(4, 3))
    hidden = torch.randn(2, 8)
    target = torch.randint(0, 10, (2, 4, 3))
    criterion(hidden, target)
    assert cediag.check(hidden, target, criterion=criterion).diagnostics == []
    found = cediag.check(hidden, target[:, :, :2], criterion=criterion).by_rule("LCE110")
    assert found is not None


# ---------------------------------------------------------------------- sentinel


def _plan(hidden, target, **options):
    call = bind_linear_call(hidden, target, options)
    return LinearSentinelPlan.of(call)


def test_sentinel_reads_hidden_and_targets():
    hidden, W, target = _setup(n=16, h=8, v=50)
    plan = _plan(hidden, target, linear_weight=W)
    assert plan.exact == ("nonfinite", "targets") and plan.hints == () and plan.on_cpu
    assert plan.read_now(hidden, target) == ()
    assert plan.read_now(hidden.relu(), target) == ()  # a floor of 0 is legal for hidden states
    broken = hidden.clone()
    broken[4, 0] = float("inf")
    assert plan.read_now(broken, target) == ("nonfinite",)
    bad = target.clone()
    bad[1] = 50
    assert plan.read_now(hidden, bad) == ("targets",)
    assert plan.read_now(hidden, torch.full_like(target, -100)) == ("targets",)  # mean of none


def test_sentinel_late_report():
    hidden, W, target = _setup(n=16, h=8, v=50)
    plan = _plan(hidden, target, linear_weight=W)
    broken = hidden.clone()
    broken[4, 0] = float("nan")
    bad = target.clone()
    bad[1] = 50
    values = plan.measure(broken, bad).tolist()
    assert set(plan.reasons(values)) == {"nonfinite", "targets"}
    report = plan.late_report(values, call_number=12)
    assert [d.code for d in report.diagnostics] == ["LCE301", "CE206"]
    assert report.call.input.shape == [16, 8] and "50" in report.diagnostics[1].message
    assert plan.late_report(plan.measure(hidden, target).tolist(), 13) is None
    assert "hidden" in plan.explain("nonfinite")


def test_sentinel_probability_targets_and_refusals():
    hidden, W, _ = _setup(n=16, h=8, v=50)
    probs = torch.randn(16, 50).softmax(1)
    plan = _plan(hidden, probs, linear_weight=W)
    assert plan.read_now(hidden, probs) == ()
    assert plan.read_now(hidden, probs * 2) == ("targets",)
    assert _plan(hidden, probs, linear_weight=torch.randn(50, 7)) is None  # torch refuses it
    assert _plan(hidden.to("meta"), probs, linear_weight=W) is None


# ---------------------------------------------------------------------- entry points


def _bound(function, *args, **kwargs) -> dict:
    bound = inspect.signature(function).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _check_mapped(mapped):
    hidden, target, options = mapped
    return check(
        hidden, target, **{k: v for k, v in options.items() if v is not None or k != "softcap"}
    )


def test_entry_points_are_declared():
    entries = family_of(LOSS).entry_points()
    assert {(e.module, e.attribute) for e in entries} >= {
        ("torch.nn.functional", "linear_cross_entropy"),
        ("torch.nn", "LinearCrossEntropyLoss.forward"),
        ("liger_kernel.transformers.fused_linear_cross_entropy", "LigerFusedLinearCrossEntropyLoss.forward"),
        ("cut_cross_entropy", "linear_cross_entropy"),
    }  # fmt: skip
    assert all(e.loss == LOSS for e in entries)


def test_torch_function_mapping():
    hidden, W, target = _setup(n=8, h=8, v=50)
    bias = torch.zeros(50)
    a = _bound(F.linear_cross_entropy, hidden, W, target, linear_bias=bias, ignore_index=5)
    hidden_, target_, options = torch_function(a)
    assert hidden_ is hidden and target_ is target
    assert options["linear_weight"] is W and options["linear_bias"] is bias
    assert options["ignore_index"] == 5 and options["reduction"] == "mean"
    assert _check_mapped((hidden_, target_, options)).diagnostics == []


def test_torch_module_mapping():
    criterion = torch.nn.LinearCrossEntropyLoss(8, 50, bias=True)
    hidden, _, target = _setup(n=8, h=8, v=50)
    mapped = torch_module(_bound(criterion.forward.__func__, criterion, hidden, target))
    assert mapped[2]["linear_weight"].shape == (50, 8) and mapped[2]["ignore_index"] is None
    assert _check_mapped(mapped).diagnostics == []


def test_liger_module_mapping():
    """Liger's kernel is Triton: it does not run on this CPU-only machine, so the mapping is
    held to the real signature and the module's real attributes, not to a run."""
    module = pytest.importorskip("liger_kernel.transformers.fused_linear_cross_entropy")
    loss = module.LigerFusedLinearCrossEntropyLoss(
        ignore_index=-1, label_smoothing=0.1, softcap=30.0
    )
    hidden, W, target = _setup(n=8, h=8, v=50)
    forward = module.LigerFusedLinearCrossEntropyLoss.forward
    mapped = liger_module(_bound(forward, loss, W, hidden, target))
    assert mapped[0] is hidden and mapped[1] is target
    assert mapped[2]["linear_weight"] is W and mapped[2]["softcap"] == 30.0
    assert mapped[2]["ignore_index"] == -1 and mapped[2]["label_smoothing"] == 0.1
    report = _check_mapped(mapped)
    assert report.diagnostics == [] and report.call.options == {"softcap": 30.0}
    bad = target.clone()
    bad[1] = 50
    found = _check_mapped(liger_module(_bound(forward, loss, W, hidden, bad))).by_rule("CE206")
    assert found is not None


def test_liger_function_mapping():
    functional = pytest.importorskip("liger_kernel.transformers.functional")
    hidden, W, target = _setup(n=8, h=8, v=50)
    ce_weight = torch.rand(50)
    a = _bound(functional.liger_fused_linear_cross_entropy, hidden, W, target, ce_weight=ce_weight)
    mapped = liger_function(a)
    assert mapped[2]["linear_weight"] is W and mapped[2]["weight"] is ce_weight
    assert _check_mapped(mapped).diagnostics == []


def test_cut_cross_entropy_mapping():
    """The mapping binds cut-cross-entropy's real signature (CI installs it; its CCE kernel is
    Triton, so only the binding is exercised here)."""
    cce = pytest.importorskip(
        "cut_cross_entropy", reason="pip install --no-deps cut-cross-entropy==25.1.1"
    ).linear_cross_entropy

    hidden, W, target = _setup(n=8, h=8, v=50)
    e, targets = hidden.reshape(2, 4, 8), target.reshape(2, 4)
    mapped = cut_cross_entropy(_bound(cce, e, W, targets))
    assert mapped[0].shape == (8, 8) and mapped[1].shape == (8,)
    assert _check_mapped(mapped).diagnostics == []
    shifted = cut_cross_entropy(_bound(cce, e, W, targets, shift=True))
    assert shifted[1].tolist() == [*target[1:4].tolist(), -100, *target[5:8].tolist(), -100]
    assert _check_mapped(shifted).diagnostics == []
    bad = targets.clone()
    bad[1, 2] = 50
    found = _check_mapped(cut_cross_entropy(_bound(cce, e, W, bad))).by_rule("CE206")
    assert found is not None


def test_cut_cross_entropy_mapping_matches_its_loss():
    """The mapped call, run through F.linear_cross_entropy, gives cut-cross-entropy's own loss
    (its torch.compile implementation runs on the CPU; the CCE kernel needs a GPU)."""
    cce_module = pytest.importorskip("cut_cross_entropy")
    torch.manual_seed(0)
    e, c = torch.randn(2, 6, 8), torch.randn(50, 8)
    targets = torch.randint(0, 50, (2, 6))
    targets[0, 3] = -100
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = cce_module.linear_cross_entropy(
                e, c, targets, shift=True, impl="torch_compile"
            )
    except Exception as error:  # no compiler on this machine
        pytest.skip(
            f"cut-cross-entropy's torch_compile path does not run here: {type(error).__name__}"
        )
    hidden, target, options = cut_cross_entropy(
        _bound(cce_module.linear_cross_entropy, e, c, targets, shift=True)
    )
    got = F.linear_cross_entropy(
        hidden, options["linear_weight"], target, ignore_index=options["ignore_index"]
    )
    torch.testing.assert_close(got, expected)
    assert _check_mapped((hidden, target, options)).diagnostics == []


def test_reused_cross_entropy_fixes_show_the_linear_call():
    hidden, weight = torch.randn(8, 16), torch.randn(50, 16)
    floats = torch.randint(0, 50, (8,)).float()
    report = cediag.check(hidden, floats, loss="linear_cross_entropy", linear_weight=weight)
    finding = report.by_rule("float-class-indices")
    assert finding is not None and finding.severity.value == "error"
    assert finding.fix == "F.linear_cross_entropy(hidden, linear_weight, target.long())"
    ones = torch.tensor([1, 2, 3, 4, 5, 5, 2, 1])  # labels 1..V: numbered from one
    small = torch.randn(5, 16)
    one_based = cediag.check(hidden, ones, loss="linear_cross_entropy", linear_weight=small)
    assert one_based.by_rule("one-based-labels").fix == (
        "F.linear_cross_entropy(hidden, linear_weight, target - 1)"
    )
    # Two stray ids among 16 tokens of a 50-token vocabulary: no evidence of 1-based labels,
    # and the fix grows the classifier the way a language model does.
    tokens = torch.randint(1, 50, (16,))
    tokens[[3, 11]] = 50
    beyond = cediag.check(
        hidden.repeat(2, 1), tokens, loss="linear_cross_entropy", linear_weight=weight
    )
    finding = beyond.by_rule("target-out-of-range")
    assert finding is not None and beyond.by_rule("one-based-labels") is None
    assert "model.resize_token_embeddings(51)" in finding.fix


def test_uint8_targets_are_judged_by_the_cross_entropy_step_alone():
    """CE205 asks whether torch's cross-entropy takes a uint8 target; a linear mistake
    elsewhere in the call must not change that answer."""
    hidden, weight = torch.randn(8, 16), torch.randn(50, 16)
    target = torch.randint(0, 50, (8,), dtype=torch.uint8)
    check = cediag.check(hidden, target, loss="linear_cross_entropy", linear_weight=weight)
    assert check.ok and check.by_rule("integer-dtype-unsupported") is None
    torch.testing.assert_close(
        F.linear_cross_entropy(hidden, weight, target),
        F.linear_cross_entropy(hidden, weight, target.long()),
    )
    wrong_bias = cediag.check(
        hidden, target, loss="linear_cross_entropy", linear_weight=weight,
        linear_bias=torch.zeros(49),
    )  # fmt: skip
    assert wrong_bias.by_rule("integer-dtype-unsupported") is None
    assert wrong_bias.by_rule("linear-bias-shape-mismatch") is not None


def _language_model_batch(rng: torch.Generator, v: int, h: int):
    """A flattened language-model batch as a training loop feeds the fused loss: Zipf-like
    token ids, rows of different lengths padded with -100 at the end (or, left-padded, at the
    start), hidden states of a trained-ish model and a classifier at the usual init scale."""
    b, t = int(torch.randint(1, 6, (), generator=rng)), int(torch.randint(4, 40, (), generator=rng))
    ranks = torch.rand(b, t, generator=rng).pow(3)  # many frequent tokens, a long tail
    labels = (ranks * (v - 1)).long() + int(torch.randint(0, 2, (), generator=rng))
    labels = labels.clamp_(max=v - 1)
    for row in range(b):
        keep = int(torch.randint(1, t + 1, (), generator=rng))
        if torch.rand((), generator=rng) < 0.5:
            labels[row, keep:] = -100
        else:
            labels[row, : t - keep] = -100
    hidden = torch.randn(b * t, h, generator=rng) * float(
        torch.empty(()).uniform_(0.3, 3.0, generator=rng)
    )
    weight = (
        torch.randn(v, h, generator=rng) * 0.02 * float(torch.randint(1, 50, (), generator=rng))
    )
    return hidden, labels.reshape(-1), weight


def test_no_false_alarms_on_random_language_model_batches():
    """Random legal fused-loss calls shaped like language-model training (the reused target
    rules meet vocabularies far larger than the batch here): no error and no warning."""
    rng = torch.Generator().manual_seed(1234)
    alarms = []
    for case in range(300):
        v = [50, 257, 1000, 5003][case % 4]
        hidden, labels, weight = _language_model_batch(rng, v, h=16)
        options = {}
        if case % 5 == 0:
            options["label_smoothing"] = 0.1
        if case % 7 == 0:
            options["reduction"] = "none"
        if case % 3 == 0:
            hidden, weight = hidden.bfloat16(), weight.bfloat16()
        if (labels == -100).all():
            continue  # all padding: a real finding (no supervised token), not a legal call
        report = cediag.check(
            hidden, labels, loss="linear_cross_entropy", linear_weight=weight, **options
        )
        found = [d.code for d in report.at_least("warning")]
        if found:
            alarms.append((case, v, tuple(hidden.shape), found))
    assert alarms == []
