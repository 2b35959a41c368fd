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
import torch.nn.functional as F

from glancemap import load_explainer
from glancemap.evaluation import mean_and_se
from glancemap.evaluation.grid import GridConfig, grid_image, grids_for
from glancemap.images import list_images, load_image
from glancemap.localization import grid_localization
from glancemap.maps import minmax_normalize
from glancemap.metrics import confidence_change, road


def stage_parts(head, features: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The class maps' logits ``(B,1,h,w)`` split into the last stage's part and the other stages' sum."""
    weight, bias = head.class_weights(targets)
    size = features[0].shape[-2:]
    parts, start = [], 0
    for block, feat in zip(head.blocks, features):
        c = feat.shape[1]
        p = torch.einsum("bchw,bc->bhw", block(feat), weight[:, start : start + c]).unsqueeze(1)
        start += c
        parts.append(F.interpolate(p, size=size, mode="bilinear", align_corners=False) if p.shape[-2:] != size else p)
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


@torch.no_grad()
def faithfulness(explainer, images: torch.Tensor, variant: str, batch: int) -> dict[str, torch.Tensor]:
    """Per image ROAD LeRF-MoRF and AD@100 of ``variant``'s maps for the backbone's top-1."""
    backbone = explainer.backbone
    clean = torch.cat([backbone(images[i : i + batch]).softmax(1) for i in range(0, len(images), batch)])
    targets = clean.argmax(1)
    maps = variant_maps(explainer, images, targets, variant, batch)
    gap, drop = [], []
    for i in range(0, len(images), batch):
        sl = slice(i, i + batch)
        r = road(backbone, images[sl], maps[sl], targets=targets[sl])
        gap.append(r["lerf_auc"] - r["morf_auc"])
        drop.append(confidence_change(backbone, images[sl], maps[sl], 1.0, clean_probs=clean[sl])["drop"])
    return {"LeRF-MoRF": torch.cat(gap).float(), "AD@100": torch.cat(drop).float()}


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
    config = GridConfig()
    grids = grids_for(backbone, files, config)
    n = config.n
    grid_images = torch.stack([grid_image(g, backbone, n) for g in grids]).repeat_interleave(n * n, 0)
    grid_targets = torch.tensor([c for g in grids for c in g.classes])
    cells = torch.arange(n * n).repeat(len(grids))

    transform = backbone.preprocessing.eval_transform()
    faithful_files = files[: args.faithfulness_limit]
    images = torch.stack([transform(load_image(f)) for f in faithful_files]) if faithful_files else None

    scores: dict[str, dict[str, torch.Tensor]] = {}
    for variant in args.variants.split(","):
        loc = grid_localization(variant_maps(explainer, grid_images, grid_targets, variant, b), cells, n, config.seed)
        scores[variant] = {k: v.float() for k, v in loc.items()}
        if images is not None:
            scores[variant] |= faithfulness(explainer, images, variant, b)
        base = scores[args.variants.split(",")[0]]
        line = f"{variant}: {len(cells)} cells, {len(faithful_files)} images |"
        for k, v in scores[variant].items():
            line += f" {k} {v.mean():.3f}"
            if variant != args.variants.split(",")[0]:
                mean, se = mean_and_se((v - base[k]).tolist())
                line += f" ({mean:+.3f} ± {se:.3f})"
            line += ","
        print(line.rstrip(","), flush=True)


if __name__ == "__main__":
    main()
