"""Shared scoring for the experiments that change how an explainer's maps are made.

Each experiment makes maps its own way; this module scores them the same way everywhere: the
grid pointing game on grids built exactly as ``glancemap evaluate --grid 2`` builds them, and
ROAD and Average Drop on single images, per cell or per image so variants can be paired.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from glancemap.evaluation import mean_and_se
from glancemap.evaluation.grid import GridConfig, cell_batch, grids_for
from glancemap.images import load_image
from glancemap.localization import grid_localization
from glancemap.metrics import confidence_change, road


@dataclass
class GridCells:
    """Every cell of the grids made from some images: its grid image, its class and its index."""

    images: torch.Tensor  # (N,3,H,W): each grid repeated once per cell
    targets: torch.Tensor  # (N,)
    cells: torch.Tensor  # (N,)
    config: GridConfig


def grid_cells(backbone, files: Sequence[Path], config: GridConfig | None = None) -> GridCells:
    """The cells of the grids ``config`` (default: ``evaluate --grid 2``'s) builds from ``files``."""
    config = config or GridConfig()
    return GridCells(*cell_batch(grids_for(backbone, files, config), backbone, config.n), config)


def grid_scores(maps: torch.Tensor, grid: GridCells) -> dict[str, torch.Tensor]:
    """Per cell mass share, top-area share and pointing hit of ``maps`` ``(N,1,H,W)``."""
    scores = grid_localization(maps, grid.cells, grid.config.n, grid.config.seed)
    return {k: v.float() for k, v in scores.items()}


def load_images(backbone, files: Sequence[Path]) -> torch.Tensor:
    """``files`` as the backbone's evaluation transform makes them, ``(N,3,H,W)`` in [0,1]."""
    transform = backbone.preprocessing.eval_transform()
    return torch.stack([transform(load_image(f)) for f in files])


@torch.no_grad()
def top1(backbone, images: torch.Tensor, batch: int) -> torch.Tensor:
    """The backbone's top-1 class of each image ``(N,)``, batch by batch."""
    return torch.cat([backbone(images[i : i + batch]).argmax(1) for i in range(0, len(images), batch)])


@torch.no_grad()
def maps_in_batches(make_maps, images: torch.Tensor, targets: torch.Tensor, batch: int) -> torch.Tensor:
    """``make_maps(images, targets) -> (b,1,H,W)`` over all images ``(N,...)``, batch by batch."""
    return torch.cat([make_maps(images[i : i + batch], targets[i : i + batch]) for i in range(0, len(images), batch)])


@torch.no_grad()
def faithfulness(
    backbone, images: torch.Tensor, maps: torch.Tensor, batch: int, with_road: bool = True
) -> dict[str, torch.Tensor]:
    """Per image AD@100 and AD@50 and (``with_road``) ROAD MoRF and LeRF-MoRF of ``maps`` for the
    backbone's top-1, scored as ``glancemap evaluate`` scores them."""
    kept = {"AD@100": 1.0, "AD@50": 0.5}
    out: dict[str, list[torch.Tensor]] = {k: [] for k in kept}
    if with_road:
        out |= {"MoRF": [], "LeRF-MoRF": []}
    for i in range(0, len(images), batch):
        x, m = images[i : i + batch], maps[i : i + batch]
        clean = backbone(x).softmax(1)
        for name, keep in kept.items():
            out[name].append(confidence_change(backbone, x, m, keep, clean)["drop"])
        if with_road:
            r = road(backbone, x, m, targets=clean.argmax(1))
            out["MoRF"].append(r["morf_auc"])
            out["LeRF-MoRF"].append(r["lerf_auc"] - r["morf_auc"])
    return {k: torch.cat(v).float() for k, v in out.items()}


def paired_line(name: str, scores: dict[str, torch.Tensor], base: dict[str, torch.Tensor] | None) -> str:
    """``name: metric mean (minus base, mean ± s.e.), ...`` over the metrics both have."""
    parts = []
    for k, v in scores.items():
        text = f"{k} {v.mean():.3f}"
        if base is not None and k in base:
            mean, se = mean_and_se((v - base[k]).tolist())
            text += f" ({mean:+.3f} ± {se:.3f})"
        parts.append(text)
    return f"{name}: " + ", ".join(parts)
