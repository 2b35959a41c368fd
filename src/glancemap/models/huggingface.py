"""Hugging Face ``transformers`` image classifiers (``load_classifier("hf:<model id or folder>")``).

The model's ``ModelOutput.logits`` is what the classifier returns; its
``id2label`` names the classes, and its image processor gives the input size,
mean and std. A local folder loads without any download.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .classifier import Classifier


class LogitsOf(nn.Module):
    """A ``transformers`` classifier as a module from normalized pixels to logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


def _side(spec) -> tuple[int, int] | None:
    """(height, width) from an image processor's size or crop_size (a dict or an object)."""
    if spec is None:
        return None
    get = spec.get if isinstance(spec, dict) else (lambda k, d=None: getattr(spec, k, d))
    if get("height") and get("width"):
        return int(get("height")), int(get("width"))
    if get("shortest_edge"):
        return int(get("shortest_edge")), int(get("shortest_edge"))
    return None


def hf_classifier(ref: str, name: str) -> Classifier:
    """The image classifier ``ref`` (a Hub id, or a folder saved with ``save_pretrained``)."""
    try:
        from transformers import AutoImageProcessor, AutoModelForImageClassification
    except ImportError as exc:
        raise ImportError("Hugging Face models need transformers: pip install 'glancemap[hf]'") from exc
    kwargs = {"local_files_only": True} if Path(ref).is_dir() else {}
    try:
        model = AutoModelForImageClassification.from_pretrained(ref, **kwargs).eval()
        processor = AutoImageProcessor.from_pretrained(ref, **kwargs)
    except Exception as exc:  # missing files, no network, a file that is not a model: one message
        raise ValueError(f"cannot load the Hugging Face image classifier {ref!r}: {exc}") from exc
    crop = _side(getattr(processor, "crop_size", None)) if getattr(processor, "do_center_crop", False) else None
    resize = _side(getattr(processor, "size", None))
    size = crop or resize or (224, 224)
    crop_pct = min(1.0, size[0] / resize[0]) if crop and resize else 1.0
    labels = model.config.id2label
    names = [str(labels.get(i, labels.get(str(i), f"class {i}"))) for i in range(model.config.num_labels)]
    return Classifier(
        LogitsOf(model),
        name=name,
        input_size=size,
        class_names=names,
        mean=tuple(getattr(processor, "image_mean", None) or (0.5, 0.5, 0.5)),
        std=tuple(getattr(processor, "image_std", None) or (0.5, 0.5, 0.5)),
        crop_pct=crop_pct,
        source="huggingface",
    )
