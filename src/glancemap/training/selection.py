"""Held-out images decide whether training improved on its start.

The training objective (keep the class with the map, keep the map small) is a
proxy for faithfulness, and on some label sets it drifts from it: on a
confident 9-class backbone, training made the maps *less* faithful than the
auxiliary-CAM start it began from (docs/results.md). A few of the user's own
images, held out of training, settle it: both heads are scored with a
ROAD-shaped test and the better one is saved.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..explainer import PTameExplainer
from ..explainer.perturbation import remove_regions, top_fraction_mask
from ..images import BadFileLog, image_batches

FRACTIONS = (0.1, 0.3, 0.5, 0.7)  # the shares of pixels removed, as ROAD's
HOLDOUT_SHARE = 0.15  # the default share held out, where the check runs by default
MIN_HOLDOUT = 8  # fewer held-out images than this: no check, the trained head is kept


def check_calls(n_held_out: int) -> int:
    """Backbone calls of the check on ``n_held_out`` images: :func:`removal_score` (the target, then
    each fraction removed both ways) for the trained head and for its start."""
    return 2 * n_held_out * (1 + 2 * len(FRACTIONS))


def holdout_split(files: Sequence[Path], share: float, seed: int) -> tuple[list[Path], list[Path]]:
    """``(train, held_out)``: a seeded ``share`` of ``files`` held out (none if that is under
    :data:`MIN_HOLDOUT` images or would leave fewer images than it to train on)."""
    n = round(len(files) * share)
    if share <= 0 or n < MIN_HOLDOUT or len(files) - n < MIN_HOLDOUT:
        return list(files), []
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed + 7919)).tolist()
    held = set(order[:n])
    return [f for i, f in enumerate(files) if i not in held], [f for i, f in enumerate(files) if i in held]


@torch.no_grad()
def removal_score(explainer: PTameExplainer, images: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """Per image, the mean over :data:`FRACTIONS` of the backbone's probability for its class with
    the map's *least* relevant pixels removed minus with its *most* relevant removed (blurred away):
    ROAD's LeRF minus MoRF, on probabilities. ``(B,)``, higher is more faithful."""
    backbone = explainer.backbone
    targets = backbone(images).argmax(dim=1)
    maps = explainer(images, targets)
    # a fixed tiny jitter breaks ties in flat map regions, so each fraction removes that many pixels
    maps = maps + 1e-6 * torch.rand(maps.shape, generator=torch.Generator().manual_seed(0)).to(maps)
    score = torch.zeros(len(images), device=images.device)
    for f in FRACTIONS:
        most = top_fraction_mask(maps, torch.full((len(images),), f))
        least = top_fraction_mask(-maps, torch.full((len(images),), f))
        for mask, sign in ((least, 1.0), (most, -1.0)):
            p = backbone(remove_regions(images, mask, "blur", sigma)).softmax(dim=1)
            score += sign * p.gather(1, targets[:, None])[:, 0]
    return score / len(FRACTIONS)


def held_out_score(explainer: PTameExplainer, files: Sequence[Path], batch_size: int = 16) -> float:
    """Mean :func:`removal_score` over ``files`` (centre crops; unreadable files skipped)."""
    transform = explainer.backbone.preprocessing.eval_transform()
    was_training = explainer.training
    explainer.eval()
    scores = [
        removal_score(explainer, images.to(explainer.device))
        for _, images in image_batches(list(files), transform, batch_size, BadFileLog())
    ]
    explainer.train(was_training)
    return torch.cat(scores).mean().item() if scores else float("nan")
