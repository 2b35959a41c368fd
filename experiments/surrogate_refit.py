"""Does refitting the gradient-free surrogate make it agree better with the black box? (docs/experiments.md)

    python experiments/surrogate_refit.py --fit splits/train.txt --test splits/dev.txt [--explainer default]

The surrogate of gradient-free training is the auxiliary read through a linear
readout, refitted to the black box's outputs on the masked images of training
(:class:`glancemap.training.surrogate.Surrogate`). This script builds the kind of
images it is refitted on, from the ``--fit`` images: each a training crop, clean,
multiplied by the explainer's map of the backbone's top-1 ("soft"), and with only
the map's top 30% kept ("hard"). It hands them to a surrogate started from the
explainer's readout, as training does (`query`, then `refit`), and scores its
top-1 agreement with the backbone on the same three kinds of images made from the
``--test`` images, before and after the refit, and after a refit whose ridge pulls the
weights towards zero instead of towards the start (the refit before it was changed). The backbone here is the PyTorch
one: the same outputs as the exported file within 2e-6 (docs/results.md).
"""

from __future__ import annotations

import argparse
import copy

import torch

from glancemap import load_explainer
from glancemap.images import list_images, load_image
from glancemap.training.readout import Readout
from glancemap.training.surrogate import MEMORY, Surrogate

KINDS = ("clean", "soft", "hard")


@torch.no_grad()
def masked_views(explainer, files, crops: int, batch_size: int = 16) -> list[dict[str, torch.Tensor]]:
    """Batches of ``{kind: images}``, ``crops`` training crops per file."""
    transform = explainer.backbone.preprocessing.train_transform((0.25, 1.0))
    out = []
    todo = [f for f in files for _ in range(crops)]
    for i in range(0, len(todo), batch_size):
        x = torch.stack([transform(load_image(f)) for f in todo[i : i + batch_size]])
        m = explainer(x, explainer.backbone.predict(x)[0])
        top = (m >= m.flatten(1).quantile(0.7, dim=1)[:, None, None, None]).float()
        out.append({"clean": x, "soft": x * m, "hard": x * top})
    return out


@torch.no_grad()
def agreement(surrogate: Surrogate, batches, backbone) -> dict[str, float]:
    hits = {k: 0 for k in KINDS}
    count = 0
    for batch in batches:
        for k in KINDS:
            hits[k] += (surrogate(batch[k]).argmax(1) == backbone(batch[k]).argmax(1)).sum().item()
        count += len(batch["clean"])
    return {k: hits[k] / count for k in KINDS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit", nargs="+", required=True)
    ap.add_argument("--test", nargs="+", required=True)
    ap.add_argument("--explainer", default="default")
    ap.add_argument("--crops", type=int, default=2, help="training crops per --fit image")
    args = ap.parse_args()
    torch.manual_seed(0)
    explainer = load_explainer(args.explainer)
    backbone = explainer.backbone
    weight, bias = explainer.features.cam_weights(backbone.class_names)
    readout = Readout(weight, torch.zeros(len(weight)) if bias is None else bias)
    surrogate = Surrogate(backbone, explainer.features, readout)
    fit = masked_views(explainer, list_images(args.fit), args.crops)
    test = masked_views(explainer, list_images(args.test), 1)
    before = agreement(surrogate, test, backbone)
    for batch in fit:
        for k in KINDS:
            surrogate.query(batch[k])
    remembered = surrogate.remembered
    refitted = copy.deepcopy(surrogate)
    refitted.refit()
    after = agreement(refitted, test, backbone)
    towards_zero = copy.deepcopy(surrogate)
    towards_zero.prior.zero_()  # the refit before it was centred on the start
    towards_zero.refit()
    former = agreement(towards_zero, test, backbone)
    print(
        f"surrogate refitted on {remembered} images (memory {MEMORY}), scored on "
        f"{sum(len(b['clean']) for b in test)} test crops of each kind"
    )
    print("| surrogate | " + " | ".join(KINDS) + " |")
    print("|---|" + "---|" * len(KINDS))
    rows = (
        ("the auxiliary's own classifier (the start)", before),
        ("one refit, its weights pulled towards the start (shipped)", after),
        ("one refit, its weights pulled towards zero (before)", former),
    )
    for name, score in rows:
        print(f"| {name} | " + " | ".join(f"{score[k]:.3f}" for k in KINDS) + " |")


if __name__ == "__main__":
    main()
