"""Explanation methods behind one interface, registered by name.

Every method is an :class:`Explainer`: ``explain(images (B,3,H,W) in [0,1],
targets) -> maps (B,1,H,W) in [0,1]``. :data:`METHODS` lists them by name;
:func:`create_method` builds one for a backbone.
"""

# each module registers its methods on import; this order is the order they are listed in
from . import ptame, cam, rise, opticam, auxcam, reference  # noqa: F401, I001
from .auxcam import AuxiliaryCAM
from .base import Explainer, Targets, check_images
from .cam import GradCamMethod, quiet_grad_cam_bars, target_module, vit_reshape
from .opticam import OptiCAM
from .ptame import explainer_identity
from .reference import CenteredGaussian, UniformRandom
from .registry import METHODS, MethodContext, MethodSpec, create_method, method_label, method_names, register_method
from .rise import RISE

__all__ = [
    "Explainer",
    "Targets",
    "check_images",
    "METHODS",
    "MethodContext",
    "MethodSpec",
    "register_method",
    "create_method",
    "method_label",
    "method_names",
    "explainer_identity",
    "GradCamMethod",
    "quiet_grad_cam_bars",
    "target_module",
    "vit_reshape",
    "OptiCAM",
    "AuxiliaryCAM",
    "RISE",
    "CenteredGaussian",
    "UniformRandom",
]
