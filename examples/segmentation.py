"""A tiny segmentation net on synthetic masks with a void label (255) around object borders,
as in Pascal VOC / Cityscapes.

The mistake: the loss does not ignore 255, so torch stops with "Target 255 is out of bounds"
(on a GPU: a device-side assert that names nothing). `--fixed` passes `ignore_index=255`.

    python -m cediag run examples/segmentation.py           # target-out-of-range, explained
    python -m cediag run examples/segmentation.py --fixed   # no findings
"""

import argparse

import torch
import torch.nn as nn

VOID, CLASSES = 255, 4


def make_batch(batch=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=g)
    masks = torch.zeros(batch, size, size, dtype=torch.long)
    for i in range(batch):
        cls = int(torch.randint(1, CLASSES, (1,), generator=g))
        top, left = (int(v) for v in torch.randint(4, size // 2, (2,), generator=g))
        masks[i, top : top + 12, left : left + 12] = cls
        images[i, cls % 3, top : top + 12, left : left + 12] += 2.0
        masks[i, top - 1, left - 1 : left + 13] = VOID  # borders are void
        masks[i, top + 12, left - 1 : left + 13] = VOID
    return images, masks


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, CLASSES, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixed", action="store_true")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = make_model()
    criterion = nn.CrossEntropyLoss(ignore_index=VOID) if args.fixed else nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(args.steps):
        images, masks = make_batch(seed=step)
        optimizer.zero_grad()
        loss = criterion(model(images), masks)
        loss.backward()
        optimizer.step()
    print(f"final loss {loss.item():.3f}")


if __name__ == "__main__":
    main()
