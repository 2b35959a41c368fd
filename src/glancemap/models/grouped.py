"""Classifiers over coarser label sets, made by pooling a classifier's logits into groups.

``restricted_imagenet9`` (built by :func:`glancemap.models.loading.restricted_imagenet9`) is the
example backbone of a user's own label set that glancemap ships: EfficientNet-Lite2 with its 1000
ImageNet logits pooled by logsumexp into the 9 superclasses of RestrictedImageNet (Tsipras et al.,
"Robustness May Be at Odds with Accuracy", ICLR 2019). Pooling by logsumexp makes each group's
softmax probability the sum of its members' ImageNet probabilities, renormalised over the groups.
The auxiliary network (ImageNet classes) then no longer shares the backbone's classes, which is the
case a user's fine-tuned model puts the explainer in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from .classifier import Classifier

# inclusive ImageNet index ranges, as in MadryLab's robustness library
RESTRICTED_IMAGENET9: dict[str, tuple[int, int]] = {
    "dog": (151, 268),
    "cat": (281, 285),
    "frog": (30, 32),
    "turtle": (33, 37),
    "bird": (80, 100),
    "primate": (365, 382),
    "fish": (389, 397),
    "crab": (118, 121),
    "insect": (300, 319),
}


class GroupedLogits(nn.Module):
    """``net``'s logits ``(B,N)`` pooled into one logit per group, ``(B,G)``, by logsumexp.

    Args:
        net: a module returning ``(B,N)`` logits (it stays reachable as ``.net``, so its layers
            keep their names under ``net.``).
        groups: for each group, the member indices into the N logits (non-empty, within range).
    """

    def __init__(self, net: nn.Module, groups: Sequence[Sequence[int]], num_inputs: int) -> None:
        super().__init__()
        self.net = net
        mask = torch.full((len(groups), num_inputs), float("-inf"))
        for g, members in enumerate(groups):
            members = list(members)
            if not members or min(members) < 0 or max(members) >= num_inputs:
                raise ValueError(f"group {g} must list indices in [0, {num_inputs}), got {members[:5]}...")
            mask[g, members] = 0.0
        # -inf outside a group: logsumexp over (logit + mask) pools exactly the members
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        return torch.logsumexp(logits.unsqueeze(1) + self.mask.to(logits.dtype), dim=2)


def grouped_classifier(base: Classifier, groups: dict[str, Sequence[int]], name: str) -> Classifier:
    """``base`` with its logits pooled into the named ``groups`` (same input size and normalisation)."""
    model = GroupedLogits(base.model, list(groups.values()), base.num_classes)
    p = base.preprocessing
    clf = Classifier(
        model,
        name=name,
        input_size=p.input_size,
        class_names=list(groups),
        mean=p.mean,
        std=p.std,
        crop_pct=p.crop_pct,
        interpolation=p.interpolation,
        source=f"{base.name} logits pooled into {len(groups)} groups",
    )
    return clf.to(base.device)
