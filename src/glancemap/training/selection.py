"""Held-out images decide whether training improved on its start.

The training objective (keep the class with the map, keep the map small) is a
proxy for faithfulness, and on some label sets it drifts from it: on a
confident 9-class backbone, training made the maps *less* faithful than the
auxiliary-CAM start it began from (docs/results.md). A few of the user's own
images, held out of training, settle it: both heads are scored with a
ROAD-shaped test and the better one is saved. The head is scored at its start
and at :data:`CHECKS` evenly spaced steps along the run, and the best of these
is kept: where training first helps and then drifts, the run stops where the
held-out score peaked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..explainer import PTameExplainer
from ..explainer.perturbation import remove_regions, top_fraction_mask
from ..images import BadFileLog, image_batches

FRACTIONS = (0.1, 0.3, 0.5, 0.7)  # the shares of pixels removed, as ROAD's
HOLDOUT_SHARE = 0.15  # the default share held out, where the check runs by default
MIN_HOLDOUT = 8  # fewer held-out images than this: no check, the trained head is kept
CHECKS = 8  # points along the run (the last step among them) where the head is scored, besides its start


def holdout_split(files: Sequence[Path], share: float, seed: int) -> tuple[list[Path], list[Path]]:
    """``(train, held_out)``: a seeded ``share`` of ``files`` held out (none if that is under
    :data:`MIN_HOLDOUT` images or would leave fewer images than it to train on)."""
    n = round(len(files) * share)
    if share <= 0 or n < MIN_HOLDOUT or len(files) - n < MIN_HOLDOUT:
        return list(files), []
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed + 7919)).tolist()
    held = set(order[:n])
    return [f for i, f in enumerate(files) if i not in held], [f for i, f in enumerate(files) if i in held]


@torch.no_grad()
def removal_score(explainer: PTameExplainer, images: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """Per image, the mean over :data:`FRACTIONS` of the backbone's probability for its class with
    the map's *least* relevant pixels removed minus with its *most* relevant removed (blurred away):
    ROAD's LeRF minus MoRF, on probabilities. ``(B,)``, higher is more faithful."""
    backbone = explainer.backbone
    targets = backbone(images).argmax(dim=1)
    maps = explainer(images, targets)
    # a fixed tiny jitter breaks ties in flat map regions, so each fraction removes that many pixels
    maps = maps + 1e-6 * torch.rand(maps.shape, generator=torch.Generator().manual_seed(0)).to(maps)
    score = torch.zeros(len(images), device=images.device)
    for f in FRACTIONS:
        most = top_fraction_mask(maps, torch.full((len(images),), f))
        least = top_fraction_mask(-maps, torch.full((len(images),), f))
        for mask, sign in ((least, 1.0), (most, -1.0)):
            p = backbone(remove_regions(images, mask, "blur", sigma)).softmax(dim=1)
            score += sign * p.gather(1, targets[:, None])[:, 0]
    return score / len(FRACTIONS)


def held_out_score(explainer: PTameExplainer, files: Sequence[Path], batch_size: int = 16) -> float:
    """Mean :func:`removal_score` over ``files`` (centre crops; unreadable files skipped)."""
    transform = explainer.backbone.preprocessing.eval_transform()
    was_training = explainer.training
    explainer.eval()
    scores = [
        removal_score(explainer, images.to(explainer.device))
        for _, images in image_batches(list(files), transform, batch_size, BadFileLog())
    ]
    explainer.train(was_training)
    return torch.cat(scores).mean().item() if scores else float("nan")


class HeadSelection:
    """The held-out scores of one run's head at its start and along the run, and the best head so far.

    The trainer calls :meth:`record` at step 0 and at each of :attr:`steps`; a checkpoint carries
    :meth:`progress` and :meth:`tensors` so a resumed run remembers the scores and the best head.
    The earliest of equal scores wins, so the start is kept unless training beat it.
    """

    def __init__(self, images: int, total_steps: int, checks: int = CHECKS) -> None:
        self.images = images
        self.steps = {round(total_steps * i / checks) for i in range(1, checks + 1)} - {0}
        self.scores: dict[int, float] = {}
        self.best_step: int | None = None
        self.best_state: dict[str, torch.Tensor] = {}

    def record(self, step: int, score: float, head: torch.nn.Module) -> None:
        """Notes ``head``'s held-out ``score`` at ``step``, remembering the head if it is the best yet."""
        self.scores[step] = score
        if self.best_step is None or score > self.scores[self.best_step]:
            self.best_step = step
            self.best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}

    def progress(self) -> dict:
        return {"scores": {str(k): v for k, v in self.scores.items()}, "best_step": self.best_step}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"selection.{k}": v.cpu().contiguous() for k, v in self.best_state.items()}

    def restore(self, progress: dict, tensors: dict[str, torch.Tensor]) -> None:
        """The scores and best head a checkpoint saved (:meth:`progress`, :meth:`tensors`)."""
        self.scores = {int(k): float(v) for k, v in progress["scores"].items()}
        self.best_step = progress["best_step"]
        self.best_state = {k[10:]: v for k, v in tensors.items() if k.startswith("selection.")}

    def finish(self, head: torch.nn.Module, last_step: int) -> dict:
        """Loads the best head into ``head``; returns the record the explainer's config keeps."""
        if self.best_step is None:
            raise RuntimeError("no held-out score was recorded")
        head.load_state_dict(self.best_state)
        best = self.best_step
        kept = "start" if best == 0 else "trained" if best == last_step else f"step {best}"
        return {
            "images": self.images,
            "start": round(self.scores[0], 4),
            "trained": round(self.scores[last_step], 4) if last_step in self.scores else None,
            "scores": {str(k): round(v, 4) for k, v in sorted(self.scores.items())},
            "kept": kept,
        }
