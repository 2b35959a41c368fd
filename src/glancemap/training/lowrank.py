"""Training a shared head with few free weights: a low-rank change of its projection.

A shared head trained freely (4.1 M weights on a few hundred images) learns to localize the
images it sees and loses its start's localization on others (docs/results.md, "Why the trained
head localizes worse"). Restricted, the feature blocks stay at their start and the projection
is ``start + U V^T`` of rank ``rank``: every class still reads the change through its frozen
readout, with some 50 k weights to fit. U starts at zero, so step 0 is the start itself.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from ..explainer.head import SharedReadoutHead


class LowRankChange(nn.Module):
    """The parametrization ``start + U V^T``, ``U`` ``(D, rank)`` at zero, ``V`` ``(rank, C)`` random."""

    def __init__(self, start: torch.Tensor, rank: int) -> None:
        super().__init__()
        self.register_buffer("start", start.detach().clone())
        self.u = nn.Parameter(torch.zeros(start.shape[0], rank, device=start.device))
        self.v = nn.Parameter(torch.randn(rank, start.shape[1], device=start.device) * start.shape[1] ** -0.5)

    def forward(self, _original: torch.Tensor) -> torch.Tensor:
        return self.start + self.u @ self.v


def restrict_to_low_rank(head: nn.Module, rank: int) -> int:
    """Freezes ``head``'s feature blocks and holds its projection at its current value plus a
    trainable rank-``rank`` change (its offset stays trainable). Returns the trainable weights.
    Call :func:`fold_low_rank` before saving the head."""
    if not isinstance(head, SharedReadoutHead):
        raise ValueError(
            f"a low-rank change (--low-rank) needs the shared head (--head shared), not the {head.kind} head"
        )
    if not 0 < rank <= min(head.projection.shape):
        raise ValueError(f"rank must be in [1, {min(head.projection.shape)}] for this head, got {rank}")
    head.blocks.requires_grad_(False)
    parametrize.register_parametrization(head, "projection", LowRankChange(head.projection, rank))
    head.parametrizations.projection.original.requires_grad_(False)
    return sum(p.numel() for p in head.parameters() if p.requires_grad)


def fold_low_rank(head: nn.Module) -> None:
    """Makes the restricted ``head`` a plain one again, its change folded into the projection."""
    if parametrize.is_parametrized(head, "projection"):
        parametrize.remove_parametrizations(head, "projection", leave_parametrized=True)
        head.requires_grad_(True)
