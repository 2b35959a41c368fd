"""Strictly monotone displays of an explainer's maps: how much of the grid floor is display.

An explainer's map is min-max normalised logits; raising it to a power ``g > 1`` darkens the
low values and keeps the order of every pixel, so the rank-only scores (top-area share,
pointing hit, ROAD) cannot move and only the value-reading ones (mass share, Average Drop) can.
Each explainer is scored on the grid pointing game (grids from ``files`` as ``glancemap
evaluate --grid 2`` builds them) and on AD@100 and AD@50 on the ``files`` themselves (ROAD
too, for the first power only, since it reads ranks), paired with its own first power.

    python experiments/map_display.py splits/dev.txt --explainers default,runs/in_start/explainer \\
        --powers 1,2,3,4,6
"""

from __future__ import annotations

import argparse

import torch
from variant_scoring import faithfulness, grid_cells, grid_scores, load_images, paired_line

from glancemap import load_explainer
from glancemap.images import list_images


@torch.no_grad()
def maps_of(explainer, images: torch.Tensor, targets: torch.Tensor, batch: int) -> torch.Tensor:
    """The explainer's own maps ``(N,1,H,W)`` in [0,1], batch by batch."""
    return torch.cat([explainer(images[i : i + batch], targets[i : i + batch]) for i in range(0, len(images), batch)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", help="a .txt list of images (e.g. splits/dev.txt)")
    ap.add_argument("--explainers", default="default", help="comma-separated names or folders")
    ap.add_argument("--powers", default="1,2,3,4,6")
    ap.add_argument("--faithfulness-limit", type=int, default=None, help="score AD on the first N images only")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    torch.manual_seed(0)
    powers = [float(p) for p in args.powers.split(",")]
    files = list_images([args.files])
    backbone = None
    for name in args.explainers.split(","):
        explainer = load_explainer(name, device="cpu", backbone=backbone)
        backbone, b = explainer.backbone, args.batch_size
        grid = grid_cells(backbone, files)
        grid_maps = maps_of(explainer, grid.images, grid.targets, b)
        images = load_images(backbone, files[: args.faithfulness_limit])
        targets = torch.cat([backbone(images[i : i + b]).argmax(1) for i in range(0, len(images), b)])
        maps = maps_of(explainer, images, targets, b)
        base = None
        for g in powers:
            scores = grid_scores(grid_maps**g, grid)
            scores |= faithfulness(backbone, images, maps**g, b, with_road=base is None)
            label = f"{name} ^{g:g} ({len(grid.cells)} cells, {len(images)} images)"
            print(paired_line(label, scores, base), flush=True)
            base = base or scores


if __name__ == "__main__":
    main()
