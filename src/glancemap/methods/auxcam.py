"""The auxiliary network's plain CAM: P-TAME's untrained starting point."""

from __future__ import annotations

import torch

from ..maps import minmax_normalize, resize_maps
from ..models import FeatureExtractor, default_layers
from .base import Explainer, Targets
from .registry import register_method


class AuxiliaryCAM(Explainer):
    """Plain CAM (Zhou et al. 2016) of P-TAME's auxiliary network for the backbone's class.

    Pre-pooling features times the auxiliary classifier's weights for the class,
    ReLU, bilinear upsampling, min-max. No training, no access to the backbone's
    insides: the baseline that shows whether P-TAME's training adds anything.
    """

    def __init__(self, backbone, auxiliary, layer: str | None = None) -> None:
        self.backbone, self.auxiliary = backbone, auxiliary
        self.features = FeatureExtractor(auxiliary, [layer or default_layers(auxiliary)[-1]])
        cam = self.features.cam_weights(backbone.class_names)
        if cam is None:
            raise ValueError(
                "auxiliary CAM needs a pre-pooling layer feeding a linear classifier over the backbone's classes"
            )
        self.weight = cam[0]

    @torch.no_grad()
    def explain(self, images: torch.Tensor, targets: Targets = None) -> torch.Tensor:
        t = self.targets(images, targets)
        (feat,) = self.features(images)
        cam = torch.einsum("bchw,bc->bhw", feat, self.weight.to(feat)[t]).relu().unsqueeze(1)
        return minmax_normalize(resize_maps(cam, images.shape[-2:]))


def _auxiliary(ctx):
    # an exported (ONNX) explainer holds no PyTorch auxiliary: the context's own one serves
    return getattr(ctx.explainer, "auxiliary", None) or ctx.auxiliary


register_method(
    "auxcam",
    "Auxiliary CAM",
    lambda ctx: AuxiliaryCAM(ctx.backbone, _auxiliary(ctx)),
    needs="auxiliary",
    identity=lambda ctx: {"auxiliary": _auxiliary(ctx).name},
    summary="plain CAM of P-TAME's auxiliary network for the backbone's class (no training)",
)
