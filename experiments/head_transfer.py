"""Does a shared head trained on one label set carry to another? Scores a start with a donor's trained weights.

A shared head's trained weights (feature blocks, projection into the auxiliary's last feature space,
offset) do not depend on the classes: each class reads them through its readout row. So the
projection a head learned on ImageNet can be read through a readout distilled for another label
set, when both heads use the same auxiliary and layers. This scores, on the same images, an
explainer as it is (``--start``, e.g. ``train --max-steps 0``'s distilled-readout CAM) and the same
explainer with the donor's trained weights in place of its own (its readout and display kept).

    python experiments/head_transfer.py splits/rin9_dev.txt --start runs/rin9_start/explainer [--donor default]
"""

from __future__ import annotations

import argparse
import copy

import torch
from variant_scoring import faithfulness, load_images, maps_in_batches, paired_line, top1

from glancemap.explainer import load_explainer
from glancemap.images import list_images


def transplant(start, donor):
    """``start`` with ``donor``'s trained shared-head weights; ``start``'s readout and display stay."""
    if start.head.kind != "shared" or donor.head.kind != "shared":
        raise ValueError("both explainers need a shared head")
    if start.layers != donor.layers or start.auxiliary.name != donor.auxiliary.name:
        raise ValueError("the donor must read the same auxiliary layers")
    out = copy.deepcopy(start)
    state = {k: v for k, v in donor.head.state_dict().items() if k != "readout"}
    if start.head.stored:  # a distilled readout is part of the head's state
        state["readout"] = start.head.readout
    out.head.load_state_dict(state)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="+")
    p.add_argument("--start", required=True)
    p.add_argument("--donor", default="default")
    p.add_argument("--batch", type=int, default=16)
    a = p.parse_args()
    torch.set_grad_enabled(False)
    start = load_explainer(a.start, device="cpu").eval()
    moved = transplant(start, load_explainer(a.donor, device="cpu")).eval()
    images = load_images(start.backbone, list_images(a.data))
    bb = start.backbone
    targets = top1(bb, images, a.batch)

    def maps(explainer):
        return maps_in_batches(explainer, images, targets, a.batch)

    base = faithfulness(bb, images, maps(start), a.batch)
    print(paired_line(f"start ({len(images)} images)", base, None), flush=True)
    print(paired_line("start with the donor's trained head", faithfulness(bb, images, maps(moved), a.batch), base))


if __name__ == "__main__":
    main()
