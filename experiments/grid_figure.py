"""Draws docs/grid_maps.jpg: a few 2x2 grids of the grid pointing game, one cell's class explained by
each method, so a reader sees how selective each method's map is.

The grids are the first ones ``glancemap evaluate --grid 2`` builds from the given images (same seed
and threshold), so the picture shows cells that the localization table scores.

    python experiments/grid_figure.py splits/dev.txt --grids 4 --out docs/grid_maps.jpg \
        --also "P-TAME, no gate=runs/default-ungated" --also "P-TAME selective=selective"
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from glancemap.evaluation.grid import GridConfig, grid_image, grids_for
from glancemap.explainer import load_explainer
from glancemap.images import list_images
from glancemap.localization import grid_localization
from glancemap.methods import MethodContext, create_method, method_label, method_names
from glancemap.visualization import caption_font, overlay


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="+")
    ap.add_argument("--explainer", default="default")
    ap.add_argument("--methods", default="ptame,ptame-single,gradcam,auxcam,gaussian")
    ap.add_argument(
        "--also", action="append", default=[], metavar="LABEL=EXPLAINER", help="one more column: another explainer"
    )
    ap.add_argument("--grids", type=int, default=4, help="rows of the picture: one grid each")
    ap.add_argument("--skip", type=int, default=0, help="start at this grid")
    ap.add_argument("--side", type=int, default=200, help="pixels per panel")
    ap.add_argument("--out", default="docs/grid_maps.jpg")
    args = ap.parse_args()

    torch.manual_seed(0)
    explainer = load_explainer(args.explainer, device="cpu")
    backbone = explainer.backbone
    config = GridConfig()
    files = list_images(args.data)
    chosen = grids_for(backbone, files, config)[args.skip : args.skip + args.grids]
    context = MethodContext(backbone=backbone, explainer=explainer, auxiliary=explainer.auxiliary)
    methods = {method_label(name): create_method(name, context) for name in method_names(args.methods)}
    for spec in args.also:
        label, _, source = spec.partition("=")
        other = load_explainer(source, device="cpu", backbone=backbone)
        methods[label] = create_method("ptame", MethodContext(backbone, explainer=other, auxiliary=other.auxiliary))
    names = sorted(methods, key=lambda n: not n.startswith("P-TAME"))  # P-TAME's columns first, stably

    s, pad, head = args.side, 6, 34
    canvas = Image.new("RGB", (pad + (len(names) + 1) * (s + pad), head + len(chosen) * (s + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    font = caption_font(15)
    draw.text((pad, 8), "grid, cell framed", fill="black", font=font)
    for col, name in enumerate(names, start=1):
        draw.text((pad + col * (s + pad), 8), name, fill="black", font=font)
    for row, grid in enumerate(chosen):
        cell = row % (config.n * config.n)  # a different corner in each row
        image = grid_image(grid, backbone, config.n)
        target = torch.tensor([grid.classes[cell]])
        y = head + row * (s + pad)
        plain = Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).resize((s, s))
        _frame(plain, cell, config.n)
        canvas.paste(plain, (pad, y))
        for col, name in enumerate(names, start=1):
            maps = methods[name].explain(image[None], target).detach().float()
            share = grid_localization(maps, torch.tensor([cell]), config.n)["mass share"].item()
            panel = overlay(image, maps[0, 0]).resize((s, s))
            _frame(panel, cell, config.n)
            ImageDraw.Draw(panel).text((4, s - 20), f"mass in cell {share:.2f}", fill="white", font=font)
            canvas.paste(panel, (pad + col * (s + pad), y))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out, quality=85)
    print(f"wrote {args.out}: {len(chosen)} grids x {len(names)} methods")


def _frame(panel: Image.Image, cell: int, n: int) -> None:
    i, j = divmod(cell, n)
    w, h = panel.size
    box = (j * w // n, i * h // n, (j + 1) * w // n - 1, (i + 1) * h // n - 1)
    ImageDraw.Draw(panel).rectangle(box, outline="white", width=3)


if __name__ == "__main__":
    main()
