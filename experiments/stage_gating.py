"""Ways of combining a trained head's deep and shallow stages, scored on grids and on faithfulness.

The head's map is a sum of per-stage projections. The shallow stages add evidence that lights up
every object (docs/experiments.md, "Where the grid floor sits"); these variants let the class's
deep map decide where shallow evidence may count, with no retraining:

- ``sum``: the head as trained (deep + shallow);
- ``deep``: the last stage alone;
- ``gate<k>``: deep + shallow * sigmoid(k * z), z the deep map standardised per map;
- ``mul``: minmax(deep) * minmax(deep + shallow);
- ``relu``: deep + shallow clipped at zero (a display change, as the auxiliary CAM's ReLU).

Each variant runs at the explainer's auxiliary sides (multi-scale as shipped) and is scored on the
grid pointing game (grids from ``files`` as ``glancemap evaluate --grid 2`` builds them) and on
ROAD LeRF-MoRF and AD@100 on the ``files`` themselves, paired with ``sum``.

    python experiments/stage_gating.py splits/dev.txt --variants sum,deep,gate1,gate3,mul
"""

from __future__ import annotations

import argparse

import torch
from variant_scoring import faithfulness, grid_cells, grid_scores, load_images, paired_line, top1

from glancemap import load_explainer
from glancemap.images import list_images
from glancemap.maps import minmax_normalize


def stage_parts(head, features: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The class maps' logits ``(B,1,h,w)`` split into the last stage's part and the other stages' sum."""
    weight, bias = head.class_weights(targets)
    parts = head.stage_maps(features, weight.unsqueeze(1))
    deep = parts[-1] if bias is None else parts[-1] + bias.view(-1, 1, 1, 1)
    return deep, sum(parts[:-1])


def combine(deep: torch.Tensor, shallow: torch.Tensor, variant: str) -> torch.Tensor:
    if variant == "sum":
        return deep + shallow
    if variant == "deep":
        return deep
    if variant == "relu":
        return (deep + shallow).relu()
    if variant.startswith("gate"):
        flat = deep.flatten(1)
        z = (deep - flat.mean(1).view(-1, 1, 1, 1)) / (flat.std(1).view(-1, 1, 1, 1) + 1e-8)
        return deep + shallow * torch.sigmoid(float(variant[4:]) * z)
    if variant == "mul":
        return minmax_normalize(deep) * minmax_normalize(deep + shallow)
    raise ValueError(f"unknown variant {variant!r}")


@torch.no_grad()
def variant_maps(explainer, images: torch.Tensor, targets: torch.Tensor, variant: str, batch: int) -> torch.Tensor:
    out = []
    for i in range(0, len(images), batch):
        x, t = images[i : i + batch], targets[i : i + batch]
        heads = lambda f, t=t: combine(*stage_parts(explainer.head, f, t), variant)  # noqa: E731
        out.append(explainer.multiscale_maps(x, x.shape[-2:], heads))
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", help="a .txt list of images (e.g. splits/dev.txt)")
    ap.add_argument("--explainer", default="default")
    ap.add_argument("--variants", default="sum,deep,gate1,gate3,mul")
    ap.add_argument("--faithfulness-limit", type=int, default=None, help="score ROAD on the first N images only")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    torch.manual_seed(0)
    explainer = load_explainer(args.explainer, device="cpu")
    backbone, b = explainer.backbone, args.batch_size
    files = list_images([args.files])
    grid = grid_cells(backbone, files)
    faithful_files = files[: args.faithfulness_limit]
    images = load_images(backbone, faithful_files) if faithful_files else None
    targets = None if images is None else top1(backbone, images, b)

    variants = args.variants.split(",")
    base = None
    for variant in variants:
        scores = grid_scores(variant_maps(explainer, grid.images, grid.targets, variant, b), grid)
        if images is not None:
            scores |= faithfulness(backbone, images, variant_maps(explainer, images, targets, variant, b), b)
        print(
            paired_line(f"{variant} ({len(grid.cells)} cells, {len(faithful_files)} images)", scores, base), flush=True
        )
        base = base or scores


if __name__ == "__main__":
    main()
