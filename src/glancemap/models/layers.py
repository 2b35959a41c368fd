"""Which layers each known architecture is read at: one table for every part of glancemap.

Per name pattern (fnmatch on ``Classifier.name``, first match wins):

- **feature layers**, read when the network is P-TAME's *auxiliary*: the last
  block of each resolution stage plus, where the network has one, the
  pre-pooling map that feeds its linear classifier (so a head can start as
  the auxiliary's own CAM);
- **CAM layer**, read when the network is the *backbone* of a CAM method: the
  last convolutional map (for ViT, the last block's input norm, reshaped to
  its token grid).

``None`` means the pattern names no such layer; the next matching row, or
timm's ``feature_info``, decides.
"""

from __future__ import annotations

import fnmatch

from .classifier import Classifier

_LITE_STAGES = ["blocks.1", "blocks.2", "blocks.4", "blocks.6", "bn2"]
_RESNET_STAGES = ["layer1", "layer2", "layer3", "layer4"]

# pattern, feature layers (auxiliary), CAM layer (backbone)
ARCHITECTURE_LAYERS: list[tuple[str, list[str] | None, str | None]] = [
    ("efficientnet_lite*", _LITE_STAGES, "bn2"),
    ("restricted_imagenet9", [f"net.{n}" for n in _LITE_STAGES], "net.bn2"),
    ("*tf_efficientnet_lite*", _LITE_STAGES, "bn2"),
    ("*efficientnet_b*", _LITE_STAGES, "bn2"),
    ("*efficientnet*", None, "bn2"),
    ("*resnet18", _RESNET_STAGES, "layer4"),
    ("*resnet34", _RESNET_STAGES, "layer4"),
    ("*resnet50", _RESNET_STAGES, "layer4"),
    ("*resnet101", _RESNET_STAGES, "layer4"),
    ("*resnet*", None, "layer4"),
    ("*vgg16*", None, "features.29"),
    ("*vit_b_16", None, "encoder.layers.encoder_layer_11.ln_1"),
]


def default_layers(classifier: Classifier) -> list[str]:
    """Feature layers to read when ``classifier`` is the auxiliary network."""
    for pattern, layers, _ in ARCHITECTURE_LAYERS:
        if layers is not None and fnmatch.fnmatch(classifier.name, pattern):
            return list(layers)
    info = getattr(classifier.model, "feature_info", None)  # any timm model
    if info is not None:
        return [f["module"] for f in info][-4:]
    raise ValueError(
        f"no default feature layers for auxiliary {classifier.name!r}; pass layers=[...] "
        f"(module names from auxiliary.model.named_modules())"
    )


def default_target_layer(classifier: Classifier) -> str:
    """Module name (in ``classifier.model``) that CAM methods read when ``classifier`` is the backbone."""
    for pattern, _, layer in ARCHITECTURE_LAYERS:
        if layer is not None and fnmatch.fnmatch(classifier.name, pattern):
            return layer
    info = getattr(classifier.model, "feature_info", None)
    if info is not None:
        return info[-1]["module"]
    raise ValueError(f"no default CAM target layer for {classifier.name!r}; pass target_layer=...")
