"""Would a teacher made of two maps be worth imitating? Scores blends of an explainer's maps and a
gradient CAM of the backbone, paired against the explainer's own maps, on the same images.

Blends (both maps min-max normalised first): ``mean`` (a + b) / 2, ``geo`` sqrt(a * b), ``max``.

    python experiments/ensemble_teacher_check.py splits/rin9_train.txt --explainer runs/rin9_start/explainer
"""

from __future__ import annotations

import argparse

import torch
from variant_scoring import faithfulness, load_images, maps_in_batches, paired_line, top1

from glancemap.explainer import load_explainer
from glancemap.images import list_images
from glancemap.maps import minmax_normalize
from glancemap.methods import MethodContext, create_method

BLENDS = {
    "mean": lambda a, b: (a + b) / 2,
    "geo": lambda a, b: (a * b).sqrt(),
    "max": torch.maximum,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="+")
    p.add_argument("--explainer", required=True)
    p.add_argument("--method", default="gradcam", help="the backbone's CAM to blend with (registered name)")
    p.add_argument("--batch", type=int, default=16)
    a = p.parse_args()
    explainer = load_explainer(a.explainer, device="cpu").eval()
    images = load_images(explainer.backbone, list_images(a.data))
    targets = top1(explainer.backbone, images, a.batch)
    ours = minmax_normalize(maps_in_batches(explainer, images, targets, a.batch))
    base = faithfulness(explainer.backbone, images, ours, a.batch)
    print(paired_line(f"explainer ({len(images)} images)", base, None), flush=True)
    cam = create_method(a.method, MethodContext(explainer.backbone))

    def cam_maps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():  # a gradient CAM, inside maps_in_batches' no_grad
            return cam.explain(x, t)

    theirs = minmax_normalize(maps_in_batches(cam_maps, images, targets, a.batch))
    print(paired_line(a.method, faithfulness(explainer.backbone, images, theirs, a.batch), base), flush=True)
    for name, blend in BLENDS.items():
        print(
            paired_line(name, faithfulness(explainer.backbone, images, blend(ours, theirs), a.batch), base), flush=True
        )


if __name__ == "__main__":
    main()
