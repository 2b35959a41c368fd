"""Trained perturbations: a map multiplies the image in [0,1] pixel space."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..maps import gaussian_blur, resize_maps


def perturb(images: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """``images * maps``: images ``(B,3,H,W)`` in [0,1]; maps ``(B,1,h,w)`` in [0,1], upsampled bilinearly."""
    if maps.ndim != 4 or maps.shape[1] != 1 or maps.shape[0] != images.shape[0]:
        raise ValueError(f"maps must be (B,1,h,w) with B={images.shape[0]}, got {tuple(maps.shape)}")
    return images * resize_maps(maps, images.shape[-2:])


REMOVAL_FILLS = ("blur", "inpaint")


def remove_regions(images: torch.Tensor, maps: torch.Tensor, fill: str = "blur", sigma: float = 5.0) -> torch.Tensor:
    """Differentiable removal of the mapped regions: ``images*(1-m) + substitute*m``.

    ``fill="blur"``: the substitute is the image blurred with ``sigma`` (pixels).
    ``fill="inpaint"``: the substitute is grown from the *kept* pixels only
    (normalised convolution, ``blur(x*(1-m)) / blur(1-m)``, at ``sigma``, 4x and
    16x so large holes fill too; see :func:`diffuse_fill`), so nothing of the
    removed content leaks back: a smooth, differentiable stand-in for the
    inpainting that ROAD uses (Telea, linear imputation).

    Args:
        images: ``(B,3,H,W)`` in [0,1]; maps ``(B,1,h,w)`` in [0,1] (1 = removed), upsampled bilinearly.
    """
    m = resize_maps(maps, images.shape[-2:])
    if fill == "blur":
        substitute = gaussian_blur(images, sigma)
    elif fill == "inpaint":
        substitute = diffuse_fill(images, 1 - m, (sigma, 4 * sigma, 16 * sigma))
    else:
        raise ValueError(f"unknown fill {fill!r}: use one of {', '.join(REMOVAL_FILLS)}")
    return images * (1 - m) + substitute.clamp(0, 1) * m


def diffuse_fill(images: torch.Tensor, keep: torch.Tensor, sigmas: tuple[float, ...]) -> torch.Tensor:
    """Colour grown from the kept pixels: ``blur(x*keep) / blur(keep)`` (normalised convolution).

    With several ``sigmas`` (fine to coarse) each pixel takes the finest scale
    that has enough kept pixels near it (weight above 0.05), the coarsest
    otherwise, so large holes fill from far away instead of going black.
    Scales above 4 px are computed on a pooled copy (same result up to
    interpolation, a small fraction of the cost). ``keep``: ``(B,1,H,W)`` in [0,1], 1 = kept.
    """
    size = images.shape[-2:]
    out = None
    for sigma in reversed(sigmas):  # coarse first; finer scales overwrite where they have support
        factor = max(1, int(sigma // 4))
        num, den = images * keep, keep
        if factor > 1:
            num, den = F.avg_pool2d(num, factor, ceil_mode=True), F.avg_pool2d(den, factor, ceil_mode=True)
        s = min(sigma / factor, (min(den.shape[-2:]) - 1) / 3)  # the blur's reflect padding must fit
        num, den = gaussian_blur(num, s), gaussian_blur(den, s)
        fill = num / den.clamp_min(1e-3)
        if factor > 1:
            fill, den = resize_maps(fill, size), resize_maps(den, size)
        out = fill if out is None else torch.where(den > 0.05, fill, out)
    assert out is not None
    return out


def top_fraction_mask(scores: torch.Tensor, fraction: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Each map's top ``fraction`` of pixels as a hard 0/1 mask, with a straight-through gradient.

    The forward value is the hard mask ROAD removes; the gradient is that of
    ``sigmoid((s - q) / (temperature * std(s)))``, ``q`` the map's cut value, so
    training moves the pixels near the cut in or out of the removed set.

    Args:
        scores: ``(B,1,h,w)`` map values (any monotone scale, e.g. logits).
        fraction: ``(B,)`` in (0,1), one per map.
    """
    flat = scores.flatten(1)
    n = flat.shape[1]
    k = (fraction.to(flat.device) * n).round().long().clamp(1, n)  # as ROAD counts: round(f*n)
    cut = flat.detach().sort(dim=1, descending=True).values.gather(1, (k - 1)[:, None])
    hard = (flat.detach() >= cut).to(flat.dtype)
    scale = temperature * flat.detach().std(dim=1, keepdim=True).clamp_min(1e-6)
    soft = torch.sigmoid((flat - cut) / scale)
    return (hard + soft - soft.detach()).view_as(scores)
