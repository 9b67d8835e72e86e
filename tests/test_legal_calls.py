"""Legal calls must stay silent: no warning and no error. A false alarm costs more than a miss.

Every call here is also run through torch to prove it is legal.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import cediag

g = torch.Generator().manual_seed(1)


def randn(*shape):
    return torch.randn(*shape, generator=g)


def randint(high, shape):
    return torch.randint(0, high, shape, generator=g)


def fresh_linear_logits(n=64, features=32, classes=10):
    torch.manual_seed(0)
    return nn.Linear(features, classes)(randn(n, features))  # carries an AddmmBackward graph


def trained_logits(n=256, classes=10):
    """Confident, peaked logits like those of a trained classifier."""
    labels = randint(classes, (n,))
    return randn(n, classes) + 8 * F.one_hot(labels, classes), labels


def mixup(n=32, classes=10, lam=0.65):
    a, b = randint(classes, (n,)), randint(classes, (n,))
    return lam * F.one_hot(a, classes).float() + (1 - lam) * F.one_hot(b, classes).float()


def cutmix(n=16, classes=10):
    lam = torch.rand(n, 1, generator=g)
    a, b = randint(classes, (n,)), randint(classes, (n,))
    return lam * F.one_hot(a, classes) + (1 - lam) * F.one_hot(b, classes)


def lm_labels(batch=4, length=32, vocab=100):
    labels = randint(vocab, (batch, length))
    for row, keep in enumerate([32, 20, 11, 27]):
        labels[row, keep:] = -100
    return labels


def voc_mask(n=2, classes=21, size=16):
    mask = randint(classes, (n, size, size))
    mask[:, ::5, :] = 255
    return mask


LEGAL = {
    "fresh nn.Linear logits with graph": (fresh_linear_logits(), randint(10, (64,)), {}),
    "trained, confident logits": (*trained_logits(), {}),
    "label smoothing": (randn(32, 10), randint(10, (32,)), {"label_smoothing": 0.1}),
    "mixup soft targets": (randn(32, 10), mixup(), {}),
    "cutmix soft targets": (randn(16, 10), cutmix(), {}),
    "mixup with label smoothing": (randn(32, 10), mixup(), {"label_smoothing": 0.1}),
    "distillation targets (teacher softmax, T=4)": (
        randn(32, 10),
        (randn(32, 10) * 3 / 4).softmax(1),
        {},
    ),
    "bf16 distillation targets": (
        randn(32, 100).bfloat16(),
        randn(32, 100).softmax(1).bfloat16(),
        {},
    ),
    "segmentation with ignore_index=255": (randn(2, 21, 16, 16), voc_mask(), {"ignore_index": 255}),
    "LM logits flattened, -100 padding": (randn(4 * 32, 100), lm_labels().reshape(-1), {}),
    "LM logits transposed, -100 padding": (randn(4, 32, 100).transpose(1, 2), lm_labels(), {}),
    "uint8 targets on (N, C)": (randn(8, 5), randint(5, (8,)).to(torch.uint8), {}),
    "bf16 logits": (randn(64, 10).bfloat16(), randint(10, (64,)), {}),
    "fp16 logits": (randn(64, 10).half(), randint(10, (64,)), {}),
    "fp64 logits": (randn(64, 10).double(), randint(10, (64,)), {}),
    "class weights": (
        randn(64, 10),
        randint(10, (64,)),
        {"weight": torch.rand(10, generator=g) + 0.1},
    ),
    "reduction none": (randn(64, 10), randint(10, (64,)), {"reduction": "none"}),
    "reduction sum with every target ignored": (
        randn(4, 10),
        torch.full((4,), -100),
        {"reduction": "sum"},
    ),
    "large but sane logits (|x| ~ 100)": (randn(64, 10) * 35, randint(10, (64,)), {}),
    "all-positive logits without zeros": (randn(64, 10).abs() + 0.2, randint(10, (64,)), {}),
    "a single sample": (randn(1, 10), torch.tensor([3]), {}),
    "unbatched (C,) input": (randn(10), torch.tensor(3), {}),
    "unbatched (C,) probabilities": (randn(10), randn(10).softmax(0), {}),
    "heavy class imbalance": (randn(200, 10), torch.tensor([0] * 195 + [1, 2, 3, 4, 5]), {}),
    "5 of 1000 classes used": (randn(64, 1000), randint(5, (64,)), {}),
    "zero-initialised head (all-zero logits)": (torch.zeros(32, 10), randint(10, (32,)), {}),
    "non-positive logits that are not log-probs": (
        -randn(64, 10).abs() - 1,
        randint(10, (64,)),
        {},
    ),
    "K-dim 3-D input (N, C, L)": (randn(4, 6, 50), randint(6, (4, 50)), {}),
    "5-D volumetric segmentation": (randn(1, 3, 4, 4, 4), randint(3, (1, 4, 4, 4)), {}),
    "ignore_index -1 with -1 padding": (
        randn(4, 5),
        torch.tensor([1, -1, 3, -1]),
        {"ignore_index": -1},
    ),
    "probabilities with negative ignore_index": (randn(8, 5), mixup(8, 5), {"ignore_index": -1}),
    "C == 2 binary as two logits": (randn(64, 2), randint(2, (64,)), {}),
    "autocast bf16 logits with fp32 weight": None,  # run separately below
}


@pytest.mark.parametrize("name", [k for k, v in LEGAL.items() if v is not None])
def test_legal_call_is_silent(name):
    x, t, options = LEGAL[name]
    F.cross_entropy(x, t, **options)  # proves torch accepts it
    report = cediag.check(x, t, **options)
    assert report.ok, str(report)
    assert report.at_least("warning") == [], f"{name}:\n{report}"
    assert report.notes == []


def test_autocast_bf16_logits_with_fp32_weight_is_silent():
    x, t, w = randn(16, 10).bfloat16(), randint(10, (16,)), torch.rand(10, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        F.cross_entropy(x, t, weight=w)
        assert cediag.check(x, t, weight=w).at_least("warning") == []


@pytest.mark.parametrize("seed", range(20))
def test_random_logits_never_warn(seed):
    """Freshly initialised models of many shapes and scales: no warning at all."""
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 300, (1,), generator=gen))
    c = int(torch.randint(2, 50, (1,), generator=gen))
    scale = float(torch.rand(1, generator=gen)) * 20 + 0.01
    x = torch.randn(n, c, generator=gen) * scale + float(torch.randn(1, generator=gen)) * scale
    t = torch.randint(0, c, (n,), generator=gen)
    assert cediag.check(x, t).at_least("warning") == []
