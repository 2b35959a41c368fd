"""RISE: saliency from thousands of randomly masked backbone passes."""

from __future__ import annotations

import torch

from ..maps import minmax_normalize
from .base import Explainer, Targets
from .registry import register_method


class RISE(Explainer):
    """RISE (Petsiuk et al. 2018): saliency as the score-weighted mean of random masks.

    ``n_masks`` binary ``cells x cells`` grids with keep probability ``p``,
    upsampled bilinearly with a random shift; seeded and batched.
    """

    def __init__(
        self, classifier, n_masks: int = 4000, cells: int = 7, p: float = 0.5, batch_size: int = 64, seed: int = 0
    ) -> None:
        self.backbone = classifier
        self.n_masks, self.cells, self.p, self.batch_size, self.seed = n_masks, cells, p, batch_size, seed
        self._masks: torch.Tensor | None = None

    def masks(self, size: tuple[int, int], device: torch.device) -> torch.Tensor:
        if self._masks is None or tuple(self._masks.shape[-2:]) != tuple(size) or self._masks.device != device:
            import torch.nn.functional as F

            g = torch.Generator().manual_seed(self.seed)
            h, w = size
            ch, cw = -(-h // self.cells), -(-w // self.cells)
            grid = (torch.rand(self.n_masks, 1, self.cells, self.cells, generator=g) < self.p).float()
            up = F.interpolate(
                grid, size=((self.cells + 1) * ch, (self.cells + 1) * cw), mode="bilinear", align_corners=False
            )
            dy = torch.randint(0, ch, (self.n_masks,), generator=g)
            dx = torch.randint(0, cw, (self.n_masks,), generator=g)
            crops = [up[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(self.n_masks)]
            self._masks = torch.stack(crops).to(device)  # cached where it is used, not copied per call
        return self._masks

    @torch.no_grad()
    def explain(self, images: torch.Tensor, targets: Targets = None) -> torch.Tensor:
        t = self.targets(images, targets)
        masks = self.masks(tuple(images.shape[-2:]), images.device)
        out = []
        for img, cls in zip(images, t):
            sal = torch.zeros(images.shape[-2:], device=images.device)
            for i in range(0, self.n_masks, self.batch_size):
                m = masks[i : i + self.batch_size]
                scores = self.backbone(img.unsqueeze(0) * m).softmax(dim=1)[:, cls]
                sal += torch.einsum("n,nhw->hw", scores, m[:, 0])
            out.append(sal / (self.n_masks * self.p))
        return minmax_normalize(torch.stack(out).unsqueeze(1))


register_method(
    "rise",
    "RISE",
    lambda ctx: RISE(
        ctx.backbone,
        n_masks=ctx.option("rise_masks", 4000),
        batch_size=ctx.option("cam_batch_size", 32),
        seed=ctx.option("seed", 0),
    ),
    identity=lambda ctx: {"masks": ctx.option("rise_masks", 4000), "seed": ctx.option("seed", 0)},
    summary="score-weighted mean of random masks (black box; 4000 backbone passes per map)",
)
