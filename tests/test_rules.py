"""Every rule: a realistic failing case (finding, severity, fix) and a near-miss legal case.

`CASES` must cover every registered rule: adding a rule without its two cases fails
`test_every_rule_has_cases`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import cediag
from cediag.rules import RULES, select_rules, validate_patterns

g = torch.Generator().manual_seed(0)


def randn(*shape, **kw):
    return torch.randn(*shape, generator=g, **kw)


def randint(high, shape):
    return torch.randint(0, high, shape, generator=g)


@dataclass
class Case:
    bad: tuple  # (input, target) that must trigger the rule
    legal: tuple  # a near miss that must stay silent (no warning, no error)
    fix: str  # text the fix must contain
    bad_options: dict[str, Any] = field(default_factory=dict)
    legal_options: dict[str, Any] = field(default_factory=dict)


def _segmentation_mask(void=255):
    mask = randint(21, (2, 8, 8))
    mask[:, 0, :] = void  # void border, as in Pascal VOC
    return mask


def _padded_labels(pad):
    labels = randint(49, (4, 12)) + 1  # token 0 is the tokenizer's pad id, never a real token
    for row, length in enumerate([12, 9, 6, 7]):
        labels[row, length:] = pad
    return labels


def _mixup(n=8, c=5, lam=0.7):
    a, b = randint(c, (n,)), randint(c, (n,))
    return lam * F.one_hot(a, c).float() + (1 - lam) * F.one_hot(b, c).float()


def _softmax_with_graph(shape, dim):
    x = randn(*shape, requires_grad=True)
    return x.softmax(dim)


CASES: dict[str, Case] = {
    "batch-size-mismatch": Case(
        (randn(32, 10), randint(10, (31,))), (randn(32, 10), randint(10, (32,))), "same batch"
    ),
    "class-dim-last": Case(
        (randn(8, 16, 5), randint(5, (8, 16))),
        (randn(8, 5, 16), randint(5, (8, 16))),
        "logits.transpose(1, 2)",
    ),
    "target-extra-dim": Case(
        (randn(32, 10), randint(10, (32, 1))),
        (randn(32, 10), randint(10, (32,))),
        "target.squeeze(1)",
    ),
    "input-extra-dim": Case(
        (randn(32, 1, 10), randint(10, (32,))),
        (randn(32, 10), randint(10, (32,))),
        "logits.squeeze(1)",
    ),
    "shape-mismatch": Case(
        (randn(4, 3, 5), randint(3, (4, 6))), (randn(4, 3, 5), randint(3, (4, 5))), "(4, 5) int64"
    ),
    "binary-logits": Case(
        (randn(16), torch.tensor([0.0, 1.0] * 8)),
        (randn(16), randn(16).softmax(0)),
        "binary_cross_entropy_with_logits",
    ),
    "single-class-output": Case(
        (randn(32, 1), torch.zeros(32, dtype=torch.long)),
        (randn(32, 2), randint(2, (32,))),
        "binary_cross_entropy_with_logits",
    ),
    "arguments-swapped": Case(
        (randint(10, (32,)), randn(32, 10)), (randn(32, 10), randint(10, (32,))), "logits first"
    ),
    "input-not-float": Case(
        (randn(32, 10).argmax(1), randint(10, (32,))),
        (randn(32, 10), randint(10, (32,))),
        "raw float logits",
    ),
    "not-a-tensor": Case(
        (randn(3, 4), [0, 1, 2]), (randn(3, 4), torch.tensor([0, 1, 2])), "torch.as_tensor"
    ),
    "device-mismatch": Case(
        (torch.empty(4, 3, device="meta"), torch.tensor([0, 1, 2, 0])),
        (torch.empty(4, 3, device="meta"), torch.empty(4, dtype=torch.long, device="meta")),
        "target.to(logits.device)",
    ),
    "one-hot-index-target": Case(
        (randn(8, 10), F.one_hot(randint(10, (8,)), 10)),
        (randn(8, 10), randint(10, (8,))),
        "target.argmax(dim=1)",
    ),
    "one-hot-probability-target": Case(
        (randn(8, 10), F.one_hot(randint(10, (8,)), 10).float()),
        (randn(8, 5), _mixup()),
        "target.argmax(dim=1)",
    ),
    "float-class-indices": Case(
        (randn(4, 3), torch.tensor([0.0, 2.0, 1.0, 0.0])),
        (randn(4, 3), torch.tensor([0, 2, 1, 0])),
        "target.long()",
    ),
    "non-integer-targets": Case(
        (randn(4, 3), torch.tensor([0.2, 1.7, 0.9, 2.4])),
        (randn(4, 3), torch.tensor([0, 1, 1, 2])),
        "mse_loss",
    ),
    "integer-dtype-unsupported": Case(
        (randn(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.uint8)),
        (randn(4, 3), torch.tensor([0, 1, 2, 0], dtype=torch.uint8)),
        "target.long()",
    ),
    "target-out-of-range": Case(
        (randn(4, 10), torch.tensor([3, 10, 7, 12])),
        (randn(4, 10), torch.tensor([3, 9, 7, 0])),
        "nn.Linear(in_features, 13)",
    ),
    "one-based-labels": Case(
        (randn(6, 3), torch.tensor([1, 3, 2, 3, 1, 2])),
        (randn(6, 3), torch.tensor([0, 2, 1, 2, 0, 1])),
        "target - 1",
    ),
    "padding-label": Case(
        (randn(2, 21, 8, 8), _segmentation_mask()),
        (randn(2, 21, 8, 8), _segmentation_mask()),
        "ignore_index=255",
        legal_options={"ignore_index": 255},
    ),
    "pixel-value-mask": Case(
        (randn(2, 2, 8, 8), randint(2, (2, 8, 8)) * 255),
        (randn(2, 2, 8, 8), randint(2, (2, 8, 8))),
        "target // 255",
    ),
    "pad-token-target": Case(
        (randn(4, 50, 12), _padded_labels(pad=0)),
        (randn(4, 50, 12), _padded_labels(pad=-100)),
        "masked_fill(attention_mask == 0, -100)",
    ),
    "all-targets-ignored": Case(
        (randn(4, 10), torch.full((4,), -100)),
        (randn(4, 10), torch.tensor([-100, -100, -100, 3])),
        "skip the batch",
    ),
    "empty-batch": Case(
        (randn(0, 10), torch.zeros(0, dtype=torch.long)),
        (randn(0, 10), torch.zeros(0, dtype=torch.long)),
        "skip empty batches",
        legal_options={"reduction": "sum"},
    ),
    "multi-hot-targets": Case(
        (randn(4, 5), torch.tensor([[1.0, 0, 1, 0, 0]] * 4)),
        (randn(8, 5), _mixup()),
        "binary_cross_entropy_with_logits",
    ),
    "invalid-probability-targets": Case(
        (randn(8, 5), randn(8, 5)),
        (randn(8, 5), (randn(8, 5) / 4).softmax(1)),
        "target.softmax(dim=1)",
    ),
    "ignore-index-is-class": Case(
        (randn(4, 10), torch.tensor([0, 1, 2, 0])),
        (randn(4, 10), torch.tensor([3, 1, 2, 5])),
        "ignore_index=-100",
        bad_options={"ignore_index": 0},
        legal_options={"ignore_index": 0},
    ),
    "softmax-applied": Case(
        (randn(64, 10).softmax(1), randint(10, (64,))),
        (randn(64, 10), randint(10, (64,))),
        "remove the softmax",
    ),
    "softmax-wrong-dim": Case(
        (randn(8, 5, 16).softmax(0), randint(5, (8, 16))),
        (randn(8, 5, 16), randint(5, (8, 16))),
        "remove the softmax",
    ),
    "log-softmax-applied": Case(
        (randn(64, 10).log_softmax(1), randint(10, (64,))),
        (randn(64, 10) - 5, randint(10, (64,))),
        "nll_loss",
    ),
    "sigmoid-applied": Case(
        (torch.sigmoid(randn(64, 10)), randint(10, (64,))),
        (randn(64, 10).abs() + 0.5, randint(10, (64,))),
        "remove the sigmoid",
    ),
    "relu-applied": Case(
        (F.relu(randn(64, 10) * 3), randint(10, (64,))),
        (randn(64, 10).abs() + 0.01, randint(10, (64,))),
        "nn.ReLU",
    ),
    "non-finite-logits": Case(
        (randn(8, 4).index_fill_(1, torch.tensor([2]), float("nan")), randint(4, (8,))),
        (randn(8, 4), randint(4, (8,))),
        "set_detect_anomaly",
    ),
    "extreme-logits": Case(
        (randn(64, 10) * 1e5, randint(10, (64,))),
        (randn(64, 10) * 30, randint(10, (64,))),
        "logits.float()",
    ),
    "constant-logits": Case(
        (randn(1, 10).expand(32, 10), randint(10, (32,))),
        (torch.zeros(32, 10), randint(10, (32,))),
        "broadcast",
    ),
    "logits-to-nll": Case(
        (randn(64, 10), randint(10, (64,))),
        (randn(64, 10).log_softmax(1), randint(10, (64,))),
        "F.cross_entropy(logits, target)",
        bad_options={"loss": "nll"},
        legal_options={"loss": "nll"},
    ),
    "fused-linear-call": Case(
        (randn(32, 64), randint(1000, (32,))),
        (randn(32, 64), randint(64, (32,))),
        'loss="linear_cross_entropy"',
        bad_options={"weight": randn(1000, 64)},  # the classifier, read as class weights
        legal_options={"weight": torch.ones(64)},
    ),
    "weight-shape-mismatch": Case(
        (randn(4, 10), randint(10, (4,))),
        (randn(4, 10), randint(10, (4,))),
        "shape (10,)",
        bad_options={"weight": torch.ones(9)},
        legal_options={"weight": torch.ones(10)},
    ),
    "label-smoothing-out-of-range": Case(
        (randn(4, 10), randint(10, (4,))),
        (randn(4, 10), randint(10, (4,))),
        "label_smoothing=0.1",
        bad_options={"label_smoothing": 10.0},
        legal_options={"label_smoothing": 0.1},
    ),
    "ignore-index-with-probabilities": Case(
        (randn(8, 5), _mixup()),
        (randn(8, 5), _mixup()),
        "reduction='none'",
        bad_options={"ignore_index": 0},
    ),
    "invalid-option": Case(
        (randn(4, 10), randint(10, (4,))),
        (randn(4, 10), randint(10, (4,))),
        "reduction='mean'",
        bad_options={"reduction": "avg"},
        legal_options={"reduction": "none"},
    ),
    "weight-dtype-mismatch": Case(
        (randn(4, 10), randint(10, (4,))),
        (randn(4, 10), randint(10, (4,))),
        "weight.to(logits.dtype)",
        bad_options={"weight": torch.ones(10, dtype=torch.float64)},
        legal_options={"weight": torch.ones(10)},
    ),
}


def test_every_rule_has_cases():
    # The sequence-context rules (phase "batch") have theirs in tests/test_sequence.py, the
    # other families' rules in tests/test_family_*.py.
    assert set(CASES) == {r.slug for r in RULES.values() if r.phase != "batch" and r.prefix == "CE"}


@pytest.mark.parametrize("slug", list(CASES))
def test_rule_fires_on_its_mistake(slug):
    case = CASES[slug]
    rule = next(r for r in RULES.values() if r.slug == slug)
    report = cediag.check(*case.bad, **case.bad_options)
    found = report.by_rule(slug)
    assert found is not None, f"{slug} did not fire:\n{report}"
    assert found.severity is rule.severity
    assert found.code == rule.code
    assert case.fix in found.fix, found.fix
    assert found.message.endswith("."), found.message
    assert report.ok is (rule.severity is not cediag.Severity.error) or report.errors


@pytest.mark.parametrize("slug", list(CASES))
def test_near_miss_stays_silent(slug):
    case = CASES[slug]
    report = cediag.check(*case.legal, **case.legal_options)
    assert report.by_rule(slug) is None, str(report)
    assert report.at_least("warning") == [], str(report)


def test_graph_evidence_finds_softmax_and_its_dim():
    report = cediag.check(_softmax_with_graph((16, 5), 1), randint(5, (16,)))
    found = report.by_rule("softmax-applied")
    assert found and any(e.kind == "graph" and e.dim == 1 for e in found.evidence)

    report = cediag.check(_softmax_with_graph((4, 5, 6), 2), randint(5, (4, 6)))
    found = report.by_rule("softmax-wrong-dim")
    assert found and "dim 2" in found.message


def test_graph_sees_through_reshape_and_casts():
    probs = _softmax_with_graph((4, 7, 5), -1).to(torch.bfloat16).reshape(-1, 5)
    report = cediag.check(probs, randint(5, (28,)))
    assert report.by_rule("softmax-applied")


def test_graph_finds_relu_without_many_zeros():
    hidden = randn(16, 10, requires_grad=True)
    logits = F.relu(hidden + 10)  # no zeros at all, but the graph proves the ReLU
    assert cediag.check(logits, randint(10, (16,))).by_rule("relu-applied")


def test_out_of_range_reports_count_range_and_positions():
    report = cediag.check(randn(5, 4), torch.tensor([0, 7, 1, -3, 2]))
    found = report.by_rule("target-out-of-range")
    evidence = found.evidence[0]
    assert (evidence.count, evidence.min, evidence.max) == (2, -3, 7)
    assert evidence.first_positions == [[1], [3]]
    assert "2 of 5" in found.message


def test_non_finite_counts_nan_and_inf():
    x = randn(6, 3)
    x[1, 2] = float("nan")
    x[4, 0] = float("inf")
    found = cediag.check(x, randint(3, (6,))).by_rule("non-finite-logits")
    assert "1 NaN and 1 Inf" in found.message
    assert "[1, 2]" in found.message


def test_minus_one_padding_suggests_ignore_index():
    found = cediag.check(randn(4, 5), torch.tensor([1, -1, 3, -1])).by_rule("padding-label")
    assert "ignore_index=-1" in found.fix


def test_jpeg_like_mask_suggests_thresholding():
    mask = torch.tensor([0, 0, 1, 2, 250, 251, 253, 255, 255, 255, 254, 0]).reshape(1, 3, 4)
    found = cediag.check(randn(1, 2, 3, 4), mask).by_rule("pixel-value-mask")
    assert "(target > 127).long()" in found.fix


def test_flattened_logits_with_unflattened_target():
    found = cediag.check(randn(8 * 12, 50), randint(50, (8, 12))).by_rule("target-extra-dim")
    assert "target.reshape(-1)" in found.fix


def test_segmentation_mask_with_channel_dim():
    found = cediag.check(randn(2, 4, 8, 8), randint(4, (2, 1, 8, 8))).by_rule("target-extra-dim")
    assert "target.squeeze(1)" in found.fix


def test_channels_last_segmentation():
    found = cediag.check(randn(2, 8, 8, 4), randint(4, (2, 8, 8))).by_rule("class-dim-last")
    assert "logits.permute(0, 3, 1, 2)" in found.fix


def test_nll_view_flags_probabilities():
    found = cediag.check(randn(32, 6).softmax(1), randint(6, (32,)), loss="nll").by_rule(
        "logits-to-nll"
    )
    assert "torch.log(probs)" in found.fix


def test_criterion_supplies_options():
    criterion = torch.nn.CrossEntropyLoss(ignore_index=255)
    mask = _segmentation_mask()
    assert cediag.check(randn(2, 21, 8, 8), mask, criterion=criterion).ok
    assert not cediag.check(randn(2, 21, 8, 8), mask).ok


def test_raise_for_errors_raises_a_value_error_with_the_report():
    report = cediag.check(randn(4, 3).softmax(1), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError) as raised:
        report.raise_for_errors()
    assert isinstance(raised.value, cediag.CrossEntropyInputError)
    assert raised.value.report is report
    assert "softmax-applied" in str(raised.value)


def test_readme_example_prints_softmax_error_with_fix():
    text = str(cediag.check(torch.randn(4, 3).softmax(1), torch.tensor([0, 1, 2, 0])))
    assert "CE301 softmax-applied" in text and "fix:" in text


def test_report_round_trips_through_json():
    report = cediag.check(randn(4, 10), torch.tensor([3, 10, 7, 12]))
    again = cediag.Report.model_validate_json(report.model_dump_json())
    assert again == report
    data = report.model_dump(mode="json")
    assert data["ok"] is False and data["schema_version"] == cediag.SCHEMA_VERSION
    assert data["diagnostics"][0]["evidence"][0]["kind"] == "values"


def test_select_and_ignore_by_code_prefix_and_slug():
    bad = (randn(64, 10).softmax(1), torch.tensor([10] + [0] * 63))
    assert {d.rule for d in cediag.check(*bad).diagnostics} >= {
        "softmax-applied",
        "target-out-of-range",
    }
    only_logits = cediag.check(*bad, select=["CE3"])
    assert {d.code[:3] for d in only_logits.diagnostics} == {"CE3"}
    assert cediag.check(*bad, ignore=["softmax-applied", "CE2"]).diagnostics == []


def test_meta_tensors_are_checked_for_structure_only():
    x = torch.empty(8, 16, 5, device="meta")
    t = torch.empty(8, 16, dtype=torch.long, device="meta")
    report = cediag.check(x, t)
    assert report.by_rule("class-dim-last")
    assert report.values_checked is False


def test_trailing_runs_of_a_real_class_are_not_padding():
    """Frame labels that end in silence (class 0), which also occurs mid-sequence: legal."""
    labels = randint(5, (4, 40)) + 1
    labels[:, 5:9] = 0
    for row, length in enumerate([40, 30, 22, 35]):
        labels[row, length:] = 0
    report = cediag.check(randn(4, 6, 40), labels)
    assert report.by_rule("pad-token-target") is None, str(report)


def test_a_stray_label_among_many_is_a_data_error_not_a_missing_class():
    """One 19 among 100,000 labels for 16 classes: the rows, and drop or ignore them."""
    target = randint(16, (100_000,))
    target[54_321] = 19
    found = cediag.check(randn(100_000, 16), target).by_rule("target-out-of-range")
    assert found.severity is cediag.Severity.error
    assert "make the model output" not in found.fix and "nn.Linear" not in found.fix
    assert "stray label at row 54321" in found.fix
    assert "target.masked_fill((target < 0) | (target >= 16), -100)" in found.fix


def test_stray_labels_in_a_mask_name_their_positions_and_the_ignore_index():
    mask = randint(5, (2, 50, 50))
    mask[1, 3, 4], mask[0, 7, 7] = 9, -2
    found = cediag.check(randn(2, 5, 50, 50), mask, ignore_index=255).by_rule("target-out-of-range")
    assert "2 stray labels at positions [0, 7, 7], [1, 3, 4]" in found.fix
    assert "(target >= 5), 255)" in found.fix


@pytest.mark.parametrize(("out", "total"), [(2, 4), (1, 100), (30, 1000)])
def test_many_labels_above_c_suggest_a_bigger_head(out, total):
    """At least 1% of the counted labels >= C: the dataset has more classes than the head."""
    target = randint(10, (total,))
    target[:out] = 12
    found = cediag.check(randn(total, 10), target).by_rule("target-out-of-range")
    assert found.fix.startswith("make the model output 13 classes"), found.fix


def test_ignored_targets_do_not_count_towards_many():
    target = torch.full((1000,), -100)
    target[:50] = randint(10, (50,))
    target[0] = 12  # 1 of 50 counted labels: 2%
    found = cediag.check(randn(1000, 10), target).by_rule("target-out-of-range")
    assert found.fix.startswith("make the model output 13 classes"), found.fix


@pytest.mark.parametrize(
    ("patterns", "named", "suggested"),
    [
        (["CE999"], "CE999: matches no rule", "did you mean CE509 or CE309?"),
        (["CE3", "softmax-aplied"], "softmax-aplied: matches no rule", "softmax-applied"),
        (["ce30l"], "ce30l: matches no rule", "CE30"),
    ],
)
def test_a_rule_pattern_typo_raises_naming_it_and_the_closest_rules(patterns, named, suggested):
    with pytest.raises(ValueError) as raised:
        validate_patterns(patterns)
    assert str(raised.value).startswith(named) and suggested in str(raised.value)


def test_every_bad_pattern_is_named_and_good_ones_pass():
    validate_patterns(["CE3", "ce301", "softmax-applied", "CE"])
    validate_patterns(None)
    with pytest.raises(ValueError, match=r"^nothing: matches no rule; '': an empty pattern"):
        validate_patterns(["CE1", "nothing", ""])
    with pytest.raises(TypeError, match="to be a string"):
        validate_patterns(["CE1", 301])


def test_a_bare_string_is_one_pattern_not_its_letters():
    validate_patterns("CE301")
    assert [r.code for r in select_rules("CE301")] == ["CE301"]
    assert [r.code for r in select_rules(None, "CE301")] == [c for c in RULES if c != "CE301"]


def test_an_ignored_255_is_not_called_the_padding_label():
    """The 255s are ignored; the 32 is the fault (and the count of each is 1 by coincidence)."""
    report = cediag.check(
        torch.randn(8, 32), torch.tensor([0, 32, 2, 3, 4, 5, 6, 255]), ignore_index=255
    )
    assert [d.rule for d in report.diagnostics] == ["target-out-of-range"]
    report = cediag.check(
        torch.randn(8, 32), torch.tensor([0, 33, 2, 3, 4, 5, 6, -1]), ignore_index=-1
    )
    assert [d.rule for d in report.diagnostics] == ["target-out-of-range"]
