"""Changes to how an explainer's maps are made at inference, scored on ROAD and AD@100.

Each variant is a few tokens joined by "_": ``s<px>`` the side the auxiliary
sees (default: the explainer's), ``f`` averages the maps of the image and its
mirror image (two auxiliary passes), ``b<px>`` blurs the map (Gaussian sigma),
``m<px>`` also runs the auxiliary at that side and averages the normalised
maps (multi-scale; repeatable; see ``PTameExplainer(extra_aux_sizes=...)``).
Without ``m`` tokens every variant is single-pass, whatever the explainer's
own multi-scale setting.
``c<k>`` reads each map contrastively (shared-readout heads only): class c's
read-out weights minus the mean of the k classes the auxiliary scores highest
after c (``c0``: minus the auxiliary's softmax-weighted mean of all classes).
``x:<folder>`` scores another saved explainer's head, one pass like the
other variants (its own multi-scale setting is not applied). Every variant is
paired, image by image, with the first variant and with the methods of a finished ``glancemap evaluate`` run
on the same files (docs/results.md, "Why P-TAME still trails").

    python experiments/map_variants.py splits/dev.txt --paired-with runs/eval-efficientnet_lite2 \
        --variants s260,f,b8,b16,x:runs/other/explainer
    python experiments/map_variants.py splits/dev.txt --limit 48 --compare-fills
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from variant_scoring import faithfulness, load_images, paired_line, top1

from glancemap import load_explainer
from glancemap.evaluation import mean_and_se, read_results
from glancemap.explainer.head import SharedReadoutHead
from glancemap.explainer.perturbation import remove_regions
from glancemap.maps import gaussian_blur, minmax_normalize, resize_maps
from glancemap.metrics import relevance_order, removed_masks, telea_inpaint
from glancemap.models.classifier import find_linear_classifier


def contrastive_readout(explainer, targets: torch.Tensor, k: int):
    """``features -> (B,1,h,w)`` logits of a shared-readout head whose class weights are
    ``readout[c]`` minus the mean read-out of the auxiliary's top-``k`` other classes
    (``k = 0``: minus its softmax-weighted mean), all at the same auxiliary pass."""
    head = explainer.head
    if not isinstance(head, SharedReadoutHead):
        raise ValueError("contrastive read-out needs a shared-readout head")
    classifier = find_linear_classifier(explainer.auxiliary.model)

    def heads(features: list[torch.Tensor]) -> torch.Tensor:
        logits = classifier(features[-1].mean((2, 3)))
        if k == 0:
            others = logits.softmax(1) @ head.readout
        else:
            logits[torch.arange(len(targets)), targets] = float("-inf")
            others = head.readout[logits.topk(k, 1).indices].mean(1)
        return head.fuse_with(features, ((head.readout[targets] - others) @ head.projection).unsqueeze(1))

    return heads


def variant_maps(explainer, images: torch.Tensor, targets: torch.Tensor, tokens: str, batch: int) -> torch.Tensor:
    """``(N,1,H,W)`` maps in [0,1] of ``explainer`` made as ``tokens`` says."""
    size, flip, sigma, extra, contrast = explainer.features.input_size, False, 0.0, [], None
    for tok in filter(None, tokens.split("_")):
        if tok.startswith("c"):
            contrast = int(tok[1:])
        elif tok.startswith("m"):
            extra.append(int(tok[1:]))
        elif tok.startswith("s"):
            size = (int(tok[1:]),) * 2
        elif tok == "f":
            flip = True
        elif tok.startswith("b"):
            sigma = float(tok[1:])
        else:
            raise ValueError(f"unknown variant token {tok!r}")
    default_size = explainer.features.input_size
    explainer.features.input_size = size
    made = explainer.with_extra_aux_sizes(extra)
    try:
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch):
                x, t = images[i : i + batch], targets[i : i + batch]
                if contrast is None:
                    heads = lambda f, t=t: explainer.head(f, t, per_sample=True)  # noqa: E731
                else:
                    heads = contrastive_readout(explainer, t, contrast)
                if extra:  # each scale's map is normalised before the mean, as the explainer does
                    raw = made.multiscale_maps(x, x.shape[-2:], heads)
                    if flip:
                        raw = raw + made.multiscale_maps(x.flip(-1), x.shape[-2:], heads).flip(-1)
                else:
                    raw = resize_maps(heads(explainer.features(x)), x.shape[-2:])
                    if flip:
                        raw = raw + resize_maps(heads(explainer.features(x.flip(-1))), x.shape[-2:]).flip(-1)
                out.append(raw)
        maps = torch.cat(out)
        return minmax_normalize(gaussian_blur(maps, sigma) if sigma else maps)
    finally:
        explainer.features.input_size = default_size


@torch.no_grad()
def compare_fills(backbone, images: torch.Tensor, targets: torch.Tensor, maps: torch.Tensor, batch: int) -> None:
    """Top-1 agreement after removing each map's top 10/30/50%, filled by ROAD's Telea
    inpainting and by the two fills of our training removal terms."""
    fills = {
        "telea (ROAD)": telea_inpaint,
        "inpaint (rank_destroy)": lambda x, r: remove_regions(x, r[:, None].float(), "inpaint", 5.0),
        "blur (--destroy)": lambda x, r: remove_regions(x, r[:, None].float(), "blur", 5.0),
    }
    for fraction in (0.1, 0.3, 0.5):
        agree = {k: 0.0 for k in fills}
        for i in range(0, len(images), batch):
            x, t = images[i : i + batch], targets[i : i + batch]
            removed = removed_masks(relevance_order(maps[i : i + batch]), [fraction], tuple(x.shape[-2:]))[:, 0]
            for k, fill in fills.items():
                agree[k] += (backbone(fill(x, removed)).argmax(1) == t).sum().item()
        print(f"top {fraction:.0%} removed: " + ", ".join(f"{k} {v / len(images):.3f}" for k, v in agree.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", help="a .txt list of images (e.g. splits/dev.txt)")
    ap.add_argument("--explainer", default="default")
    ap.add_argument("--variants", default="", help="comma-separated, e.g. s260,f,b8")
    ap.add_argument("--paired-with", type=Path, help="a glancemap evaluate folder scored on the same files")
    ap.add_argument("--against", default="ptame,gradcam,gradcam++,scorecam", help="its methods to pair with")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=25)
    ap.add_argument(
        "--compare-fills",
        action="store_true",
        help="first check how closely the training fills track ROAD's Telea inpainting",
    )
    args = ap.parse_args()

    files = [line.strip() for line in open(args.files) if line.strip()][: args.limit]
    base = load_explainer(args.explainer)
    backbone = base.backbone
    images = load_images(backbone, files)
    b = args.batch_size
    targets = top1(backbone, images, b)
    reference = read_results(args.paired_with / "results.jsonl") if args.paired_with else {}

    if args.compare_fills:
        compare_fills(backbone, images, targets, variant_maps(base, images, targets, "", b), b)
    first = None
    for name in filter(None, args.variants.split(",")):
        explainer, tokens = base, name
        if name.startswith("x:"):
            explainer, tokens = load_explainer(name[2:], backbone=backbone), ""
        scores = faithfulness(backbone, images, variant_maps(explainer, images, targets, tokens, b), b)
        gap = scores["LeRF-MoRF"].tolist()
        line = (
            f"{name}: n {len(files)}, LeRF-MoRF {scores['LeRF-MoRF'].mean():.3f}, MoRF {scores['MoRF'].mean():.3f}, "
            f"AD@100 {scores['AD@100'].mean():.2f}"
        )
        for method in args.against.split(","):
            scored = reference.get(method, {})
            diffs = [g - scored[f]["ROAD LeRF-MoRF"] for g, f in zip(gap, files) if f in scored]
            if len(diffs) > 1:
                mean, se = mean_and_se(diffs)
                line += f" | LeRF-MoRF minus {method} {mean:+.3f} ± {se:.3f} (n {len(diffs)})"
        print(line, flush=True)
        print("  " + paired_line(f"{name} (minus {args.variants.split(',')[0]})", scores, first), flush=True)
        first = scores if first is None else first


if __name__ == "__main__":
    main()
