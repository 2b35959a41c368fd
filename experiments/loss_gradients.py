"""How hard each loss term pulls on the head: the norm of each weighted term's gradient.

Runs one training step's forward pass (``glancemap.training.training_step``, the
trainer's own code) on a batch of training crops with an explainer's head,
and prints each term's value, weight and the norm of the gradient of
``weight * term`` with respect to the head's trainable weights.

    python experiments/loss_gradients.py splits/train.txt [--explainer default] [--images 16]
        [--destroy 3] [--rank-destroy 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from glancemap import load_explainer  # noqa: E402
from glancemap.explainer import LossWeights, PTameLoss  # noqa: E402
from glancemap.images import list_images, load_image  # noqa: E402
from glancemap.training import training_step  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="+", help="training images (files, folders or .txt lists)")
    ap.add_argument("--explainer", default="default")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--destroy", type=float, default=3.0)
    ap.add_argument("--rank-destroy", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    explainer = load_explainer(args.explainer).train()
    crop = explainer.backbone.preprocessing.train_transform()
    images = torch.stack([crop(load_image(f)) for f in list_images(args.data)[: args.images]])
    weights = LossWeights(destroy=args.destroy, rank_destroy=args.rank_destroy)
    _, terms = training_step(explainer, explainer.head, images, PTameLoss(weights))
    params = [p for p in explainer.head.parameters() if p.requires_grad]
    print(f"explainer {args.explainer}, {len(images)} training crops, seed {args.seed}")
    for name in ("ce", "area", "tv", "destroy", "rank_destroy"):
        weight = getattr(weights, name)
        if not weight:
            continue
        grads = torch.autograd.grad(weight * terms[name], params, retain_graph=True, allow_unused=True)
        norm = torch.sqrt(sum((g**2).sum() for g in grads if g is not None))
        print(f"  {name:13s} value {terms[name].item():8.4f}  weight {weight:6g}  |grad| {norm.item():8.4g}")


if __name__ == "__main__":
    main()
