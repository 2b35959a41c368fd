"""The auxiliary network's plain CAM: P-TAME's untrained starting point."""

from __future__ import annotations

import torch

from ..maps import minmax_normalize, resize_maps
from ..models import FeatureExtractor, default_layers
from .base import Explainer, Targets
from .registry import register_method


class AuxiliaryCAM(Explainer):
    """Plain CAM (Zhou et al. 2016) of P-TAME's auxiliary network for the backbone's class.

    Pre-pooling features times the class's readout weights, ReLU, bilinear
    upsampling, min-max. The readout is the auxiliary's own classifier when it
    has the backbone's classes, else ``readout``: one distilled from the
    backbone (a trained explainer's, :mod:`glancemap.training.readout`). No
    training, no access to the backbone's insides: the baseline that shows
    whether P-TAME's training adds anything.

    Args:
        backbone, auxiliary: the classifiers.
        layer: the auxiliary's pre-pooling layer (default: its last feature layer).
        readout: ``(K, C)`` weights over that layer's channels, K the backbone's classes.
    """

    def __init__(self, backbone, auxiliary, layer: str | None = None, readout: torch.Tensor | None = None) -> None:
        self.backbone, self.auxiliary = backbone, auxiliary
        self.features = FeatureExtractor(auxiliary, [layer or default_layers(auxiliary)[-1]])
        if readout is None:
            cam = self.features.cam_weights(backbone.class_names)
            if cam is None:
                raise ValueError(
                    f"the auxiliary CAM needs {auxiliary.name!r} to classify {backbone.name!r}'s classes with a "
                    "linear layer on its last features, or an explainer with a readout distilled for them "
                    "(a PyTorch explainer folder that train wrote, not an exported .onnx file), or leave auxcam out"
                )
            readout = cam[0]
        channels = self.features.feature_shapes()[-1][0]
        if readout.shape != (backbone.num_classes, channels):
            raise ValueError(
                f"readout {tuple(readout.shape)} does not fit {backbone.num_classes} classes x {channels} channels"
            )
        self.weight = readout.detach().clone()

    @torch.no_grad()
    def explain(self, images: torch.Tensor, targets: Targets = None) -> torch.Tensor:
        t = self.targets(images, targets)
        (feat,) = self.features(images)
        cam = torch.einsum("bchw,bc->bhw", feat, self.weight.to(feat)[t]).relu().unsqueeze(1)
        return minmax_normalize(resize_maps(cam, images.shape[-2:]))


def _auxiliary(ctx):
    # an exported (ONNX) explainer holds no PyTorch auxiliary: the context's own one serves
    return getattr(ctx.explainer, "auxiliary", None) or ctx.auxiliary


def _distilled(ctx) -> tuple[str, torch.Tensor] | None:
    """The explainer's last layer and its readout, when that readout was distilled from the backbone."""
    head = getattr(ctx.explainer, "head", None)
    if head is None or not getattr(head, "stored", False):
        return None
    return ctx.explainer.layers[-1], head.readout


def _build(ctx) -> AuxiliaryCAM:
    layer, readout = _distilled(ctx) or (None, None)
    return AuxiliaryCAM(ctx.backbone, _auxiliary(ctx), layer, readout)


def _identity(ctx) -> dict:
    # the readout is named only when distilled, so result folders of the auxiliary's own CAM stay valid
    return {"auxiliary": _auxiliary(ctx).name} | ({"readout": "distilled"} if _distilled(ctx) else {})


register_method(
    "auxcam",
    "Auxiliary CAM",
    _build,
    needs="auxiliary",
    identity=_identity,
    summary="plain CAM of P-TAME's auxiliary network for the backbone's class, read through the explainer's "
    "distilled readout when the auxiliary lacks those classes (no training)",
)
