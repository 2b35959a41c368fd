"""Why training drifts on a coarse label set: what the backbone says when the evidence is gone (docs/experiments.md).

    python experiments/coarse_label_prior.py splits/rin9_train.txt [--backbone restricted_imagenet9]

For the backbone's top-1 class on each image, prints how many images each class has, the
class distribution on content-free images (black, grey, white), the share of images per
class whose top-1 survives keeping only a centred square of 5% of the image (the rest
black, as the preservation term masks), and the target's probability and top-1 survival
after the whole image is blurred at several sigmas (the removal term at a map of ones).
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch

from glancemap.explainer.perturbation import remove_regions
from glancemap.images import list_images, load_image
from glancemap.models import load_classifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="+")
    ap.add_argument("--backbone", default="restricted_imagenet9")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    model = load_classifier(args.backbone).eval()
    names = model.class_names
    transform = model.preprocessing.eval_transform()
    files = list_images(args.data)
    batches = [
        torch.stack([transform(load_image(f)) for f in files[i : i + args.batch_size]])
        for i in range(0, len(files), args.batch_size)
    ]
    with torch.no_grad():
        targets = [model(x).argmax(1) for x in batches]
        t = torch.cat(targets)
        counts = {names[k]: int((t == k).sum()) for k in t.unique().tolist()}
        shown = counts if len(counts) <= 12 else f"{len(counts)} distinct classes"
        print(f"{model.name}: {len(files)} images, top-1 classes {shown}")

        h, w = model.input_size
        for label, value in (("black", 0.0), ("grey", 0.5), ("white", 1.0)):
            p = model(torch.full((1, 3, h, w), value)).softmax(1)[0]
            top = p.argsort(descending=True)[:3].tolist()
            print(f"  {label} image: " + ", ".join(f"{names[k]} {p[k]:.3f}" for k in top))

        side = round(math.sqrt(0.05) * h), round(math.sqrt(0.05) * w)
        keep = torch.zeros(1, 1, h, w)
        keep[..., (h - side[0]) // 2 : (h + side[0]) // 2, (w - side[1]) // 2 : (w + side[1]) // 2] = 1
        kept = torch.cat([(model(x * keep).argmax(1) == tt).float() for x, tt in zip(batches, targets)])
        print(f"  top-1 kept with a central 5% square: {float(kept.mean()):.2f} of all images")
        if len(counts) <= 12:
            for k in t.unique().tolist():
                share = float(kept[t == k].mean())
                print(f"    {names[k]}: {share:.2f} (n {int((t == k).sum())})")

        for sigma in (5.0, 10.0, 20.0, 40.0):
            probs, survived = [], []
            for x, tt in zip(batches, targets):
                q = model(remove_regions(x, torch.ones(x.shape[0], 1, 8, 8), sigma=sigma)).softmax(1)
                probs += q.gather(1, tt[:, None]).squeeze(1).tolist()
                survived += (q.argmax(1) == tt).float().tolist()
            removal = statistics.mean(-math.log(max(1 - p, 1e-6)) for p in probs)
            print(
                f"  whole image blurred, sigma {sigma:g}: target p {statistics.mean(probs):.3f}, top-1 kept "
                f"{statistics.mean(survived):.3f}, removal term {removal:.3f}"
            )


if __name__ == "__main__":
    main()
