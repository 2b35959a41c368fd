"""Localization by the grid pointing game (Böhle et al., B-cos Networks, CVPR 2022; Rao et al., CVPR 2022).

n x n images of n^2 different classes, each of which the backbone classifies
confidently on its own, are tiled into one image at the backbone's input size.
Each cell's class is explained on the grid; a map that explains the backbone
should put its mass in that cell and stay low on the others. Per cell:

- **mass share**: the share of the map's positive mass inside the cell;
- **top-area share**: the share of the map's top 1/n^2 of pixels that lie in
  the cell (unchanged by any monotone rescaling of the map, so it cannot be
  won by post-processing alone);
- **pointing hit**: 1 if the map's maximum lies in the cell.

A uniform map scores 1/n^2 on the first two. Ties are broken by the same
seeded pixel order as the faithfulness metrics.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .metrics import relevance_order


def cell_masks(n: int, size: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """``(n*n, H, W)`` bool masks of the cells of an n x n grid, row by row; uneven sides give the
    last row and column the remainder."""
    h, w = size
    rows = torch.arange(h, device=device) * n // h
    cols = torch.arange(w, device=device) * n // w
    index = rows[:, None] * n + cols[None, :]
    return index[None] == torch.arange(n * n, device=device)[:, None, None]


def tile(images: torch.Tensor, n: int, size: tuple[int, int]) -> torch.Tensor:
    """``(n*n, 3, H', W')`` images in [0,1] -> one ``(3, H, W)`` grid image at ``size``, cell by cell
    as :func:`cell_masks` lays them out (each image resized to its cell, antialiased)."""
    if images.shape[0] != n * n:
        raise ValueError(f"an {n}x{n} grid needs {n * n} images, got {images.shape[0]}")
    h, w = size
    edges_y = [i * h // n for i in range(n + 1)]
    edges_x = [j * w // n for j in range(n + 1)]
    grid = images.new_zeros(3, h, w)
    for k in range(n * n):
        i, j = divmod(k, n)
        ch, cw = edges_y[i + 1] - edges_y[i], edges_x[j + 1] - edges_x[j]
        cell = F.interpolate(images[k : k + 1], size=(ch, cw), mode="bilinear", align_corners=False, antialias=True)
        grid[:, edges_y[i] : edges_y[i + 1], edges_x[j] : edges_x[j + 1]] = cell[0].clamp(0, 1)
    return grid


@torch.no_grad()
def grid_localization(maps: torch.Tensor, cells: torch.Tensor, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Mass share, top-area share and pointing hit of each map for its cell.

    Args:
        maps: ``(B,1,H,W)`` maps on grid images (any scale; negative values count as no mass).
        cells: ``(B,)`` the cell (row-major, ``0 .. n*n-1``) whose class each map explains.
        n: the grid's side in cells.
        seed: tie-breaking of the pixel ranking.

    Returns ``{"mass share", "top-area share", "pointing hit"}``, each ``(B,)`` in [0,1].
    """
    if maps.ndim != 4 or maps.shape[1] != 1:
        raise ValueError(f"maps must be (B,1,H,W), got {tuple(maps.shape)}")
    b, _, h, w = maps.shape
    masks = cell_masks(n, (h, w), maps.device)[cells.to(maps.device)].flatten(1)  # (B, H*W)
    flat = maps.flatten(1).float()
    positive = flat.clamp_min(0)
    total = positive.sum(1)
    mass = torch.where(total > 0, (positive * masks).sum(1) / total.clamp_min(1e-12), torch.zeros_like(total))
    order = relevance_order(maps, seed)
    k = max(1, round(h * w / (n * n)))
    top = masks.gather(1, order[:, :k]).float().mean(1)
    hit = masks.gather(1, order[:, :1]).float()[:, 0]
    return {"mass share": mass, "top-area share": top, "pointing hit": hit}


@dataclass(frozen=True)
class Grid:
    """One grid: its images (row-major) and the class of each cell."""

    files: tuple[str, ...]
    classes: tuple[int, ...]


def plan_grids(confident: Sequence[tuple[str, int]], n: int, seed: int = 0) -> list[Grid]:
    """Deterministic grids of n*n images of different classes from ``(file, class)`` pairs.

    The pairs are shuffled with ``seed``; each grid takes, in that order, the first images whose
    classes it does not hold yet. An image is used once; what cannot fill a last grid is left out.
    """
    if n < 2:
        raise ValueError(f"a grid needs n >= 2, got {n}")
    remaining = sorted(confident)
    random.Random(seed).shuffle(remaining)
    grids = []
    while True:
        cells: list[tuple[str, int]] = []
        rest = []
        for file, cls in remaining:
            if len(cells) < n * n and all(c != cls for _, c in cells):
                cells.append((file, cls))
            else:
                rest.append((file, cls))
        if len(cells) < n * n:
            return grids
        grids.append(Grid(tuple(f for f, _ in cells), tuple(c for _, c in cells)))
        remaining = rest
