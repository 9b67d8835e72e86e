"""Tensors at the scales and layouts of real training: more than 2**24 rows, expanded
(zero-stride) tensors, transposed and channels-last logits.

Memory is measured in a fresh subprocess: its peak resident size (VmHWM) is reset just before
the check and compared with the resident size then, so neither the test session nor the
building of the inputs is counted. No test asserts a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import cediag
from cediag._reading import sample_rows, storage_view, whole_aminmax
from cediag.families.cross_entropy.statistics import SAMPLE_ROWS

ROWS = 2**24 + 4  # a float32 row index cannot name the last rows of this many


def test_sampled_rows_include_the_last_of_more_than_2_24_rows():
    # Each row holds its own index, so the sample says which rows were picked.
    ids = torch.arange(ROWS).reshape(ROWS, 1).expand(ROWS, 2)
    picked = sample_rows(ids, 1, SAMPLE_ROWS)[:, 0].tolist()
    assert picked[0] == 0 and picked[-1] == ROWS - 1
    assert picked == sorted(set(picked)) and len(picked) == SAMPLE_ROWS


@pytest.mark.slow  # 2**24 rows of logits and targets: a few seconds on two busy cores
def test_more_than_2_24_rows_are_checked():
    logits = torch.randn(ROWS, 2).softmax(1)
    target = torch.zeros(ROWS, dtype=torch.long)
    target[-1] = 5
    report = cediag.check(logits, target)
    assert report.values_checked and not report.notes, report.notes
    assert report.by_rule("softmax-applied").severity == "error"
    out_of_range = report.by_rule("target-out-of-range")
    assert out_of_range.severity == "error" and "5" in out_of_range.message


# ---------------------------------------------------------------- expanded (zero-stride) tensors


def test_expanded_logits_are_read_through_their_storage():
    probs = torch.randn(1, 1000).softmax(1).expand(10**5, 1000)  # 400 MB if copied
    target = torch.zeros(1, dtype=torch.long).expand(10**5)
    report = cediag.check(probs, target)
    assert report.values_checked and not report.notes, report.notes
    assert report.by_rule("softmax-applied").severity == "error"


def test_expanded_target_counts_every_position_it_repeats():
    logits = torch.randn(6, 5)
    target = torch.tensor([7]).expand(6)
    report = cediag.check(logits, target)
    evidence = report.by_rule("target-out-of-range").evidence
    counts = [e.count for e in evidence if e.kind == "values"]
    assert counts == [6]


def test_expanded_probability_target_counts_every_row():
    logits = torch.randn(4, 3, 5)
    soft = torch.tensor([0.2, 0.2, 0.2]).reshape(1, 3, 1).expand(4, 3, 5)  # rows sum to 0.6
    report = cediag.check(logits, soft)
    assert report.values_checked
    expected = cediag.check(logits, soft.contiguous())
    assert [d.message for d in report.diagnostics] == [d.message for d in expected.diagnostics]
    assert report.diagnostics, "rows summing to 0.6 went unnoticed"


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(3, 1, 5).expand(3, 4, 5),
        lambda: torch.randn(1, 4, 1).expand(3, 4, 5),
        lambda: torch.randn(5, 4, 3).permute(2, 1, 0),
        lambda: torch.randn(2, 4, 6, 6).to(memory_format=torch.channels_last),
        lambda: torch.randn(3, 9, 5)[:, 2:7],
        lambda: torch.randn(3, 4, 10)[..., ::3],
        lambda: torch.randn(6).as_strided((3, 4), (1, 1)),  # overlapping
    ],
    ids=["expanded", "expanded-twice", "permuted", "channels-last", "sliced", "stepped", "overlap"],
)
def test_storage_view_reduction_matches_the_tensor(make):
    t = make()
    low, high = whole_aminmax(t)
    assert (low.item(), high.item()) == (t.min().item(), t.max().item())
    base, repeat = storage_view(t)
    assert base.numel() * repeat == t.numel()


def test_nan_in_expanded_logits_is_found():
    row = torch.randn(1, 5)
    row[0, 2] = float("nan")
    report = cediag.check(row.expand(8, 5), torch.zeros(8, dtype=torch.long))
    assert report.by_rule("non-finite-logits").severity == "error"


# ---------------------------------------------------------------- memory, in a subprocess

_MEASURE = textwrap.dedent(
    """
    import json, sys, torch, cediag
    torch.set_num_threads(1)

    def kib(field):  # a line of /proc/self/status, e.g. "VmHWM:   123456 kB"
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field))

    def extra(x, t):
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # the peak (VmHWM) starts again from here
        before = kib("VmRSS:")
        report = cediag.check(x, t)
        assert report.values_checked and not report.notes, report.notes
        return (kib("VmHWM:") - before) * 1024, [d.code for d in report.diagnostics]

    def make(kind):  # logits in a layout, and their target
        if kind == "expanded":  # 1.6 GB if copied
            x = torch.randn(1, 1000).softmax(1).expand(4 * 10**5, 1000)
            return x, torch.zeros(4 * 10**5, dtype=torch.long)
        if kind == "transposed":  # (B, V, T): the layout cediag recommends for LM logits
            x = torch.randn(8, 512, 8000).transpose(1, 2)
            return x, torch.randint(0, 8000, (8, 512))
        if kind == "channels-last":
            x = torch.randn(4, 32, 256, 256).to(memory_format=torch.channels_last)
            return x, torch.randint(0, 32, (4, 256, 256))
        if kind == "shifted":  # next-token logits: sliced, then transposed
            x = torch.randn(8, 513, 8000)[:, :-1].transpose(1, 2)
            return x, torch.randint(0, 8000, (8, 512))

    cediag.check(torch.randn(64, 10).t().contiguous().t(), torch.zeros(64, dtype=torch.long))
    x, t = make(sys.argv[1])
    layout_extra, codes = extra(x, t)  # first: it pays for anything done once per process
    twin = x.contiguous() if sys.argv[1] != "expanded" else x[:1].contiguous()
    twin_extra, _ = extra(twin, t if sys.argv[1] != "expanded" else t[:1])
    print(json.dumps({"extra": layout_extra, "contiguous_extra": twin_extra, "codes": codes,
                      "logits": x.numel() * x.element_size()}))
    """
)


_PEAK_RESETTABLE = pytest.mark.skipif(
    not os.path.exists("/proc/self/clear_refs"),
    reason="the peak resident size is reset through /proc/self/clear_refs (Linux only)",
)


def _measure(kind: str) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, kind], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@_PEAK_RESETTABLE
def test_expanded_softmax_is_checked_in_bounded_memory():
    got = _measure("expanded")
    assert "CE301" in got["codes"]
    # A copy would be 100%. The statistics pass reads the one stored row; what remains is
    # the target's statistics and the value rules' own second looks, which scan in chunks.
    assert got["extra"] <= 0.25 * got["logits"], got


@_PEAK_RESETTABLE
@pytest.mark.parametrize("kind", ["transposed", "channels-last", "shifted"])
def test_logits_in_any_layout_cost_what_contiguous_ones_cost(kind):
    # Beyond what a contiguous tensor of the same shape costs (sampled rows, the target's
    # statistics), at most 5% of the logits: a copy of the view would be 100%.
    got = _measure(kind)
    assert got["extra"] <= got["contiguous_extra"] + 0.05 * got["logits"], got


def test_second_looks_read_an_expanded_tensor_through_its_storage():
    """The counts and positions of a rule's second look on an expanded (10**6, 1000) view of
    one softmax row: exact, and read once (not a million times)."""
    from cediag.rules._locate import count_and_locate, dim_sum_range

    row = torch.randn(1, 1000).softmax(1)
    x = row.expand(10**6, 1000)
    count, positions = count_and_locate(x, lambda chunk: chunk > 0.002)
    assert count == int((row > 0.002).sum()) * 10**6
    assert all(bool(x[tuple(p)] > 0.002) for p in positions)
    low, high = dim_sum_range(x, 1)
    assert abs(low - 1) < 1e-4 and abs(high - 1) < 1e-4
    small = torch.randn(3, 1, 5).expand(3, 4, 5)
    assert count_and_locate(small, lambda c: c > 0)[0] == int((small > 0).sum())
