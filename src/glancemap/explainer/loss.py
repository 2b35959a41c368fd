"""The P-TAME training objective: keep the prediction, with small, smooth maps."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F

from ..checks import NON_NEGATIVE, POSITIVE


@dataclass(frozen=True)
class LossWeights:
    """Coefficients of ``ce*CE + area*mean((M+eps)^p_area) + tv*TV(M) [+ destroy*D]``.

    ``destroy`` (ours, off in the paper's recipe) weighs ``D = -log(1 - p)``,
    ``p`` the backbone's probability of the target on the image with the map's
    region *removed* (see ``remove_regions``): the map must hold the
    evidence, not only enough of it. This is the "destroyer" half of Dabkowski
    & Gal's real-time saliency objective; P-TAME's CE term is the "preserver".
    """

    ce: float = field(
        default=1.5, metadata={"help": "weight of the cross-entropy (keep the class) term", "range": NON_NEGATIVE}
    )
    area: float = field(default=2.0, metadata={"help": "weight of the area term", "range": NON_NEGATIVE})
    tv: float = field(
        default=0.01, metadata={"help": "weight of the smoothness (total variation) term", "range": NON_NEGATIVE}
    )
    p_area: float = field(default=0.3, metadata={"help": "exponent of the area term", "range": POSITIVE})
    beta: float = field(default=0.3, metadata={"help": "weight of the border in the TV term", "range": NON_NEGATIVE})
    area_eps: float = 0.0005
    destroy: float = field(
        default=3.0,
        metadata={
            "help": "weight of our removal term: the map's region blurred away must lose the class (0: the paper's)",
            "range": NON_NEGATIVE,
        },
    )
    destroy_sigma: float = 5.0  # pixels: the blur that removes the region, and the finest scale of the inpaint fill
    # Experimental (``train --experimental KEY=VALUE``; measured no gain so far, docs/experiments.md):
    # ROAD-shaped removal, the map's top f pixels, f ~ U(rank_fractions), removed as a hard mask and
    # filled from the rest of the image; weighs D on that image (0 = off)
    rank_destroy: float = 0.0
    rank_fractions: tuple[float, float] = (0.1, 0.5)

    EXPERIMENTAL = ("rank_destroy", "rank_fractions")

    def __post_init__(self) -> None:
        for f in fields(self):
            if "range" in f.metadata:
                f.metadata["range"].check(f.name, getattr(self, f.name))
        NON_NEGATIVE.check("area_eps", self.area_eps)
        POSITIVE.check("destroy_sigma", self.destroy_sigma)
        NON_NEGATIVE.check("rank_destroy", self.rank_destroy)
        lo, hi = (float(v) for v in self.rank_fractions)
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(f"rank_fractions must satisfy 0 < lo <= hi < 1, got {self.rank_fractions}")
        object.__setattr__(self, "rank_fractions", (lo, hi))  # JSON and argparse give lists

    def to_dict(self) -> dict:
        return asdict(self)


def area_loss(maps: torch.Tensor, p: float, eps: float = 0.0005) -> torch.Tensor:
    """``mean((M + eps)^p)`` over every value; maps in [0,1]."""
    return (maps + eps).pow(p).mean()


def total_variation(maps: torch.Tensor, beta: float) -> torch.Tensor:
    """``(sum |dM/dx|^2 + sum |dM/dy|^2 + beta * sum(border^2)) / (2B)`` for ``(B,n,h,w)`` maps.

    The border term penalises mass on the outermost rows and columns (each
    border pixel counted once), which discourages maps that hug the frame.
    """
    b = maps.shape[0]
    dx = (maps[..., :, 1:] - maps[..., :, :-1]).pow(2).sum()
    dy = (maps[..., 1:, :] - maps[..., :-1, :]).pow(2).sum()
    border = maps.pow(2).sum() - maps[..., 1:-1, 1:-1].pow(2).sum()
    return (dx + dy + beta * border) / (2 * b)


class PTameLoss:
    """Combines the three terms and returns them separately for logging.

    Args (call):
        logits_perturbed: backbone logits on ``image * map_of_target`` ``(B,K)``.
        targets: ``(B,)`` backbone top-1 classes on the clean images.
        maps: ``(B,n,h,w)`` sigmoid maps in [0,1] of every class that is a target
            somewhere in the batch (n = B), as the paper's code does.
    """

    def __init__(self, weights: LossWeights | None = None) -> None:
        self.weights = weights or LossWeights()

    def __call__(
        self,
        logits_perturbed: torch.Tensor,
        targets: torch.Tensor,
        maps: torch.Tensor,
        logits_removed: torch.Tensor | None = None,
        logits_rank_removed: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        w = self.weights
        terms = {
            "ce": F.cross_entropy(logits_perturbed, targets),
            "area": area_loss(maps, w.p_area, w.area_eps),
            "tv": total_variation(maps, w.beta),
        }
        total = w.ce * terms["ce"] + w.area * terms["area"] + w.tv * terms["tv"]
        if w.destroy:
            if logits_removed is None:
                raise ValueError("the destroy term needs the backbone's logits on the images with the maps removed")
            terms["destroy"] = destroy_loss(logits_removed, targets)
            total = total + w.destroy * terms["destroy"]
        if w.rank_destroy:
            if logits_rank_removed is None:
                raise ValueError("the rank_destroy term needs the backbone's logits with each map's top pixels removed")
            terms["rank_destroy"] = destroy_loss(logits_rank_removed, targets)
            total = total + w.rank_destroy * terms["rank_destroy"]
        return total, terms


def destroy_loss(logits_removed: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean(-log(1 - p_target))``: small once removing the map's region removes the class."""
    log_p = F.log_softmax(logits_removed, dim=1).gather(1, targets[:, None]).squeeze(1)
    return -torch.log1p(-log_p.exp().clamp(max=1 - 1e-6)).mean()
