"""Random legal calls: no error ever, and warnings no more often than each rule says.

Every value rule states in its docstring ("## False alarms") the rate it is built for on
random legal inputs; this file generates 10,000 small legal calls per dtype (float32, bfloat16,
float16) and holds each rule to its word. The calls are what a training loop feeds the loss:
(1, 2), (1, 3), (2, C) and small (N, C) logits from randn at several scales, logits near 0.5
(where two values sum to 1 by chance), nn.Linear outputs with and without a graph, K-dim
logits, class indices in range, -100 padding, soft targets that sum to 1, label smoothing, and
log-probabilities under the nll view. Everything is seeded, so the counts are the same on every
run; torch is asked about a sample of the calls, to prove they are legal.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import cediag
from cediag.rules import RULES

CALLS_PER_DTYPE = 10_000
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SCALES = [0.01, 0.1, 0.5, 1.0, 3.0, 10.0, 30.0]
TINY_SHAPES = [(1, 2), (1, 3), (2, 2), (2, 3)]
RATE = re.compile(r"Rate on random legal calls: (?:(0)\b|at most 1 in ([\d,]+))")

Call = tuple[torch.Tensor, torch.Tensor, dict]


def _small_shape(g: torch.Generator) -> tuple[int, int]:
    n = int(torch.randint(1, 9, (1,), generator=g))
    c = int(torch.randint(2, 13, (1,), generator=g))
    return n, c


def _index_target(g: torch.Generator, n: int, c: int, pad: bool) -> torch.Tensor:
    t = torch.randint(0, c, (n,), generator=g)
    if pad and n > 1:
        t[torch.rand(n, generator=g) < 0.2] = -100
        t[0] = int(torch.randint(0, c, (1,), generator=g))  # never every target ignored
    return t


def _soft_target(g: torch.Generator, n: int, c: int) -> torch.Tensor:
    if bool(torch.rand(1, generator=g) < 0.5):  # a teacher's softmax
        return (torch.randn(n, c, generator=g) * 2).softmax(1)
    a, b = torch.randint(0, c, (n,), generator=g), torch.randint(0, c, (n,), generator=g)
    lam = float(torch.rand(1, generator=g))  # mixup
    return lam * F.one_hot(a, c).float() + (1 - lam) * F.one_hot(b, c).float()


def _target(g: torch.Generator, n: int, c: int, dtype: torch.dtype) -> tuple[torch.Tensor, dict]:
    kind = int(torch.randint(0, 4, (1,), generator=g))
    if kind == 0:
        return _soft_target(g, n, c).to(dtype), {}
    options = {"label_smoothing": 0.1} if kind == 1 else {}
    return _index_target(g, n, c, pad=kind == 2), options


def _randn_logits(g: torch.Generator, dtype: torch.dtype) -> Iterator[Call]:
    """randn at a random scale, shifted by a random multiple of it; shapes from (1, 2) up."""
    while True:
        n, c = TINY_SHAPES[int(torch.randint(0, 4, (1,), generator=g))]
        if bool(torch.rand(1, generator=g) < 0.5):
            n, c = _small_shape(g)
        scale = SCALES[int(torch.randint(0, len(SCALES), (1,), generator=g))]
        shift = float(torch.randn(1, generator=g)) * scale
        x = (torch.randn(n, c, generator=g) * scale + shift).to(dtype)
        t, options = _target(g, n, c, dtype)
        yield x, t, options


def _near_half_logits(g: torch.Generator, dtype: torch.dtype) -> Iterator[Call]:
    """The reported case: one or two rows of logits near 0.5, which often sum to 1."""
    while True:
        n, c = TINY_SHAPES[int(torch.randint(0, 4, (1,), generator=g))]
        spread = float(torch.rand(1, generator=g)) * 0.2
        x = (0.5 + spread * torch.randn(n, c, generator=g)).to(dtype)
        yield x, _index_target(g, n, c, pad=False), {}


def _linear_logits(g: torch.Generator, dtype: torch.dtype) -> Iterator[Call]:
    """nn.Linear outputs, some with a bias near 0.5 and tiny weights (rows sum to ~1), sliced
    from one batched forward: with a graph half of the time, without (no_grad) the rest."""
    while True:
        c = int(torch.randint(2, 13, (1,), generator=g))
        layer = nn.Linear(16, c).to(dtype)
        near_half = bool(torch.rand(1, generator=g) < 0.5)
        with torch.no_grad():  # the default init's scale, drawn from the seeded generator
            layer.weight.copy_(torch.rand(c, 16, generator=g).sub(0.5).div(2))
            layer.bias.copy_(torch.rand(c, generator=g).sub(0.5).div(2))
            if near_half:
                layer.weight.mul_(0.01)
                layer.bias.fill_(1 / c)
        features = torch.randn(64, 16, generator=g).to(dtype)
        with_graph = bool(torch.rand(1, generator=g) < 0.5)
        with torch.set_grad_enabled(with_graph):
            out = layer(features)
        start = 0
        while start < 64:
            n = int(torch.randint(1, 9, (1,), generator=g))
            x = out[start : start + n]
            start += n
            t, options = _target(g, x.shape[0], c, dtype)
            if not with_graph and near_half and x.shape[0] >= 4:
                continue  # rows near 1/C that sum to 1: without a graph, softmax outputs
            yield x, t, options


def _kdim_logits(g: torch.Generator, dtype: torch.dtype) -> Iterator[Call]:
    """(N, C, L) sequence or (N, C, H, W) segmentation logits with index targets."""
    while True:
        n, c = _small_shape(g)
        kind = int(torch.randint(0, 3, (1,), generator=g))
        if kind == 0:  # (N, C, T) sequences long enough for the padding-run rule to look
            spatial = (int(torch.randint(8, 41, (1,), generator=g)),)
        else:
            spatial = tuple(int(s) for s in torch.randint(1, 6, (kind,), generator=g))
        scale = SCALES[int(torch.randint(0, len(SCALES), (1,), generator=g))]
        x = (torch.randn(n, c, *spatial, generator=g) * scale).to(dtype)
        yield x, torch.randint(0, c, (n, *spatial), generator=g), {}


def _log_probabilities(g: torch.Generator, dtype: torch.dtype) -> Iterator[Call]:
    """The nll view of a legal call: log_softmax outputs, with and without a graph."""
    while True:
        n, c = _small_shape(g)
        scale = SCALES[int(torch.randint(0, len(SCALES), (1,), generator=g))]
        raw = torch.randn(n, c, generator=g) * scale
        with_graph = bool(torch.rand(1, generator=g) < 0.5)
        x = raw.requires_grad_(with_graph).log_softmax(1).to(dtype)
        yield x, _index_target(g, n, c, pad=True), {"loss": "nll"}


FAMILIES = {  # family -> share of the calls
    _randn_logits: 0.45,
    _near_half_logits: 0.15,
    _linear_logits: 0.2,
    _kdim_logits: 0.1,
    _log_probabilities: 0.1,
}


def legal_calls(dtype: torch.dtype, total: int = CALLS_PER_DTYPE) -> Iterator[tuple[str, Call]]:
    g = torch.Generator().manual_seed(1234 + DTYPES.index(dtype))
    for family, share in FAMILIES.items():
        calls = family(g, dtype)
        for _ in range(round(total * share)):
            yield family.__name__, next(calls)


def _run_torch(x: torch.Tensor, t: torch.Tensor, options: dict) -> None:
    options = dict(options)
    loss = F.nll_loss if options.pop("loss", None) == "nll" else F.cross_entropy
    loss(x.detach().float(), t if t.dtype == torch.long else t.float(), **options)


def _stated_rates() -> dict[str, float]:
    """Code -> the false-alarm rate its docstring states (0 for 'none')."""
    rates = {}
    for rule in RULES.values():
        text = rule.sections.get("False alarms", "")
        match = RATE.search(" ".join(text.split()))
        if match:
            rates[rule.code] = 0.0 if match.group(1) else 1 / int(match.group(2).replace(",", ""))
    return rates


@pytest.fixture(scope="module")
def findings() -> dict[torch.dtype, Counter]:
    """(code, severity, family) counts per dtype over every generated call."""
    found: dict[torch.dtype, Counter] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second thread only waits on a busy machine
    try:
        for dtype in DTYPES:
            found[dtype] = _count_findings(dtype)
    finally:
        torch.set_num_threads(threads)
    return found


def _count_findings(dtype: torch.dtype) -> Counter:
    counts: Counter = Counter()
    for i, (family, (x, t, options)) in enumerate(legal_calls(dtype)):
        if i % 97 == 0:
            _run_torch(x, t, options)  # proves the generators make legal calls
        for d in cediag.check(x, t, **options).diagnostics:
            counts[(d.code, d.severity.value, family)] += 1
    return counts


def test_every_value_rule_states_its_false_alarm_rate():
    rates = _stated_rates()
    missing = [
        f"{r.code} {r.slug}"
        for r in RULES.values()
        if r.phase == "values" and r.code[:3] in ("CE2", "CE3") and r.code not in rates
    ]
    assert not missing, f"no 'Rate on random legal calls:' in the False alarms section: {missing}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_random_legal_calls_never_make_an_error(findings, dtype):
    errors = {key: n for key, n in findings[dtype].items() if key[1] == "error"}
    assert errors == {}, f"false errors on legal {dtype} calls: {errors}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_warnings_stay_within_each_rules_stated_rate(findings, dtype):
    rates = _stated_rates()
    per_code: Counter = Counter()
    for (code, severity, _family), n in findings[dtype].items():
        if severity == "warning":
            per_code[code] += n
    over = {
        code: f"{n} in {CALLS_PER_DTYPE}, stated at most {rates.get(code, 0) * CALLS_PER_DTYPE:g}"
        for code, n in per_code.items()
        if n > rates.get(code, 0.0) * CALLS_PER_DTYPE
    }
    assert over == {}, f"{dtype}: {over}"


def test_generators_are_deterministic():
    def first_inputs():
        calls = legal_calls(torch.bfloat16)
        return [next(calls)[1][0] for _ in range(50)]

    assert all(torch.equal(a, b) for a, b in zip(first_inputs(), first_inputs(), strict=True))


# ------------------------------------------------------------------ the reported false errors


def _linear_with_output(values: list[float], rows: int = 1) -> torch.Tensor:
    """An nn.Linear whose output is `values` in every row, with its AddmmBackward0 graph."""
    layer = nn.Linear(4, len(values))
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.tensor(values))
    return layer(torch.randn(rows, 4))


def test_linear_output_that_sums_to_one_is_not_softmax():
    x = _linear_with_output([0.4, 0.6])
    assert x.grad_fn is not None and type(x.grad_fn).__name__ == "AddmmBackward0"
    report = cediag.check(x, torch.tensor([1]))
    assert report.ok and report.by_rule("softmax-applied") is None, str(report)
    criterion = cediag.wrap(nn.CrossEntropyLoss())
    torch.testing.assert_close(
        criterion(x, torch.tensor([1])), F.cross_entropy(x, torch.tensor([1]))
    )


def test_the_graph_vetoes_the_values_however_many_rows():
    x = _linear_with_output([0.1, 0.2, 0.3, 0.4], rows=32)
    report = cediag.check(x, torch.zeros(32, dtype=torch.long))
    assert report.by_rule("softmax-applied") is None, str(report)
    # The same numbers without a graph are indistinguishable from probabilities: still found.
    found = cediag.check(x.detach(), torch.zeros(32, dtype=torch.long)).by_rule("softmax-applied")
    assert found is not None and found.severity is cediag.Severity.error


@pytest.mark.parametrize("rows", [1, 2, 3])
def test_few_rows_that_sum_to_one_make_no_finding(rows):
    probs = torch.tensor([[0.4, 0.6], [0.55, 0.45], [0.3, 0.7]])[:rows].bfloat16()
    report = cediag.check(probs, torch.zeros(rows, dtype=torch.long))
    assert report.diagnostics == [], str(report)


def test_four_rows_that_sum_to_one_are_probabilities():
    probs = torch.tensor([[0.4, 0.6], [0.55, 0.45], [0.3, 0.7], [0.9, 0.1]]).bfloat16()
    found = cediag.check(probs, torch.zeros(4, dtype=torch.long)).by_rule("softmax-applied")
    assert found is not None and found.severity is cediag.Severity.error


def test_the_graph_still_proves_a_softmax_on_one_row():
    probs = torch.randn(1, 5, requires_grad=True).softmax(1)
    assert cediag.check(probs, torch.tensor([2])).by_rule("softmax-applied")


def test_two_rows_summing_to_one_down_the_batch_are_not_a_wrong_dim_softmax():
    x = torch.tensor([[0.4, 0.6], [0.6, 0.4]]).bfloat16()  # each column sums to 1 too
    assert cediag.check(x, torch.tensor([0, 1])).diagnostics == []
    near_half = torch.tensor([[0.5, 0.49, 0.51, 0.5], [0.5, 0.51, 0.49, 0.5]]).bfloat16()
    report = cediag.check(near_half, torch.tensor([0, 1]))
    assert report.ok and report.by_rule("softmax-wrong-dim") is None, str(report)


def test_few_log_probability_rows_make_no_finding_without_a_graph():
    x = torch.randn(2, 5).log_softmax(1)
    assert cediag.check(x, torch.tensor([0, 1])).diagnostics == []
    assert cediag.check(torch.randn(8, 5).log_softmax(1), torch.zeros(8, dtype=torch.long)).by_rule(
        "log-softmax-applied"
    )


def test_two_identical_rows_are_not_constant_logits():
    x = torch.tensor([[0.5, 0.25, 1.0]] * 2)
    assert cediag.check(x, torch.tensor([0, 1])).by_rule("constant-logits") is None
    assert cediag.check(
        torch.tensor([[0.5, 0.25, 1.0]] * 4), torch.zeros(4, dtype=torch.long)
    ).by_rule("constant-logits")
