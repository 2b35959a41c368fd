"""The classifier wrapper: every model takes [0,1] RGB and normalizes inside.

A :class:`Classifier` knows its input size, its preprocessing and its class
names, so the rest of glancemap never has to. :mod:`glancemap.models.loading`
builds them by name (``load_classifier``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
from PIL import Image
from torchvision.transforms import v2 as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RANDOM_WEIGHTS = "random"


@dataclass(frozen=True)
class Preprocessing:
    """How a photo becomes the classifier's input (before normalization)."""

    input_size: tuple[int, int]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bilinear"

    @property
    def resize_size(self) -> int:
        return int(round(max(self.input_size) / self.crop_pct))

    def eval_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """Resize the shorter side, centre crop; returns a [0,1] float (3,H,W) tensor."""
        return T.Compose(
            [
                T.ToImage(),
                T.Resize(self.resize_size, interpolation=_interp(self.interpolation), antialias=True),
                T.CenterCrop(self.input_size),
                T.ToDtype(torch.float32, scale=True),
            ]
        )

    def train_transform(self, scale: tuple[float, float] = (0.25, 1.0)) -> Callable[[Image.Image], torch.Tensor]:
        return T.Compose(
            [
                T.ToImage(),
                T.RandomResizedCrop(
                    self.input_size, scale=scale, interpolation=_interp(self.interpolation), antialias=True
                ),
                T.RandomHorizontalFlip(),
                T.ToDtype(torch.float32, scale=True),
            ]
        )


def _interp(name: str) -> T.InterpolationMode:
    return T.InterpolationMode(name)


class Classifier(nn.Module):
    """A classifier that takes [0,1] RGB images ``(B,3,H,W)`` and returns logits ``(B,K)``.

    Normalization happens inside, so callers (perturbations, metrics) work in
    plain pixel space. Wrap any ``nn.Module`` that maps normalized images to
    logits::

        clf = Classifier(my_net, name="my_net", input_size=(224, 224),
                         class_names=[...], mean=..., std=...)
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        input_size: tuple[int, int] | int,
        class_names: Sequence[str] | None = None,
        num_classes: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        crop_pct: float = 0.875,
        interpolation: str = "bilinear",
        source: str = "custom",
    ) -> None:
        super().__init__()
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        self.model = model
        self.name = name
        self.source = source
        self.preprocessing = Preprocessing(
            input_size=(int(input_size[0]), int(input_size[1])),
            mean=tuple(float(m) for m in mean),  # type: ignore[arg-type]
            std=tuple(float(s) for s in std),  # type: ignore[arg-type]
            crop_pct=crop_pct,
            interpolation=interpolation,
        )
        if class_names is None:
            if num_classes is None:
                raise ValueError("give class_names or num_classes")
            class_names = [f"class {i}" for i in range(num_classes)]
        if num_classes is not None and num_classes != len(class_names):
            raise ValueError(f"num_classes={num_classes} but {len(class_names)} class names given")
        self.class_names: list[str] = list(class_names)
        self.weights_ref: str | None = None
        # feed the network channels-last images: its convolutions then run in that layout, 20-40% faster
        # on the CPU (scripts/benchmark.py --layouts), same values up to float rounding. Off for wrapped
        # modules, which may .view() their input; load_classifier turns it on for the networks it builds.
        # The weights stay contiguous (saveable as they are).
        self.channels_last = False
        # False for classifiers you can only call (models/blackbox.py): no gradients, no layers to read
        self.differentiable = True
        self.black_box_fingerprint: str | None = None
        self.register_buffer("_mean", torch.tensor(self.preprocessing.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.preprocessing.std).view(1, 3, 1, 1), persistent=False)
        self.eval()

    @property
    def input_size(self) -> tuple[int, int]:
        return self.preprocessing.input_size

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def device(self) -> torch.device:
        return self._mean.device

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: [0,1] RGB ``(B,3,H,W)`` -> logits ``(B,K)``."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name}: expected images of shape (B,3,H,W), got {tuple(images.shape)}")
        x = (images - self._mean) / self._std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-1 class and its softmax score, each ``(B,)``."""
        probs = self(images).softmax(dim=1)
        score, cls = probs.max(dim=1)
        return cls, score

    def freeze(self) -> Classifier:
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def fingerprint(self) -> str:
        """A hash of every tensor in the network's state (names, dtypes, shapes and values): two
        classifiers with the same fingerprint compute the same function. 16 hex digits. A black box
        has no tensors to hash: its own fingerprint (a file hash, a version) stands in."""
        if self.black_box_fingerprint is not None:
            return self.black_box_fingerprint
        h = hashlib.sha256()
        for name, t in sorted(self.model.state_dict().items()):
            t = t.detach().cpu().contiguous().reshape(-1)
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "input_size": list(self.input_size),
            "num_classes": self.num_classes,
        }


# ----------------------------------------------------------------- helpers


def imagenet_class_names() -> list[str]:
    from timm.data import ImageNetInfo

    return list(ImageNetInfo().label_descriptions())


def find_linear_classifier(model: nn.Module) -> nn.Linear | None:
    """The final linear layer of a CNN (timm's get_classifier, else the last nn.Linear)."""
    getter = getattr(model, "get_classifier", None)
    if callable(getter):
        head = getter()
        if isinstance(head, nn.Linear):
            return head
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last


__all__ = [
    "Classifier",
    "Preprocessing",
    "imagenet_class_names",
    "find_linear_classifier",
    "RANDOM_WEIGHTS",
]
