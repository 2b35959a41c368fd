"""Would a perturbation teacher be worth imitating? Scores cheap forward-pass-only maps beside an explainer.

For each image and its backbone top-1 ``t``, an *auxiliary Score-CAM*: the ``k`` channels of the
auxiliary's last features that add most to the readout's logit of ``t`` (``w[t,c] * mean A_c``) each
mask the image (the channel upsampled and min-max normalised), the backbone scores ``t`` on each
masked image, and the map is ``ReLU(sum_c score_c * A_c)``: ``k`` backbone passes per map, no
gradients. Printed per variant, paired against the explainer's own maps, on the same images.

    python experiments/teacher_check.py splits/rin9_dev.txt --explainer runs/rin9_start/explainer --k 16 64
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from variant_scoring import faithfulness, load_images, maps_in_batches, paired_line, top1

from glancemap.explainer import load_explainer
from glancemap.images import list_images
from glancemap.maps import minmax_normalize, resize_maps


@torch.no_grad()
def aux_scorecam(explainer, images: torch.Tensor, targets: torch.Tensor, k: int, batch: int = 32) -> torch.Tensor:
    """``(B,1,H,W)`` maps in [0,1]; ``k`` backbone passes per image."""
    last = explainer.features(images)[-1]  # (B,D,h,w)
    readout = explainer.head.readout  # (K,D)
    contribution = readout[targets] * last.mean((2, 3))  # (B,D)
    top = contribution.topk(k, dim=1).indices  # (B,k)
    out = []
    for img, t, chans, feats in zip(images, targets, top, last):
        acts = feats[chans].unsqueeze(1)  # (k,1,h,w)
        masks = minmax_normalize(resize_maps(acts, images.shape[-2:]))
        scores = torch.cat(
            [explainer.backbone(img.unsqueeze(0) * masks[i : i + batch]).softmax(1)[:, t] for i in range(0, k, batch)]
        )
        cam = F.relu((scores[:, None, None] * acts[:, 0]).sum(0, keepdim=True))
        out.append(cam)
    return minmax_normalize(resize_maps(torch.stack(out), images.shape[-2:]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="+")
    p.add_argument("--explainer", required=True)
    p.add_argument("--k", type=int, nargs="+", default=[16, 64])
    p.add_argument("--batch", type=int, default=16)
    a = p.parse_args()
    torch.set_grad_enabled(False)
    explainer = load_explainer(a.explainer, device="cpu").eval()
    images = load_images(explainer.backbone, list_images(a.data))
    targets = top1(explainer.backbone, images, a.batch)
    maps = maps_in_batches(explainer, images, targets, a.batch)
    base = faithfulness(explainer.backbone, images, maps, a.batch)
    print(paired_line(f"explainer ({len(images)} images)", base, None), flush=True)
    for k in a.k:
        t0 = time.perf_counter()
        teacher = maps_in_batches(lambda x, t, k=k: aux_scorecam(explainer, x, t, k), images, targets, a.batch)
        sec = (time.perf_counter() - t0) / len(images)
        scores = faithfulness(explainer.backbone, images, teacher, a.batch)
        print(paired_line(f"aux Score-CAM k={k} ({sec:.2f} s/map)", scores, base), flush=True)


if __name__ == "__main__":
    main()
