"""An MNIST-style classifier on synthetic 28x28 images.

The mistake: the model ends in nn.Softmax, and nn.CrossEntropyLoss applies log_softmax again.
It trains (slowly, with vanishing gradients) and nothing crashes. `--fixed` drops the softmax.

    python -m cediag run examples/mnist_classifier.py           # CE301 softmax-applied
    python -m cediag run examples/mnist_classifier.py --fixed   # no findings
"""

import argparse

import torch
import torch.nn as nn


def make_data(n=512, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    prototypes = torch.randn(classes, 1, 28, 28, generator=g)
    images = prototypes[labels] + 0.5 * torch.randn(n, 1, 28, 28, generator=g)
    return images, labels


def make_model(fixed: bool) -> nn.Module:
    layers = [nn.Flatten(), nn.Linear(28 * 28, 64), nn.ReLU(), nn.Linear(64, 10)]
    if not fixed:
        layers.append(nn.Softmax(dim=1))  # the mistake: CrossEntropyLoss wants raw logits
    return nn.Sequential(*layers)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixed", action="store_true")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    images, labels = make_data()
    model = make_model(args.fixed)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(args.epochs):
        for start in range(0, len(images), 64):
            x, y = images[start : start + 64], labels[start : start + 64]
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch}: loss {loss.item():.3f}")


if __name__ == "__main__":
    main()
