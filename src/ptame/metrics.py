"""Faithfulness metrics on [0,1] images and [0,1] maps.

Scores are softmax probabilities of the class the backbone predicts on the
clean image. Masking happens in pixel space: the image is multiplied by the
map with all but its top ``keep`` fraction of pixels set to zero (kept pixels
keep their soft value), as in Grad-CAM++'s Average Drop / Increase in Confidence.
"""

from __future__ import annotations

import math

import torch

from .explainer.perturbation import resize_maps
from .models import Classifier


def keep_top_fraction(maps: torch.Tensor, keep: float) -> torch.Tensor:
    """Zeroes all but the ``ceil(keep*H*W)`` highest pixels of each ``(B,1,H,W)`` map (ties broken by index)."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0,1], got {keep}")
    flat = maps.flatten(1)
    k = max(1, math.ceil(keep * flat.shape[1]))
    if k >= flat.shape[1]:
        return maps.clone()
    idx = flat.topk(k, dim=1).indices
    kept = torch.zeros_like(flat).scatter_(1, idx, flat.gather(1, idx))
    return kept.view_as(maps)


@torch.no_grad()
def confidence_change(
    backbone: Classifier,
    images: torch.Tensor,
    maps: torch.Tensor,
    keep: float = 1.0,
    clean_probs: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-image Average Drop and Increase in Confidence terms, in percent.

    Returns ``drop = 100*max(0, Y-O)/Y`` and ``increase = 100*(O > Y)`` per image
    (``(B,)`` each), plus the clean and masked scores and the predicted class;
    their means are AD and IC. Pass ``clean_probs`` (softmax on the clean
    images, ``(B,K)``) to reuse one clean pass across maps and levels.
    """
    clean = backbone(images).softmax(dim=1) if clean_probs is None else clean_probs
    y, cls = clean.max(dim=1)
    masked = images * keep_top_fraction(resize_maps(maps, images.shape[-2:]), keep)
    o = backbone(masked).softmax(dim=1).gather(1, cls[:, None]).squeeze(1)
    return {
        "drop": 100.0 * (y - o).clamp_min(0) / y,
        "increase": 100.0 * (o > y).float(),
        "clean_score": y,
        "masked_score": o,
        "target": cls,
    }
