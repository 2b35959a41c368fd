"""Maps that know nothing of the image: the floor any method must clear."""

from __future__ import annotations

import torch

from .base import Explainer, Targets
from .registry import register_method


class CenteredGaussian(Explainer):
    """A Gaussian bump in the image centre, sigma a fraction of the side: the 'photographer's prior'."""

    def __init__(self, sigma: float = 0.25) -> None:
        self.sigma = sigma

    def explain(self, images: torch.Tensor, targets: Targets = None) -> torch.Tensor:
        b, _, h, w = images.shape
        ys = (torch.arange(h, device=images.device, dtype=torch.float32) + 0.5) / h - 0.5
        xs = (torch.arange(w, device=images.device, dtype=torch.float32) + 0.5) / w - 0.5
        g = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * self.sigma**2))
        return g.expand(b, 1, h, w).clone()


class UniformRandom(Explainer):
    """Independent uniform noise per pixel (seeded): a map that knows nothing."""

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def explain(self, images: torch.Tensor, targets: Targets = None) -> torch.Tensor:
        b, _, h, w = images.shape
        return torch.rand(b, 1, h, w, generator=self.generator).to(images.device)


register_method(
    "gaussian",
    "Centred Gaussian",
    lambda ctx: CenteredGaussian(),
    summary="a Gaussian bump in the image centre (the photographer's prior)",
)
register_method(
    "random",
    "Uniform random",
    lambda ctx: UniformRandom(seed=ctx.option("seed", 0)),
    summary="independent uniform noise per pixel",
)
