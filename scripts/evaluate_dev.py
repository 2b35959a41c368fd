"""AD / IC at 100, 50 and 15% kept on the ImageNet sample's dev split (index % 5 == 0).

Compares saved explainers with a centred Gaussian and with the untrained
starting point of our recipe (the auxiliary's calibrated CAM), all on the same
backbone and images:

    python scripts/evaluate_dev.py ../shared/data/imagenet-sample --explainer default runs/paper/explainer
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ptame import load_explainer  # noqa: E402
from ptame.baselines import CenteredGaussian  # noqa: E402
from ptame.metrics import confidence_change  # noqa: E402
from ptame.training import TrainConfig, build_explainer, imagenet_sample_split, load_image  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--explainer", nargs="*", default=["default"])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=25)
    args = ap.parse_args()
    files = imagenet_sample_split(args.root, "dev")[: args.limit]
    first = load_explainer(args.explainer[0])
    backbone = first.backbone
    # later explainers share the first one's networks (load_explainer checks they match)
    methods = {args.explainer[0]: first} | {
        name: load_explainer(name, backbone=backbone, auxiliary=first.auxiliary) for name in args.explainer[1:]
    }
    cfg = TrainConfig(data=[], out="", backbone=backbone.name, auxiliary=first.auxiliary.name)
    methods["aux CAM (our untrained init)"] = build_explainer(
        cfg, torch.device("cpu"), imagenet_sample_split(args.root, "train")
    )
    methods["centred Gaussian"] = CenteredGaussian()
    transform = backbone.preprocessing.eval_transform()
    keeps = (1.0, 0.5, 0.15)
    sums = {m: {k: [0.0, 0.0] for k in keeps} for m in methods}
    n = 0
    for i in range(0, len(files), args.batch_size):
        images = torch.stack([transform(load_image(f)) for f in files[i : i + args.batch_size]])
        n += len(images)
        with torch.no_grad():
            clean = backbone(images).softmax(dim=1)
        for name, method in methods.items():
            maps = method(images)
            for k in keeps:
                out = confidence_change(backbone, images, maps, keep=k, clean_probs=clean)
                sums[name][k][0] += out["drop"].sum().item()
                sums[name][k][1] += out["increase"].sum().item()
        print(f"{n}/{len(files)}", file=sys.stderr)
    print(f"backbone {backbone.name}, {n} dev images")
    print(f"{'method':36s}" + "".join(f"  AD@{int(k * 100):<3d} IC@{int(k * 100):<3d}" for k in keeps))
    for name, s in sums.items():
        print(f"{name:36s}" + "".join(f"  {s[k][0] / n:6.2f} {s[k][1] / n:6.2f}" for k in keeps))


if __name__ == "__main__":
    main()
