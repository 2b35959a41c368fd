"""Displays of an explainer's maps: how much of the grid floor is display.

An explainer's map is min-max normalised logits. A strictly monotone display keeps the order
of every pixel, so the rank-only scores (top-area share, pointing hit, ROAD) cannot move and
only the value-reading ones (mass share, Average Drop) can. Displays:

- ``p<g>``: the map raised to the power g (``p1``: the map as it is); strictly monotone;
- ``l<e>``: each auxiliary pass's logits through a leaky ReLU of slope e at zero, before the
  explainer's min-max and multi-scale mean (the floor where the calibrated map is below zero);
  monotone per pass, so the mean of two passes can re-rank a little;
- ``r<e>``: the same at the zero of the logits without the head's offset (shared heads: the
  auxiliary CAM's ReLU, on the untrained start);
- ``g<e>``: the explainer's own ``negative_slope`` display (``PTameExplainer``): each pass's
  min-max map times e where the shared head's frozen readout, applied to the last auxiliary
  features, scores the pixel against the class (the untrained start's sign, kept as a gate on
  a trained head); it can re-rank;
- ``c<T>`` or ``c<T>m<M>``: the explainer's own display (its ``negative_slope`` as saved) times
  a contrast gate, per auxiliary pass: ``gate_from_logits`` (margin M, 0 unless given) on all K
  head logits divided by the temperature T; it darkens pixels the head gives to another class
  (another object on a grid) and can re-rank;
- ``d<M>``: the explainer's own class gate (``with_gate(M)``; ``d``: at its saved margin): the same gate read from the
  frozen readout's per-pixel logits on the last auxiliary features (the start's CAM of every
  class) instead of the trained head's.

An explainer written ``NAME@320+448`` runs its auxiliary at those sides (``with_aux_sizes``).

Each explainer is scored on the grid pointing game (grids from ``files`` as ``glancemap
evaluate --grid 2`` builds them) and on AD@100 and AD@50 on the ``files`` themselves (ROAD
too for the first display and for ``l`` and ``g``, which can re-rank), paired with its own
first display.

    python experiments/map_display.py splits/dev.txt --explainers default,runs/in_start/explainer \\
        --displays p1,p2,p3,p4,l0.05,r0.05
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from variant_scoring import faithfulness, grid_cells, grid_scores, load_images, paired_line, top1

from glancemap import load_explainer
from glancemap.explainer.explainer import gate_from_logits
from glancemap.images import list_images
from glancemap.maps import minmax_normalize


@torch.no_grad()
def maps_of(explainer, images: torch.Tensor, targets: torch.Tensor, display: str, batch: int) -> torch.Tensor:
    """The explainer's maps ``(N,1,H,W)`` in [0,1] shown as ``display`` says, batch by batch; every
    display but ``d`` starts from the maps without the class gate."""
    explainer, margin = explainer.with_gate(None), explainer.gate_margin
    if display[0] == "c":
        temperature, _, gate_margin = display[1:].partition("m")
        heads = head_contrast_gated(explainer, float(temperature), float(gate_margin or 0))
        return torch.cat([heads(images[i : i + batch], targets[i : i + batch]) for i in range(0, len(images), batch)])
    if display[0] == "d":
        gated = explainer.with_gate(float(display[1:]) if display[1:] else margin)
        return torch.cat([gated(images[i : i + batch], targets[i : i + batch]) for i in range(0, len(images), batch)])
    kind, value = display[0], float(display[1:])
    shown = explainer.with_negative_slope(value if kind == "g" else 1.0)
    zero = explainer.head.offset.item() if kind == "r" else 0.0
    out = []
    for i in range(0, len(images), batch):
        x, t = images[i : i + batch], targets[i : i + batch]
        if kind in "pg":
            out.append(shown(x, t) ** (value if kind == "p" else 1.0))
        elif kind in "lr":
            heads = lambda f, t=t: F.leaky_relu(explainer.head(f, t, per_sample=True) - zero, value)  # noqa: E731
            out.append(explainer.multiscale_maps(x, x.shape[-2:], heads))
        else:
            raise ValueError(f"unknown display {display!r}")
    return torch.cat(out)


def head_contrast_gated(explainer, temperature: float, margin: float):
    """``f(x, t)``: the explainer's displayed maps of ``t`` times the class gate read from all K head
    logits at ``temperature`` (not from the readout), per auxiliary pass: ``(B,1,H,W)`` in [0,1]."""

    def maps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        def heads(f):
            shown = minmax_normalize(explainer.map_logits(f, t, per_sample=True))
            gate = gate_from_logits(explainer.head(f) / temperature, t, margin, shown.shape[-2:], per_sample=True)
            return shown * gate

        return explainer.multiscale_maps(x, x.shape[-2:], heads)

    return maps


def load_at_sides(spec: str, **kwargs):
    """The explainer ``spec`` names, at the auxiliary sides it gives after ``@`` (``PATH@320+448``), if any."""
    name, _, sides = spec.partition("@")
    explainer = load_explainer(name, device="cpu", **kwargs)
    return explainer.with_aux_sizes([int(s) for s in sides.split("+")]) if sides else explainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", help="a .txt list of images (e.g. splits/dev.txt)")
    ap.add_argument("--explainers", default="default", help="comma-separated names or folders")
    ap.add_argument("--displays", default="p1,p2,p3,p4,l0.05,r0.05")
    ap.add_argument("--faithfulness-limit", type=int, default=None, help="score AD on the first N images only")
    ap.add_argument("--no-road", action="store_true", help="skip ROAD (only l and g displays re-rank)")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    torch.manual_seed(0)
    files = list_images([args.files])
    first, *others = args.explainers.split(",")
    explainers = {first: load_at_sides(first)}
    backbone, b = explainers[first].backbone, args.batch_size
    explainers |= {name: load_at_sides(name, backbone=backbone) for name in others}
    grid = grid_cells(backbone, files)  # the same grids and images for every explainer
    images = load_images(backbone, files[: args.faithfulness_limit])
    targets = top1(backbone, images, b)
    for name, explainer in explainers.items():
        base = None
        for display in args.displays.split(","):
            scores = grid_scores(maps_of(explainer, grid.images, grid.targets, display, b), grid)
            maps = maps_of(explainer, images, targets, display, b)
            with_road = (base is None or display[0] in "glcd") and not args.no_road  # the others keep ranks
            scores |= faithfulness(backbone, images, maps, b, with_road=with_road)
            print(paired_line(f"{name} {display} ({len(grid.cells)} cells, {len(images)} images)", scores, base))
            base = base or scores


if __name__ == "__main__":
    main()
