"""Training the shared head with fewer free weights: a low-rank change of its projection.

The shipped head's projection (2.3 M weights) and feature blocks (1.8 M) learn, from 800 images,
maps that localize better than their start on those images and worse on unseen ones
(docs/results.md, "Why the trained head localizes worse"). This trains the same recipe with
the feature blocks frozen at their start (the identity) and the projection held at
``start + U V^T`` of rank ``--rank`` (U starts at zero, so step 0 is the untrained start):
every class still reads the change through its frozen readout, but there are far fewer
weights to fit the training images with. The saved explainer has the change folded in, so
``glancemap evaluate`` scores it like any other.

    python experiments/lowrank_head.py --rank 16 -- splits/train.txt --out runs/lowrank16 \\
        --head shared --lr 3e-4 --destroy 3 --epochs 48 --batch-size 32 \\
        --train-aux-sides 224 320 --extra-aux-sizes 320 --max-steps 300

Everything after ``--`` is ``glancemap train``'s arguments.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

import glancemap.training.trainer as trainer
from glancemap.cli import main as glancemap_main


class LowRankChange(nn.Module):
    """``start + U V^T``: the projection as its start plus a trainable change of rank ``rank``."""

    def __init__(self, start: torch.Tensor, rank: int) -> None:
        super().__init__()
        self.register_buffer("start", start.detach().clone())
        self.u = nn.Parameter(torch.zeros(start.shape[0], rank))
        self.v = nn.Parameter(torch.randn(rank, start.shape[1]) * start.shape[1] ** -0.5)

    def forward(self, _original: torch.Tensor) -> torch.Tensor:
        return self.start + self.u @ self.v


def restrict(build, rank: int):
    """``build_explainer`` whose head trains only a rank-``rank`` change of its projection (and its
    offset), and folds the change in before the explainer is saved."""

    def built(*args, **kwargs):
        explainer = build(*args, **kwargs)
        head = explainer.head
        if head.kind != "shared":
            raise SystemExit("a low-rank change needs the shared head (--head shared)")
        head.blocks.requires_grad_(False)
        parametrize.register_parametrization(head, "projection", LowRankChange(head.projection, rank))
        head.parametrizations.projection.original.requires_grad_(False)
        save = explainer.save

        def folded_save(folder, *a, **k):
            parametrize.remove_parametrizations(head, "projection", leave_parametrized=True)
            return save(folder, *a, **k)

        explainer.save = folded_save
        trainable = sum(p.numel() for p in head.parameters() if p.requires_grad)
        print(f"lowrank_head: rank {rank}, {trainable} trainable weights", file=sys.stderr)
        return explainer

    return built


def main() -> None:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rank", type=int, default=16)
    args = ap.parse_args(argv[:split])
    trainer.build_explainer = restrict(trainer.build_explainer, args.rank)
    sys.exit(glancemap_main(["train", *argv[split + 1 :]]))


if __name__ == "__main__":
    main()
