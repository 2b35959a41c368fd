"""Reference explainers behind the common ``explain(images, targets) -> maps`` interface."""

from __future__ import annotations

import contextlib
import functools
import importlib
import types
import unittest.mock

import numpy as np
import torch

from .models.layers import default_target_layer


class Explainer:
    """Base class: ``explain(images (B,3,H,W) in [0,1], targets (B,) or None) -> maps (B,1,H,W) in [0,1]``."""

    def explain(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        return self.explain(images, targets)


class CenteredGaussian(Explainer):
    """A Gaussian bump in the image centre, sigma a fraction of the side: the 'photographer's prior'."""

    def __init__(self, sigma: float = 0.25) -> None:
        self.sigma = sigma

    def explain(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = images.shape
        ys = (torch.arange(h, device=images.device, dtype=torch.float32) + 0.5) / h - 0.5
        xs = (torch.arange(w, device=images.device, dtype=torch.float32) + 0.5) / w - 0.5
        g = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * self.sigma**2))
        return g.expand(b, 1, h, w).clone()


class UniformRandom(Explainer):
    """Independent uniform noise per pixel (seeded): a map that knows nothing."""

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def explain(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = images.shape
        return torch.rand(b, 1, h, w, generator=self.generator).to(images.device)


# ----------------------------------------------------------------- CAM family (pytorch-grad-cam)

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
        self.classifier = classifier
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

    def explain(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        if targets is None:
            targets = self.classifier.predict(images)[0]
        wanted = [ClassifierOutputTarget(int(t)) for t in torch.as_tensor(targets).flatten()]
        # the backbone's weights are frozen: the input must require grad for a graph to exist
        from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients

        step = self.IMAGES_PER_CALL.get(self.name) or len(images)
        self.cam.activations_and_grads = ActivationsAndGradients(*self._hooks, self.cam.detach)
        try:
            with torch.enable_grad(), quiet_grad_cam_bars():
                maps = [self.cam(input_tensor=images[i : i + step].detach().requires_grad_(True),
                                 targets=wanted[i : i + step]) for i in range(0, len(images), step)]
        finally:
            self.cam.activations_and_grads.release()
        return torch.from_numpy(np.concatenate(maps)).to(images.device, torch.float32).unsqueeze(1)


class OptiCAM(Explainer):
    """Opti-CAM (Zhang et al., CVIU 2024): per image, the CAM weights that best keep the class.

    The map is ``minmax(upsample(sum_k softmax(u)_k * relu(A_k)))`` over the
    target layer's channels ``A_k``; ``u`` (one vector per image, uniform at
    the start) is fitted by Adam to maximise the backbone's **logit** for the
    target class on ``image * map``. Each step is one forward and one backward
    pass of the backbone, so a map costs ``steps + 1`` forward passes.

    Args:
        classifier: the backbone (takes [0,1] images; normalization is inside it).
        target_layer: module name in ``classifier.model`` (default per backbone).
        steps: Adam iterations (the authors' demo script uses 50).
        lr: Adam learning rate on ``u``.
    """

    LR = 0.1  # the default; glancemap evaluate records it in the method's identity

    def __init__(self, classifier, target_layer: str | None = None, steps: int = 100, lr: float = LR) -> None:
        if steps < 1:
            raise ValueError(f"Opti-CAM needs at least one step, got {steps}")
        self.classifier, self.steps, self.lr = classifier, steps, lr
        _, self.module, self.reshape = target_module(classifier, target_layer)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``relu`` of the target layer's output, (B,K,h,w)."""
        grabbed: list[torch.Tensor] = []
        handle = self.module.register_forward_hook(lambda _m, _i, out: grabbed.append(out))
        try:
            self.classifier(images)
        finally:
            handle.remove()
        feat = grabbed[0] if self.reshape is None else self.reshape(grabbed[0])
        return feat.float().relu()

    def explain(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        from .maps import minmax_normalize, resize_maps

        if targets is None:
            targets = self.classifier.predict(images)[0]
        t = torch.as_tensor(targets, device=images.device).flatten()
        images = images.detach()
        feat = self.features(images)
        u = torch.zeros(feat.shape[:2], device=images.device, requires_grad=True)
        optimizer = torch.optim.Adam([u], lr=self.lr)

        def saliency() -> torch.Tensor:
            cam = torch.einsum("bk,bkhw->bhw", u.softmax(dim=1), feat).unsqueeze(1)
            return minmax_normalize(resize_maps(cam, images.shape[-2:]))

        with torch.enable_grad():
            for _ in range(self.steps):
                logits = self.classifier(images * saliency())
                # each image's logit depends on its own u only, so one sum serves the whole batch
                loss = -logits.gather(1, t[:, None]).sum()
                (grad,) = torch.autograd.grad(loss, [u])
                u.grad = grad
                optimizer.step()
        with torch.no_grad():
            return saliency()


class AuxiliaryCAM(Explainer):
    """Plain CAM (Zhou et al. 2016) of P-TAME's auxiliary network for the backbone's class.

    Pre-pooling features times the auxiliary classifier's weights for the class,
    ReLU, bilinear upsampling, min-max. No training, no access to the backbone's
    insides: the baseline that shows whether P-TAME's training adds anything.
    """

    def __init__(self, backbone, auxiliary, layer: str | None = None) -> None:
        from .models import FeatureExtractor, default_layers

        self.backbone, self.auxiliary = backbone, auxiliary
        self.features = FeatureExtractor(auxiliary, [layer or default_layers(auxiliary)[-1]])
        cam = self.features.cam_weights(backbone.class_names)
        if cam is None:
            raise ValueError("auxiliary CAM needs a pre-pooling layer feeding a linear classifier over the backbone's classes")
        self.weight = cam[0]

    @torch.no_grad()
    def explain(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        from .maps import minmax_normalize, resize_maps

        if targets is None:
            targets = self.backbone.predict(images)[0]
        t = torch.as_tensor(targets, device=images.device).flatten()
        (feat,) = self.features(images)
        cam = torch.einsum("bchw,bc->bhw", feat, self.weight.to(feat)[t]).relu().unsqueeze(1)
        return minmax_normalize(resize_maps(cam, images.shape[-2:]))


class RISE(Explainer):
    """RISE (Petsiuk et al. 2018): saliency as the score-weighted mean of random masks.

    ``n_masks`` binary ``cells x cells`` grids with keep probability ``p``,
    upsampled bilinearly with a random shift; seeded and batched.
    """

    def __init__(self, classifier, n_masks: int = 4000, cells: int = 7, p: float = 0.5, batch_size: int = 64,
                 seed: int = 0) -> None:
        self.classifier = classifier
        self.n_masks, self.cells, self.p, self.batch_size, self.seed = n_masks, cells, p, batch_size, seed
        self._masks: torch.Tensor | None = None

    def masks(self, size: tuple[int, int], device: torch.device) -> torch.Tensor:
        if self._masks is None or tuple(self._masks.shape[-2:]) != tuple(size) or self._masks.device != device:
            import torch.nn.functional as F

            g = torch.Generator().manual_seed(self.seed)
            h, w = size
            ch, cw = -(-h // self.cells), -(-w // self.cells)
            grid = (torch.rand(self.n_masks, 1, self.cells, self.cells, generator=g) < self.p).float()
            up = F.interpolate(grid, size=((self.cells + 1) * ch, (self.cells + 1) * cw), mode="bilinear",
                               align_corners=False)
            dy = torch.randint(0, ch, (self.n_masks,), generator=g)
            dx = torch.randint(0, cw, (self.n_masks,), generator=g)
            crops = [up[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(self.n_masks)]
            self._masks = torch.stack(crops).to(device)  # cached where it is used, not copied per call
        return self._masks

    @torch.no_grad()
    def explain(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        from .maps import minmax_normalize

        if targets is None:
            targets = self.classifier.predict(images)[0]
        t = torch.as_tensor(targets, device=images.device).flatten()
        masks = self.masks(tuple(images.shape[-2:]), images.device)
        out = []
        for img, cls in zip(images, t):
            sal = torch.zeros(images.shape[-2:], device=images.device)
            for i in range(0, self.n_masks, self.batch_size):
                m = masks[i : i + self.batch_size]
                scores = self.classifier(img.unsqueeze(0) * m).softmax(dim=1)[:, cls]
                sal += torch.einsum("n,nhw->hw", scores, m[:, 0])
            out.append(sal / (self.n_masks * self.p))
        return minmax_normalize(torch.stack(out).unsqueeze(1))
