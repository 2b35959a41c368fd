"""The CAM family of the ``grad-cam`` package (Grad-CAM, Grad-CAM++, Score-CAM, ...) on a backbone."""

from __future__ import annotations

import contextlib
import functools
import importlib
import types
import unittest.mock

import numpy as np
import torch

from ..models.layers import default_target_layer
from .base import Explainer, Targets
from .registry import register_method


def vit_reshape(tokens: torch.Tensor) -> torch.Tensor:
    """(B, 1+N, C) tokens with a class token -> (B, C, sqrt(N), sqrt(N)) maps."""
    b, n, c = tokens.shape
    side = int(round((n - 1) ** 0.5))
    if side * side != n - 1:
        raise ValueError(f"cannot reshape {n - 1} patch tokens to a square grid")
    return tokens[:, 1:, :].reshape(b, side, side, c).permute(0, 3, 1, 2)


def target_module(classifier, target_layer: str | None = None):
    """``(name, module, reshape)`` of the layer a CAM method reads.

    ``reshape`` turns ViT tokens into a grid; None for convolutional layers.
    """
    layer_name = target_layer or default_target_layer(classifier)
    modules = dict(classifier.model.named_modules())
    if layer_name not in modules:
        raise ValueError(f"{classifier.name!r} has no module {layer_name!r}")
    is_vit = "encoder_layer" in layer_name or ("blocks." in layer_name and "vit" in classifier.name)
    return layer_name, modules[layer_name], vit_reshape if is_vit else None


@contextlib.contextmanager
def quiet_grad_cam_bars():
    """Silence the progress bars Score-CAM and Ablation-CAM print per image batch.

    The ``grad-cam`` package has no switch for them; across an evaluation they
    flood the log with thousands of lines and hide ours. Its modules call
    ``tqdm.tqdm``, so for the duration we hand them a ``tqdm`` whose bars are
    disabled.
    """
    import tqdm

    quiet = types.SimpleNamespace(tqdm=functools.partial(tqdm.tqdm, disable=True))
    with contextlib.ExitStack() as stack:
        for name in ("score_cam", "ablation_cam"):
            module = importlib.import_module(f"pytorch_grad_cam.{name}")
            stack.enter_context(unittest.mock.patch.object(module, "tqdm", quiet))
        yield


class GradCamMethod(Explainer):
    """Any ``pytorch_grad_cam`` method on a :class:`~glancemap.models.Classifier`.

    Args:
        classifier: the backbone (takes [0,1] images; normalization is inside it).
        method: ``gradcam``, ``gradcam++``, ``scorecam``, ``ablationcam``, ``layercam``, ``eigencam``.
        target_layer: module name in ``classifier.model`` (default per backbone).
        batch_size: inner batch of Score-CAM / Ablation-CAM's masked passes.

    Score-CAM and Ablation-CAM are given ``IMAGES_PER_CALL`` images at a time:
    the package holds every channel's upsampled map of every image at once
    (about 1.5 GB per 260-px image for Lite2's 1280 channels), so a batch of 16
    ran a 24 GiB machine out of memory. The maps do not depend on the split.
    """

    METHODS = {
        "gradcam": "GradCAM",
        "gradcam++": "GradCAMPlusPlus",
        "scorecam": "ScoreCAM",
        "ablationcam": "AblationCAM",
        "layercam": "LayerCAM",
        "eigencam": "EigenCAM",
    }
    IMAGES_PER_CALL = {"scorecam": 4, "ablationcam": 4}

    def __init__(self, classifier, method: str = "gradcam", target_layer: str | None = None, batch_size: int = 32):
        import pytorch_grad_cam

        if method not in self.METHODS:
            raise ValueError(f"unknown CAM method {method!r}; choose from {sorted(self.METHODS)}")
        self.backbone = classifier
        self.name = method
        layer_name, module, reshape = target_module(classifier, target_layer)
        is_vit = reshape is not None
        kwargs = {"reshape_transform": reshape} if is_vit else {}
        cls = getattr(pytorch_grad_cam, self.METHODS[method])
        if method == "ablationcam" and is_vit:
            kwargs["ablation_layer"] = pytorch_grad_cam.AblationLayerVit()
        self.cam = cls(model=classifier, target_layers=[module], **kwargs)
        if hasattr(self.cam, "batch_size"):
            self.cam.batch_size = batch_size
        # grad-cam hooks the layer for the object's lifetime; ours hooks it only
        # during explain(), so several methods can share one backbone cheaply
        self.cam.activations_and_grads.release()
        self._hooks = (classifier, [module], reshape)

    def explain(self, images: torch.Tensor, targets: Targets = None) -> torch.Tensor:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        wanted = [ClassifierOutputTarget(int(t)) for t in self.targets(images, targets)]
        # the backbone's weights are frozen: the input must require grad for a graph to exist
        from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients

        step = self.IMAGES_PER_CALL.get(self.name) or len(images)
        self.cam.activations_and_grads = ActivationsAndGradients(*self._hooks, self.cam.detach)
        try:
            with torch.enable_grad(), quiet_grad_cam_bars():
                maps = [
                    self.cam(
                        input_tensor=images[i : i + step].detach().requires_grad_(True), targets=wanted[i : i + step]
                    )
                    for i in range(0, len(images), step)
                ]
        finally:
            self.cam.activations_and_grads.release()
        return torch.from_numpy(np.concatenate(maps)).to(images.device, torch.float32).unsqueeze(1)


_LABELS = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "scorecam": "Score-CAM",
    "ablationcam": "Ablation-CAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
}
for _name, _label in _LABELS.items():
    register_method(
        _name,
        _label,
        lambda ctx, name=_name: GradCamMethod(ctx.backbone, name, batch_size=ctx.option("cam_batch_size", 32)),
        summary=f"{_label} of the backbone's last convolutional map (grad-cam package)",
        reads_backbone=True,
    )
