"""A tiny next-token model on synthetic, right-padded sequences.

The mistake: the padding positions (token 0) are left in the targets, so the model is trained
to predict padding and the loss is averaged over it. `--fixed` masks the padded targets with
-100, F.cross_entropy's default ignore_index (as Hugging Face models do).

    python -m cediag run examples/sequence_model.py           # CE210 pad-token-target
    python -m cediag run examples/sequence_model.py --fixed   # no findings
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

PAD, VOCAB, LENGTH = 0, 32, 24


def make_batch(batch=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, VOCAB, (batch, LENGTH), generator=g)
    lengths = torch.randint(LENGTH // 3, LENGTH - 4, (batch,), generator=g)
    for row, n in enumerate(lengths.tolist()):
        tokens[row, n:] = PAD  # right padding
    return tokens


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 32, padding_idx=PAD)
        self.rnn = nn.GRU(32, 64, batch_first=True)
        self.head = nn.Linear(64, VOCAB)

    def forward(self, tokens):
        hidden, _ = self.rnn(self.embed(tokens))
        return self.head(hidden)  # (B, T, V)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixed", action="store_true")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = TinyLM()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(args.steps):
        tokens = make_batch(seed=step)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        if args.fixed:
            targets = targets.masked_fill(targets == PAD, -100)
        # else: the mistake, padding positions are trained as labels
        logits = model(inputs)
        optimizer.zero_grad()
        loss = F.cross_entropy(logits.transpose(1, 2), targets)
        loss.backward()
        optimizer.step()
    print(f"final loss {loss.item():.3f}")


if __name__ == "__main__":
    main()
