"""The training loops the guard benchmarks run: a ~1 ms MLP step, a ~20 ms CNN step and a
~20-40 ms transformer LM step (one thread, an idle CPU; a shared one is slower).

`Loop.step(criterion, x, t, activation)` is one SGD step with the loss computed by `criterion`;
the coverage benchmark passes a faulty batch or an activation through the same step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn


class TinyLM(nn.Module):
    """A 2-layer transformer language model: vocabulary 1000, width 128, 64-token contexts."""

    def __init__(self, vocab: int = 1000, width: int = 128):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True)
        self.body = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.embed(tokens))).flatten(0, 1)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


# name -> (description, model, (inputs, number of targets), classes)
LOOPS: dict[str, tuple[str, Callable[[], nn.Module], Callable[[], torch.Tensor], int, int]] = {
    "MLP": ("MLP 784-256-10, batch 64", _mlp, lambda: torch.randn(64, 784), 64, 10),
    "CNN": (
        "CNN 2 conv + 2 linear, batch 32 of 3x32x32",
        _cnn,
        lambda: torch.randn(32, 3, 32, 32),
        32,
        10,
    ),
    "LM": (
        "transformer LM, 2 layers, 8x64 tokens, vocab 1000",
        TinyLM,
        lambda: torch.randint(0, 1000, (8, 64)),
        8 * 64,
        1000,
    ),
}


@dataclass
class Loop:
    """One model, its optimiser and one batch, kept for the whole run."""

    name: str
    description: str
    model: nn.Module
    opt: torch.optim.Optimizer
    x: torch.Tensor
    t: torch.Tensor  # class indices, or probabilities (`soft=True`: label-smoothed one-hot)
    n_classes: int

    def step(
        self,
        criterion: Callable,
        x: torch.Tensor | None = None,
        t: torch.Tensor | None = None,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.opt.zero_grad(set_to_none=True)
        logits = self.model(self.x if x is None else x)
        if activation is not None:
            logits = activation(logits)
        criterion(logits, self.t if t is None else t).backward()
        self.opt.step()

    def stepper(self, criterion: Callable) -> Callable[[], None]:
        return lambda: self.step(criterion)


def build_loop(name: str, *, soft: bool = False, device: str = "cpu", seed: int = 0) -> Loop:
    description, model, inputs, n_targets, n_classes = LOOPS[name]
    torch.manual_seed(seed)
    net = model().to(device)
    x = inputs().to(device)
    t = torch.randint(0, n_classes, (n_targets,), device=device)
    if soft:
        t = nn.functional.one_hot(t, n_classes).float() * 0.9 + 0.1 / n_classes
        description += ", probability targets"
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    return Loop(name, description, net, opt, x, t, n_classes)
