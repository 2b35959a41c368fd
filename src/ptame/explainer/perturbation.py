"""Trained perturbations: a map multiplies the image in [0,1] pixel space."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_maps(maps: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize of ``(B,n,h,w)`` maps to ``size``; a no-op when already there."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def perturb(images: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """``images * maps``: images ``(B,3,H,W)`` in [0,1]; maps ``(B,1,h,w)`` in [0,1], upsampled bilinearly."""
    if maps.ndim != 4 or maps.shape[1] != 1 or maps.shape[0] != images.shape[0]:
        raise ValueError(f"maps must be (B,1,h,w) with B={images.shape[0]}, got {tuple(maps.shape)}")
    return images * resize_maps(maps, images.shape[-2:])


def minmax_normalize(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-map min-max to [0,1] over the last two dims; a constant map becomes all zeros."""
    flat = maps.flatten(-2)
    lo = flat.min(dim=-1, keepdim=True).values
    hi = flat.max(dim=-1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(eps)).view_as(maps)
