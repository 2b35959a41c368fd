"""Heat-map overlays with class names and scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def _colormap(values: np.ndarray, name: str = "jet") -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps[name](values)[..., :3] * 255).astype(np.uint8)


def overlay(image: torch.Tensor, heatmap: torch.Tensor, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """image ``(3,H,W)`` in [0,1] and map ``(H,W)`` in [0,1] -> RGB PIL image blending both."""
    img = (image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.float32)
    heat = _colormap(heatmap.detach().cpu().clamp(0, 1).numpy(), cmap).astype(np.float32)
    return Image.fromarray((img * (1 - alpha) + heat * alpha).astype(np.uint8))


def caption_font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _short(name: str, limit: int = 28) -> str:
    name = name.split(",")[0]
    return name if len(name) <= limit else name[: limit - 1] + "…"


def explanation_panel(
    image: torch.Tensor,
    maps: torch.Tensor,
    class_names: Sequence[str],
    scores: Sequence[float],
    title: str = "input",
) -> Image.Image:
    """The image and one overlay per map, side by side, each captioned ``name  p=score``.

    image ``(3,H,W)``, maps ``(k,H,W)`` in [0,1].
    """
    h, w = image.shape[-2:]
    caption = max(18, h // 12)
    font = caption_font(int(caption * 0.7))
    tiles = [Image.fromarray((image.cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8))]
    labels = [title]
    for m, name, score in zip(maps, class_names, scores):
        tiles.append(overlay(image, m))
        labels.append(f"{_short(name)}  p={score:.2f}")
    canvas = Image.new("RGB", (w * len(tiles), h + caption), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (tile, label) in enumerate(zip(tiles, labels)):
        canvas.paste(tile, (i * w, caption))
        draw.text((i * w + 4, 2), label, fill="black", font=font)
    return canvas
