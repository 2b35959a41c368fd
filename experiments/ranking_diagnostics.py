"""Why P-TAME's ROAD/deletion scores track the auxiliary CAM's (docs/results.md, "Why").

1. Spearman rank correlation between P-TAME, auxiliary-CAM and Grad-CAM maps.
2. ROAD of P-TAME's maps as they are, pooled to Grad-CAM's 9x9 grid, and blurred
   (sigma 8 px): does map resolution explain the MoRF gap?

    python experiments/ranking_diagnostics.py ../shared/data/imagenet-sample --explainer default --images 96
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from sample_split import imagenet_sample_split

from glancemap import load_explainer
from glancemap.images import load_image
from glancemap.maps import gaussian_blur
from glancemap.methods import AuxiliaryCAM, GradCamMethod
from glancemap.metrics import road
from glancemap.sanity import spearman


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--explainer", default="default")
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    ex = load_explainer(args.explainer)
    bb = ex.backbone
    files = imagenet_sample_split(args.root, "dev")[: args.images]
    transform = bb.preprocessing.eval_transform()
    aux_cam, grad_cam = AuxiliaryCAM(bb, ex.auxiliary), GradCamMethod(bb, "gradcam")
    variants = {
        "as is": lambda m: m,
        "pooled to 9x9": lambda m: F.interpolate(
            F.adaptive_avg_pool2d(m, 9), size=m.shape[-2:], mode="bilinear", align_corners=False
        ),
        "blurred, sigma 8 px": lambda m: gaussian_blur(m, 8.0),
    }
    rho: dict[str, list[torch.Tensor]] = {"P-TAME vs aux CAM": [], "P-TAME vs Grad-CAM": [], "aux CAM vs Grad-CAM": []}
    gaps: dict[str, list[torch.Tensor]] = {k: [] for k in variants}
    for i in range(0, len(files), args.batch_size):
        x = torch.stack([transform(load_image(f)) for f in files[i : i + args.batch_size]])
        with torch.no_grad():
            t = bb(x).argmax(1)
        p, a, g = ex(x, t), aux_cam(x, t), grad_cam(x, t)
        for key, (u, v) in zip(rho, [(p, a), (p, g), (a, g)]):
            rho[key].append(spearman(u, v))
        for key, fn in variants.items():
            r = road(bb, x, fn(p), targets=t)
            gaps[key].append(torch.stack([r["morf_auc"], r["lerf_auc"]], 1))
    n = len(files)
    print(f"{n} dev images, backbone {bb.name}")
    for key, vals in rho.items():
        v = torch.cat(vals)
        print(f"Spearman {key:22s} {v.mean():.3f} ± {v.std() / math.sqrt(n):.3f}")
    for key, vals in gaps.items():
        v = torch.cat(vals)
        d = v[:, 1] - v[:, 0]
        print(
            f"ROAD of P-TAME maps {key:20s} MoRF {v[:, 0].mean():.3f}  LeRF {v[:, 1].mean():.3f}  "
            f"LeRF-MoRF {d.mean():.3f} ± {d.std() / math.sqrt(n):.3f}"
        )


if __name__ == "__main__":
    main()
