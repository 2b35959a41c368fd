"""A readout distilled from the backbone: the auxiliary's classifier, for the backbone's own classes.

The auxiliary-CAM start and the shared head read the auxiliary's last feature
map through a linear classifier. When the auxiliary classifies the backbone's
classes (both ImageNet), its own classifier serves. For any other label set
(a fine-tuned model, a Hugging Face classifier, pooled superclasses) we fit one:
a softmax regression from the auxiliary's pooled last-layer features to the
backbone's output distribution on the training images (soft targets, so no
labels are needed). Features and targets are computed once, over a few views
per image, and the ridge strength is picked by cross-validation over images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..images import load_image
from ..models import Classifier, FeatureExtractor

RIDGE_GRID = (1e-4, 1e-3, 1e-2, 1e-1)  # per-sample L2 penalty on standardised features
FOLDS = 5
# beyond this many classes (a 1000-class model whose names differ from the auxiliary's) one fit costs
# minutes on a CPU: one held-out fold at a fixed ridge instead of the cross-validated grid
MANY_CLASSES = 100
MANY_CLASSES_RIDGE = 1e-2
TARGET_SAMPLES = 1024  # views per image: enough that images x views reaches this (2..8)


@dataclass
class Readout:
    """A linear classifier over the auxiliary's pooled last-layer features.

    ``weight`` ``(K, D)`` and ``bias`` ``(K,)`` act on raw pooled features (the CAM reads
    ``weight`` at every location). ``agreement`` and ``cross_entropy`` are held-out
    (cross-validated, by image): top-1 agreement with the backbone, and the cross-entropy
    against its soft outputs; ``backbone_entropy`` is that cross-entropy's floor.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    ridge: float = 1e-3
    images: int = 0
    views: int = 0
    agreement: float = float("nan")
    cross_entropy: float = float("nan")
    backbone_entropy: float = float("nan")

    SCALARS = ("ridge", "images", "views", "agreement", "cross_entropy", "backbone_entropy")

    def info(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.scalars().items()}

    def scalars(self) -> dict:
        """Everything but the tensors, unrounded (a checkpoint keeps them to resume without refitting)."""
        return {k: getattr(self, k) for k in self.SCALARS}

    @classmethod
    def from_parts(cls, weight: torch.Tensor, bias: torch.Tensor, scalars: dict) -> Readout:
        return cls(weight, bias, **{k: scalars[k] for k in cls.SCALARS})


def views_per_image(n_images: int) -> int:
    return max(2, min(8, math.ceil(TARGET_SAMPLES / max(n_images, 1))))


def distill_calls(n_images: int) -> int:
    """Backbone calls :func:`distill_readout` makes on ``n_images`` images: one per view."""
    return n_images * views_per_image(n_images)


@torch.no_grad()
def readout_data(
    features: FeatureExtractor,
    backbone: Classifier,
    files: Sequence[Path],
    views: int,
    crop_scale: tuple[float, float] = (0.25, 1.0),
    seed: int = 0,
    batch_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled last-layer auxiliary features ``(N, views, D)`` and backbone probabilities
    ``(N, views, K)``: view 0 is the centre crop, view 1 its mirror image, the others random
    resized crops (the training crops) with a random flip."""
    prep = backbone.preprocessing
    centre, crop = prep.eval_transform(), prep.train_transform(crop_scale)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # the random crops draw from torch's global generator
    try:
        batch: list[torch.Tensor] = []
        feats, probs = [], []

        def flush() -> None:
            x = torch.stack(batch).to(backbone.device)
            feats.append(features(x)[-1].float().mean(dim=(2, 3)).cpu())
            probs.append(backbone(x).float().softmax(dim=1).cpu())
            batch.clear()

        for path in files:
            image = load_image(path)
            first = centre(image)
            batch += [first, first.flip(-1)]
            batch += [crop(image) for _ in range(views - 2)]
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    finally:
        torch.random.set_rng_state(torch_state)
    x, p = torch.cat(feats), torch.cat(probs)
    return x.view(len(files), views, -1), p.view(len(files), views, -1)


def softmax_regression(
    x: torch.Tensor,
    p: torch.Tensor,
    ridge: float,
    iterations: int = 300,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
    feature_scale: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float64,
    history: int = 20,
    prior: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``(K,D)`` and bias ``(K,)`` of a softmax regression of ``x (n,D)`` on soft targets
    ``p (n,K)`` by L-BFGS: cross-entropy plus ``ridge/2 * ||(w - prior) * feature_scale||^2`` (the
    scale makes a penalty on raw features equal one on standardised ones; ``prior`` ``(K,D)``: zero
    by default). ``start`` warm-starts it; by default it starts at zero weights and the class prior
    as bias."""
    if start is None:
        w0 = torch.zeros(p.shape[1], x.shape[1])
        b0 = torch.log(p.mean(0).clamp_min(1e-8))
    else:
        w0, b0 = start
    w = w0.detach().cpu().to(dtype).clone().requires_grad_(True)
    b = b0.detach().cpu().to(dtype).clone().requires_grad_(True)
    xd, pd = x.to(dtype), p.to(dtype)
    scale = 1.0 if feature_scale is None else feature_scale.to(dtype)
    centre = 0.0 if prior is None else prior.detach().cpu().to(dtype)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=iterations, history_size=history, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        ce = -(pd * F.log_softmax(xd @ w.T + b, dim=1)).sum(1).mean()
        loss = ce + 0.5 * ridge * (((w - centre) * scale) ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def _held_out(x, p, folds, ridge) -> tuple[float, float]:
    """Cross-entropy and top-1 agreement on held-out images, summed over folds: (ce, agreement)."""
    ce, agree, count = 0.0, 0.0, 0
    for held in folds:
        keep = torch.ones(x.shape[0], dtype=torch.bool)
        keep[held] = False
        xt, pt = x[keep].flatten(0, 1), p[keep].flatten(0, 1)
        w, b = softmax_regression(xt, pt, ridge)
        xh, ph = x[held].flatten(0, 1).double(), p[held].flatten(0, 1).double()
        logq = F.log_softmax(xh @ w.T + b, dim=1)
        ce += -(ph * logq).sum().item()
        agree += (logq.argmax(1) == ph.argmax(1)).sum().item()
        count += xh.shape[0]
    return ce / count, agree / count


def fit_readout(features: torch.Tensor, probs: torch.Tensor, seed: int = 0) -> Readout:
    """Fits :class:`Readout` to ``features (N, V, D)`` and backbone ``probs (N, V, K)``
    (N images, V views each), picking the ridge strength by cross-validation over images
    (for more than ``MANY_CLASSES`` classes: a fixed ridge, scored on one held-out fold)."""
    n, v, _ = features.shape
    if n < 2:
        raise ValueError("distilling a readout needs at least 2 images")
    mu = features.flatten(0, 1).mean(0)
    sd = features.flatten(0, 1).std(0).clamp_min(1e-6)
    x = (features - mu) / sd
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    folds = [order[i::FOLDS] for i in range(min(FOLDS, n))]
    grid = RIDGE_GRID
    if probs.shape[-1] > MANY_CLASSES:
        folds, grid = folds[:1], (MANY_CLASSES_RIDGE,)
    scores = {r: _held_out(x, probs, folds, r) for r in grid}
    ridge = min(grid, key=lambda r: scores[r][0])
    w, b = softmax_regression(x.flatten(0, 1), probs.flatten(0, 1), ridge)
    # back to raw features: w.(f - mu)/sd + b = (w/sd).f + (b - (w/sd).mu)
    w_raw = (w / sd.double()).float()
    b_raw = (b - (w / sd.double()) @ mu.double()).float()
    pf = probs.flatten(0, 1).double()
    entropy = -(pf * pf.clamp_min(1e-12).log()).sum(1).mean().item()
    ce, agreement = scores[ridge]
    return Readout(w_raw, b_raw, ridge, n, v, agreement, ce, entropy)


def distill_readout(
    features: FeatureExtractor,
    backbone: Classifier,
    files: Sequence[Path],
    crop_scale: tuple[float, float] = (0.25, 1.0),
    seed: int = 0,
    batch_size: int = 32,
) -> Readout:
    """:func:`readout_data` on ``files`` then :func:`fit_readout`: the auxiliary's classifier for
    ``backbone``'s classes."""
    x, p = readout_data(features, backbone, files, views_per_image(len(files)), crop_scale, seed, batch_size)
    return fit_readout(x, p, seed)
