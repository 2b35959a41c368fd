"""The one interface every explanation method implements.

``explain(images, targets) -> maps``: images ``(B,3,H,W)`` in [0,1] RGB at the
backbone's input size, targets one class per image (or None: the backbone's
top-1), maps ``(B,1,H,W)`` in [0,1] at the images' resolution. P-TAME and
every baseline implement it; each method overrides :meth:`Explainer.explain`
only, and calls :meth:`Explainer.targets` for the shared target check.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Targets = torch.Tensor | Sequence[int] | int | None


def check_images(images: torch.Tensor) -> None:
    """Refuses anything but a ``(B,3,H,W)`` tensor."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B,3,H,W) tensor in [0,1], got {shape}")


class Explainer:
    """Base class: ``explain(images (B,3,H,W) in [0,1], targets) -> maps (B,1,H,W) in [0,1]``.

    A subclass that explains a backbone keeps it as ``self.backbone`` (a
    :class:`~glancemap.models.Classifier`); :meth:`targets` then fills in its
    top-1 for ``targets=None`` and bounds the classes by its class count.
    """

    def explain(self, images: torch.Tensor, targets: Targets = None) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, targets: Targets = None) -> torch.Tensor:
        return self.explain(images, targets)

    @property
    def num_classes(self) -> int | None:
        backbone = getattr(self, "backbone", None)
        return None if backbone is None else backbone.num_classes

    def targets(self, images: torch.Tensor, targets: Targets) -> torch.Tensor:
        """``(B,)`` long tensor on the images' device: ``targets`` checked, or the backbone's top-1.

        One int is used for every image; anything else needs one class per image,
        each in ``[0, num_classes)``.
        """
        check_images(images)
        b = images.shape[0]
        if targets is None:
            backbone = getattr(self, "backbone", None)
            if backbone is None:
                raise ValueError(f"{type(self).__name__} has no backbone to pick classes: pass targets")
            return backbone.predict(images)[0]
        t = torch.as_tensor(targets, dtype=torch.long, device=images.device).flatten()
        if t.numel() == 1 and b > 1:
            t = t.expand(b)
        if t.shape != (b,):
            raise ValueError(f"need one target per image ({b}), got {tuple(t.shape)}")
        k = self.num_classes
        if k is not None and ((t < 0).any() or (t >= k).any()):
            raise ValueError(f"targets must be in [0, {k}), got {t.tolist()}")
        return t
