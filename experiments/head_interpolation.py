"""Heads part of the way from their untrained start to a trained head, to score with ``glancemap evaluate``.

Training moves the head off the auxiliary CAM it starts from: faithfulness gains, localization on grids
loses (docs/experiments.md). Each written head has weights ``start + a * (trained - start)``, so a
sweep over ``a`` shows whether some point keeps the gain and loses less. Write the start with
``glancemap train ... --max-steps 0`` and the same settings as the trained head.

    python experiments/head_interpolation.py --start runs/in_start/explainer --trained default \\
        --alphas 0.25,0.5,0.75 --out runs/interp
    glancemap evaluate --data splits/dev.txt --explainer default --grid 2 \\
        --also start=runs/in_start/explainer --also a050=runs/interp/a050
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from glancemap import load_explainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--start", required=True, help="the untrained start (an explainer folder)")
    ap.add_argument("--trained", default="default", help="the trained explainer")
    ap.add_argument("--alphas", default="0.25,0.5,0.75")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    trained = load_explainer(args.trained, device="cpu")
    start = load_explainer(args.start, device="cpu", backbone=trained.backbone)
    if start.config()["layers"] != trained.config()["layers"] or start.head.kind != trained.head.kind:
        raise SystemExit("the start and the trained head must have the same layers and head kind")
    s0, s1 = start.head.state_dict(), trained.head.state_dict()
    for alpha in (float(a) for a in args.alphas.split(",")):
        mixed = {k: s0[k] + alpha * (s1[k] - s0[k]) if s0[k].is_floating_point() else s1[k] for k in s1}
        trained.head.load_state_dict(mixed)
        trained.training_info = dict(trained.training_info) | {"interpolation": {"alpha": alpha, "start": args.start}}
        folder = trained.save(args.out / f"a{round(alpha * 100):03d}")
        print(f"wrote {folder}")
    trained.head.load_state_dict(s1)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
