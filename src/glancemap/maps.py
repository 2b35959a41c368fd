"""Operations on saliency maps ``(B,n,h,w)`` shared by the explainer, the baselines and the metrics."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_maps(maps: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize of ``(B,n,h,w)`` maps to ``size``; a no-op when already there."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def minmax_normalize(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-map min-max to [0,1] over the last two dims; a constant map becomes all zeros."""
    flat = maps.flatten(-2)
    lo = flat.min(dim=-1, keepdim=True).values
    hi = flat.max(dim=-1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(eps)).view_as(maps)


def gaussian_blur(images: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """Separable Gaussian blur of ``(B,C,H,W)`` with reflect padding (kernel radius 3 sigma)."""
    import torch.nn.functional as F

    r = max(1, int(3 * sigma))
    x = torch.arange(-r, r + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    c = images.shape[1]
    out = F.conv2d(F.pad(images, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(out, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
