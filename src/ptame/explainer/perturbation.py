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


def remove_regions(images: torch.Tensor, maps: torch.Tensor, fill: str = "blur", sigma: float = 5.0) -> torch.Tensor:
    """Differentiable removal of the mapped regions: ``images*(1-m) + substitute*m``.

    ``fill="blur"``: the substitute is the image blurred with ``sigma`` (pixels).
    ``fill="diffuse"``: the substitute is grown from the *kept* pixels only
    (normalised convolution, ``blur(x*(1-m)) / blur(1-m)``), so nothing of the
    removed content leaks back: a smooth, differentiable stand-in for the
    inpainting that ROAD uses (Telea, linear imputation).

    Args:
        images: ``(B,3,H,W)`` in [0,1]; maps ``(B,1,h,w)`` in [0,1] (1 = removed), upsampled bilinearly.
    """
    from ..metrics import gaussian_blur

    m = resize_maps(maps, images.shape[-2:])
    if fill == "blur":
        substitute = gaussian_blur(images, sigma)
    elif fill == "diffuse":
        keep = 1 - m
        substitute = gaussian_blur(images * keep, sigma) / gaussian_blur(keep, sigma).clamp_min(1e-3)
    else:
        raise ValueError(f"unknown fill {fill!r}: use 'blur' or 'diffuse'")
    return images * (1 - m) + substitute.clamp(0, 1) * m
