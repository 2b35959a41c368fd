"""Gradient-free training: a differentiable stand-in for a backbone you can only call.

Training needs the gradient of the backbone's score on the masked image
``x * m`` with respect to the map ``m``. A black box (an ONNX file, an API)
gives only its outputs. :class:`Surrogate` stands in for it: the auxiliary
network (ours, differentiable) read through a linear readout over its pooled
last features, the same readout the head uses. It starts from the readout
fitted to the black box's outputs on clean images and is refitted during
training on the black box's outputs for the very masked and removed images the
loss looks at, so it follows the black box where the objective needs it to.

The black box is called for each batch's targets (its top-1 on the clean
crops) and, on a share of the steps that fits the call budget, on that step's
masked and removed images. :func:`plan_calls` spreads a budget of calls per
training image over the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..models import Classifier, FeatureExtractor
from .readout import Readout, softmax_regression

MEMORY = 4096  # masked-image samples kept for refitting (oldest dropped first)
REFIT_ITERATIONS = 25  # L-BFGS iterations per refit, warm-started from the current readout
# queried steps between refits: a refit of a 1000-class readout on MEMORY samples takes ~8 s on a
# 2-core CPU (float32), a 10-class one well under a second
REFIT_EVERY = 10


def calls_of(classifier: Classifier) -> int:
    """Images a black-box classifier has been called on so far (0 for a differentiable one)."""
    return int(getattr(classifier.model, "calls", 0))


@dataclass(frozen=True)
class CallPlan:
    """How a run spends its black-box calls: ``steps`` steps, querying the masked (and removed)
    images on every ``query_every``-th step (0: never), within ``budget`` calls in all, of which
    ``reserved`` are kept for after training (the held-out check and the start it may rebuild)."""

    steps: int
    query_every: int
    expected_calls: int
    budget: int = 0
    reserved: int = 0
    batch_size: int = 0
    per_query: int = 0

    def queries(self, step: int) -> bool:
        return self.query_every > 0 and step % self.query_every == 0

    def query_fits(self, step: int, calls: int, steps_left: int) -> bool:
        """Whether ``step`` queries: a planned query that the budget still covers, ``calls`` spent,
        with the targets of the ``steps_left`` steps from this one and the reserve (a resume that
        repeats the steps after its checkpoint gives up the last planned queries for them)."""
        needed = calls + self.per_query + steps_left * self.batch_size + self.reserved
        return self.queries(step) and needed <= self.budget

    def step_fits(self, calls: int) -> bool:
        """Whether the budget, ``calls`` spent, still covers one more step's targets and the reserve."""
        return calls + self.batch_size + self.reserved <= self.budget


def plan_calls(
    images: int,
    steps: int,
    batch_size: int,
    budget_per_image: float,
    spent: int,
    queried_per_step: int,
    reserved: int = 0,
) -> CallPlan:
    """Fits ``steps`` steps of ``batch_size`` into ``budget_per_image * images`` calls, ``spent`` of
    which are gone (the readout's fit) and ``reserved`` kept for after training. Each step calls the
    black box on its batch (the targets); the rest of the budget queries ``queried_per_step`` batches
    of masked images every k-th step, k as small as fits. Steps are cut only if the targets alone
    exceed the budget."""
    total = int(budget_per_image * images)
    budget = total - spent - reserved
    if budget < batch_size:
        raise ValueError(
            f"a call budget of {budget_per_image:g} per image ({total} calls for {images} images) leaves "
            f"{max(budget, 0)} after the {spent} calls fitting the readout"
            + (f" and the {reserved} kept for checking the start on held-out images" if reserved else "")
            + f": not one step of {batch_size}. Raise --call-budget"
        )
    steps = min(steps, budget // batch_size)
    left = budget - steps * batch_size
    per_query = queried_per_step * batch_size
    queries = min(steps, left // per_query) if per_query else 0
    every = math.ceil(steps / queries) if queries else 0
    done = (steps + every - 1) // every if every else 0
    expected = spent + steps * batch_size + done * per_query
    return CallPlan(steps, every, expected, total, reserved, batch_size, per_query)


class Surrogate(nn.Module):
    """A differentiable classifier standing in for a black-box ``backbone``: ``features``' last map,
    globally pooled, read through ``readout``.

    Args:
        backbone: the black box (called only through :meth:`query` and :meth:`targets`).
        features: the explainer's auxiliary feature extractor.
        readout: the starting readout (the auxiliary's own classifier, or one distilled from the
            backbone; :mod:`glancemap.training.readout`).
    """

    def __init__(self, backbone: Classifier, features: FeatureExtractor, readout: Readout) -> None:
        super().__init__()
        self.backbone = backbone
        self.features = features
        self.ridge = readout.ridge
        self.register_buffer("weight", readout.weight.detach().clone().float())
        self.register_buffer("bias", readout.bias.detach().clone().float())
        # what every refit is pulled back to: the start, not zero weights
        self.register_buffer("prior", self.weight.clone(), persistent=False)
        self._pooled: list[torch.Tensor] = []
        self._probs: list[torch.Tensor] = []
        self.refits = 0
        self._agree, self._queried = 0, 0

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """``(B,D)`` pooled last-layer auxiliary features, differentiable with respect to ``images``."""
        return self.features(images, grad=True)[-1].float().mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[0,1] images ``(B,3,H,W)`` -> logits ``(B,K)`` with gradients back to the images."""
        return self.pooled(images) @ self.weight.T + self.bias

    def classify(self, images: torch.Tensor, query: bool = False) -> torch.Tensor:
        """:meth:`forward`, and with ``query`` also :meth:`query` on the same images (one auxiliary pass)."""
        pooled = self.pooled(images)
        if query:
            self.query(images, pooled)
        return pooled @ self.weight.T + self.bias

    @torch.no_grad()
    def targets(self, images: torch.Tensor) -> torch.Tensor:
        """The black box's top-1 on ``images`` (one call per image)."""
        return self.backbone(images).argmax(dim=1)

    @torch.no_grad()
    def query(self, images: torch.Tensor, pooled: torch.Tensor | None = None) -> None:
        """Calls the black box on ``images`` and remembers its probabilities beside the images'
        pooled features (``pooled`` if already computed) for the next :meth:`refit`."""
        images = images.detach()
        pooled = (self.pooled(images) if pooled is None else pooled.detach()).float()
        probs = self.backbone(images).float().softmax(dim=1)
        # scored before the refit that learns from them: an unseen-sample agreement
        self._agree += ((pooled @ self.weight.T + self.bias).argmax(1) == probs.argmax(1)).sum().item()
        self._queried += len(probs)
        self._pooled.append(pooled.cpu())
        self._probs.append(probs.cpu())
        while sum(len(p) for p in self._pooled) > MEMORY:
            self._pooled.pop(0)
            self._probs.pop(0)

    @property
    def remembered(self) -> int:
        return sum(len(p) for p in self._pooled)

    def refit(self) -> None:
        """Refits the readout to everything remembered (warm start, the same ridge on standardised
        features as its first fit, centred on the starting readout: pulled towards zero weights, one
        refit on 4096 masked images cut the top-1 agreement with the black box from 0.81 to 0.71,
        docs/experiments.md)."""
        if not self._pooled:
            return
        x = torch.cat(self._pooled).float()
        p = torch.cat(self._probs).float()
        sd = x.std(0).clamp_min(1e-6) if len(x) > 1 else torch.ones(x.shape[1])
        w, b = softmax_regression(
            x,
            p,
            self.ridge,
            iterations=REFIT_ITERATIONS,
            start=(self.weight, self.bias),
            feature_scale=sd,
            dtype=torch.float32,
            history=10,
            prior=self.prior,
        )
        self.weight.copy_(w.detach().to(self.weight))
        self.bias.copy_(b.detach().to(self.bias))
        self.refits += 1

    def agreement_since_refit(self) -> float:
        """Top-1 agreement with the black box on the images queried since the last refit, scored
        before the surrogate learnt from them (NaN if none); resets the count."""
        out = self._agree / self._queried if self._queried else float("nan")
        self._agree, self._queried = 0, 0
        return out
