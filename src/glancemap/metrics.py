"""Faithfulness metrics on [0,1] images and [0,1] maps, batched, on the backbone's device.

Every choice the literature disagrees on is explicit here:

- **Score**: softmax probability (never the logit) of the class the backbone
  predicts on the clean image; ROAD scores top-1 agreement with that class.
- **Space**: all masking and filling happens in [0,1] RGB pixel space, before
  the classifier's own normalization (zero means black, not the dataset mean).
- **AD / IC** (:func:`confidence_change`): ``keep`` is the fraction *kept*; the
  image is multiplied by the map with all but its top ``keep`` pixels set to
  zero, kept pixels keeping their soft value (Grad-CAM++ / the P-TAME paper).
- **ROAD** (:func:`road`): ``fractions`` are fractions *removed*, most (MoRF) or
  least (LeRF) relevant first, filled by Telea inpainting or noisy linear imputation.
- **Deletion / insertion** (:func:`deletion_insertion`): fractions removed
  (deletion) or inserted (insertion) in ``steps`` equal steps, areas over [0,1].
- Pixel rankings break ties at random with a fixed seed (:func:`relevance_order`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .maps import gaussian_blur, resize_maps
from .models import Classifier


def keep_top_fraction(maps: torch.Tensor, keep: float) -> torch.Tensor:
    """Zeroes all but the ``ceil(keep*H*W)`` highest pixels of each ``(B,1,H,W)`` map (ties broken by index)."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0,1], got {keep}")
    flat = maps.flatten(1)
    k = max(1, math.ceil(keep * flat.shape[1]))
    if k >= flat.shape[1]:
        return maps.clone()
    idx = flat.topk(k, dim=1).indices
    kept = torch.zeros_like(flat).scatter_(1, idx, flat.gather(1, idx))
    return kept.view_as(maps)


@torch.no_grad()
def confidence_change(
    backbone: Classifier,
    images: torch.Tensor,
    maps: torch.Tensor,
    keep: float = 1.0,
    clean_probs: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-image Average Drop and Increase in Confidence terms, in percent.

    Returns ``drop = 100*max(0, Y-O)/Y`` and ``increase = 100*(O > Y)`` per image
    (``(B,)`` each), plus the clean and masked scores and the predicted class;
    their means are AD and IC. Pass ``clean_probs`` (softmax on the clean
    images, ``(B,K)``) to reuse one clean pass across maps and levels.
    """
    clean = backbone(images).softmax(dim=1) if clean_probs is None else clean_probs
    y, cls = clean.max(dim=1)
    masked = images * keep_top_fraction(resize_maps(maps, images.shape[-2:]), keep)
    o = backbone(masked).softmax(dim=1).gather(1, cls[:, None]).squeeze(1)
    return {
        "drop": 100.0 * (y - o).clamp_min(0) / y,
        "increase": 100.0 * (o > y).float(),
        "clean_score": y,
        "masked_score": o,
        "target": cls,
    }


# --------------------------------------------------------------------- orderings


def relevance_order(maps: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Pixel indices of each ``(B,1,H,W)`` map, most relevant first, as ``(B, H*W)``.

    Ties (common: CAM maps are zero over large areas after their ReLU) are
    broken by a seeded random permutation, not by pixel index, so removing
    "the least relevant 70%" does not mean "the top rows first".
    """
    flat = maps.flatten(1)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(flat.shape[1], generator=g).to(flat.device)
    order = flat[:, perm].argsort(dim=1, descending=True, stable=True)
    return perm[order]


def removed_masks(order: torch.Tensor, fractions: list[float], size: tuple[int, int]) -> torch.Tensor:
    """``(B, F, H, W)`` bool: True where the first ``round(f*H*W)`` pixels of ``order`` lie."""
    b, n = order.shape
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n, device=order.device).expand(b, n))
    counts = torch.tensor([round(f * n) for f in fractions], device=order.device)
    return (rank[:, None, :] < counts[None, :, None]).view(b, len(fractions), *size)


def trapezoid_auc(xs: list[float], values: torch.Tensor) -> torch.Tensor:
    """Area under ``values (..., len(xs))`` over the points ``xs`` by the trapezoid rule."""
    x = torch.tensor(xs, dtype=values.dtype, device=values.device)
    return ((values[..., 1:] + values[..., :-1]) / 2 * (x[1:] - x[:-1])).sum(-1)


# ---------------------------------------------------------------------- ROAD


def telea_inpaint(images: torch.Tensor, removed: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Fills ``removed (B,H,W)`` pixels of ``images (B,3,H,W)`` in [0,1] by OpenCV's Telea method.

    OpenCV inpaints 8-bit colour images, so the fill is quantised to 1/255;
    pixels that were not removed keep their exact values.
    """
    import cv2

    out = images.clone()
    as_uint8 = (images.detach().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    holes = removed.to(torch.uint8).cpu().numpy()
    todo = [i for i in range(len(images)) if holes[i].any()]
    if not todo:
        return out

    def inpaint(i: int):
        return cv2.inpaint(as_uint8[i], holes[i], radius, cv2.INPAINT_TELEA)

    # one image per thread: OpenCV releases the GIL, and with the backbone on a GPU this loop is most of ROAD
    with ThreadPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 1)) as pool:
        filled = np.stack(list(pool.map(inpaint, todo)))
    fill = torch.from_numpy(filled).to(images.device, images.dtype).permute(0, 3, 1, 2) / 255.0
    idx = torch.tensor(todo, device=images.device)
    out[idx] = torch.where(removed[idx].to(images.device)[:, None], fill, images[idx])
    return out


def linear_inpaint(images: torch.Tensor, removed: torch.Tensor, noise: float = 0.01) -> torch.Tensor:
    """ROAD's noisy linear imputation (each removed pixel the weighted mean of its 8
    neighbours, plus Gaussian noise of std ``noise``), via the ``grad-cam`` package's solver."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    imputer = NoisyLinearImputer(noise=noise)
    out = images.clone()
    for i in range(len(images)):
        if removed[i].any():
            keep = (~removed[i]).float().cpu()  # the solver's convention: 0 marks a missing pixel
            out[i] = imputer(images[i].detach().cpu(), keep).to(images.device, images.dtype)
    return out


IMPUTERS = {"telea": telea_inpaint, "linear": linear_inpaint}


@torch.no_grad()
def road(
    backbone: Classifier,
    images: torch.Tensor,
    maps: torch.Tensor,
    fractions: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7),
    imputation: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "telea",
    targets: torch.Tensor | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """ROAD (Rong et al. 2022): remove and inpaint the most (MoRF) or least (LeRF) relevant pixels.

    For each fraction ``f`` of pixels removed (ranked by the map, ties broken
    at random with ``seed``) the removed pixels are filled by ``imputation``
    (``"telea"``: OpenCV Telea inpainting; ``"linear"``: noisy linear imputation;
    or any ``fill(images (N,3,H,W), removed (N,H,W) bool) -> images``)
    and the score is 1 when the backbone's top-1 still equals ``targets``
    (default: its prediction on the clean image), else 0.

    Returns per image: ``morf`` and ``lerf`` ``(B,F)`` top-1 agreement,
    ``morf_prob`` and ``lerf_prob`` ``(B,F)`` softmax probabilities of the target,
    and ``morf_auc``, ``lerf_auc`` ``(B,)``: trapezoid areas over (0,1), the F
    points and (1,0) in the (fraction removed, agreement) plane. Lower MoRF AUC
    and higher LeRF AUC are better; ``lerf_auc - morf_auc`` summarises both.
    """
    if not callable(imputation) and imputation not in IMPUTERS:
        raise ValueError(f"imputation must be one of {sorted(IMPUTERS)} or a callable, got {imputation!r}")
    fill = imputation if callable(imputation) else IMPUTERS[imputation]
    if not all(0.0 < f < 1.0 for f in fractions):
        raise ValueError(f"fractions must lie in (0,1), got {fractions}")
    if targets is None:
        targets = backbone(images).argmax(dim=1)
    b, f = len(images), len(fractions)
    size = tuple(images.shape[-2:])
    maps = resize_maps(maps, size)
    order = relevance_order(maps, seed)
    out: dict[str, torch.Tensor] = {}
    xs = [0.0, *fractions, 1.0]
    for name, ranking in (("morf", order), ("lerf", order.flip(1))):
        removed = removed_masks(ranking, list(fractions), size).flatten(0, 1)  # (B*F,H,W)
        filled = fill(images.repeat_interleave(f, dim=0), removed)
        probs = backbone(filled).softmax(dim=1)
        t = targets.repeat_interleave(f)
        out[name] = (probs.argmax(dim=1) == t).float().view(b, f)
        out[f"{name}_prob"] = probs.gather(1, t[:, None]).view(b, f)
        ends = torch.tensor([1.0, 0.0], device=images.device)
        curve = torch.cat([ends[:1].expand(b, 1), out[name], ends[1:].expand(b, 1)], dim=1)
        out[f"{name}_auc"] = trapezoid_auc(xs, curve)
    return out


# ----------------------------------------------------------- deletion / insertion

SUBSTRATES = {
    "black": torch.zeros_like,
    "grey": lambda x: torch.full_like(x, 0.5),
    "blur": gaussian_blur,
}


@torch.no_grad()
def deletion_insertion(
    backbone: Classifier,
    images: torch.Tensor,
    maps: torch.Tensor,
    steps: int = 16,
    targets: torch.Tensor | None = None,
    deletion_substrate: str = "black",
    insertion_substrate: str = "blur",
    chunk: int = 64,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Deletion and insertion curves (Petsiuk et al. 2018) and their areas.

    Pixels are ranked by the map (ties at random with ``seed``). Deletion
    replaces the top ``k/steps`` fraction by ``deletion_substrate``; insertion
    starts from ``insertion_substrate`` and puts the top ``k/steps`` fraction of
    the original back (``k = 0..steps``). Substrates are in [0,1] pixel space:
    ``black``, ``grey`` (0.5) or ``blur`` (Gaussian, sigma 5 px). The score is
    the softmax probability of ``targets`` (default: the clean prediction).

    Returns ``deletion`` and ``insertion`` curves ``(B, steps+1)`` and
    ``deletion_auc`` (lower is better), ``insertion_auc`` (higher is better),
    ``(B,)``, areas over the fraction axis [0,1].
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    for s in (deletion_substrate, insertion_substrate):
        if s not in SUBSTRATES:
            raise ValueError(f"substrate must be one of {sorted(SUBSTRATES)}, got {s!r}")
    if targets is None:
        targets = backbone(images).argmax(dim=1)
    b, size = len(images), tuple(images.shape[-2:])
    fractions = [k / steps for k in range(steps + 1)]
    order = relevance_order(resize_maps(maps, size), seed)
    out: dict[str, torch.Tensor] = {}
    for name, substrate in (("deletion", deletion_substrate), ("insertion", insertion_substrate)):
        base = SUBSTRATES[substrate](images)
        scores = []
        for i in range(b):
            chosen = removed_masks(order[i : i + 1], fractions, size)[0, :, None]  # (S+1,1,H,W)
            img, sub = images[i : i + 1], base[i : i + 1]
            seq = torch.where(chosen, sub, img) if name == "deletion" else torch.where(chosen, img, sub)
            probs = torch.cat([backbone(seq[j : j + chunk]).softmax(dim=1) for j in range(0, len(seq), chunk)])
            scores.append(probs[:, targets[i]])
        out[name] = torch.stack(scores)
        out[f"{name}_auc"] = trapezoid_auc(fractions, out[name])
    return out


# ------------------------------------------------------------------- cost


class PassCounter:
    """Counts images through classifiers' forward and backward passes while active.

    ``with PassCounter(backbone=net, auxiliary=aux) as c: ...`` then
    ``c.counts == {"backbone_forward": n, "backbone_backward": m, ...}``, in
    images (a batch of 16 is 16 passes), so dividing by maps gives passes per map.
    """

    def __init__(self, **modules: torch.nn.Module | None) -> None:
        self.modules = {k: m for k, m in modules.items() if m is not None}
        self.counts = {f"{k}_{d}": 0 for k in self.modules for d in ("forward", "backward")}
        self._handles: list = []

    def _hook(self, key: str):
        def on_forward(module, args, output):
            n = output.shape[0]
            self.counts[f"{key}_forward"] += n
            if output.requires_grad:

                def on_backward(grad):
                    self.counts[f"{key}_backward"] += n

                output.register_hook(on_backward)

        return on_forward

    def __enter__(self) -> PassCounter:
        self._handles = [m.register_forward_hook(self._hook(k)) for k, m in self.modules.items()]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
