"""Reference explainers behind the common ``explain(images, targets) -> maps`` interface."""

from __future__ import annotations

import torch


class Explainer:
    """Base class: ``explain(images (B,3,H,W) in [0,1], targets (B,) or None) -> maps (B,1,H,W) in [0,1]``."""

    def explain(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        return self.explain(images, targets)


class CenteredGaussian(Explainer):
    """A Gaussian bump in the image centre, sigma a fraction of the side: the 'photographer's prior'."""

    def __init__(self, sigma: float = 0.25) -> None:
        self.sigma = sigma

    def explain(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = images.shape
        ys = (torch.arange(h, device=images.device, dtype=torch.float32) + 0.5) / h - 0.5
        xs = (torch.arange(w, device=images.device, dtype=torch.float32) + 0.5) / w - 0.5
        g = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * self.sigma**2))
        return g.expand(b, 1, h, w).clone()


class UniformRandom(Explainer):
    """Independent uniform noise per pixel (seeded): a map that knows nothing."""

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def explain(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = images.shape
        return torch.rand(b, 1, h, w, generator=self.generator).to(images.device)
