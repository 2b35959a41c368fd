"""The frozen auxiliary network: multi-scale features read through forward hooks.

Hooks are fine here: the auxiliary is ours to inspect. The *backbone* is
never hooked; it stays a black box.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .classifier import Classifier, find_linear_classifier


class FeatureExtractor(nn.Module):
    """Runs a frozen classifier and returns the outputs of the named modules.

    Args:
        classifier: the auxiliary network (frozen, eval mode).
        layers: module names, shallow to deep.
        input_size: images are resized to this before the pass (default: the
            auxiliary's own input size), which fixes the explanation's cost.
    """

    def __init__(self, classifier: Classifier, layers: Sequence[str], input_size: tuple[int, int] | None = None):
        super().__init__()
        self.classifier = classifier.freeze()
        self.layers = list(layers)
        self.input_size = tuple(input_size or classifier.input_size)
        modules = dict(classifier.model.named_modules())
        missing = [name for name in self.layers if name not in modules]
        if missing:
            raise ValueError(f"auxiliary {classifier.name!r} has no module(s) {missing}")
        self._modules_to_read = [modules[name] for name in self.layers]
        self._store: dict[str, torch.Tensor] = {}
        self._shapes: list[tuple[int, int, int]] | None = None

    def _hook(self, name: str):
        def fn(_module, _inp, out):
            if isinstance(out, (tuple, list)):
                out = out[0]
            self._store[name] = out

        return fn

    def train(self, mode: bool = True) -> FeatureExtractor:
        # the auxiliary is always in eval mode: its BN statistics are part of it
        super().train(mode)
        self.classifier.eval()
        return self

    def forward(
        self, images: torch.Tensor, size: tuple[int, int] | None = None, grad: bool = False
    ) -> list[torch.Tensor]:
        """images: [0,1] ``(B,3,H,W)`` -> one ``(B,C_i,h_i,w_i)`` map per layer.

        ``size`` runs the auxiliary at another resolution than ``input_size``
        (multi-scale inference); the maps' sizes follow it. ``grad=True`` keeps the
        graph back to ``images`` (the auxiliary's weights stay frozen), for a
        differentiable stand-in of a black-box backbone.
        """
        size = tuple(size or self.input_size)
        # hooks live only during this pass, so several extractors (the explainer,
        # an auxiliary-CAM baseline) can share one auxiliary network
        handles = [m.register_forward_hook(self._hook(n)) for n, m in zip(self.layers, self._modules_to_read)]
        try:
            with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
                if tuple(images.shape[-2:]) != size:
                    images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
                self.classifier(images)
        finally:
            for h in handles:
                h.remove()
        feats = []
        for name in self.layers:
            f = self._store.pop(name)
            if f.ndim != 4:
                raise ValueError(
                    f"layer {name!r} gives a {f.ndim}-D output {tuple(f.shape)}; "
                    "P-TAME needs (B,C,h,w) feature maps (for token models, pick conv layers)"
                )
            feats.append(f)
        return feats

    def feature_shapes(self) -> list[tuple[int, int, int]]:
        """(C, h, w) of each layer at the extractor's input size."""
        if self._shapes is None:
            probe = torch.zeros(1, 3, *self.input_size, device=self.classifier.device)
            self._shapes = [tuple(f.shape[1:]) for f in self(probe)]  # type: ignore[misc]
        return self._shapes

    def cam_weights(self, class_names: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """(K,C_last) weights and bias of the linear classifier fed by the last layer, if it is one.

        With ``class_names`` (the backbone's), also None unless the auxiliary has the same classes.
        """
        fc = find_linear_classifier(self.classifier.model)
        last_channels = self.feature_shapes()[-1][0]
        if fc is None or fc.in_features != last_channels or fc.out_features != self.classifier.num_classes:
            return None
        if class_names is not None and list(class_names) != self.classifier.class_names:
            return None
        bias = None if fc.bias is None else fc.bias.detach().clone()
        return fc.weight.detach().clone(), bias
