"""A fresh explainer to train: backbone, auxiliary and a head initialised as the config says."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..explainer import PTameExplainer
from ..explainer.explainer import DEFAULT_GATE_MARGIN
from ..images import load_image
from ..models import Classifier, FeatureExtractor, default_layers, load_classifier
from .config import TrainConfig
from .readout import Readout, distill_calls, distill_readout


def load_networks(
    config: TrainConfig, device: torch.device, backbone: Classifier | None = None, auxiliary: Classifier | None = None
) -> tuple[Classifier, Classifier]:
    """The backbone and the auxiliary ``config`` names (each unless given), the backbone with the
    class names ``config.class_names`` asks for; a given backbone is moved to ``device``."""
    if backbone is None:
        backbone = load_classifier(config.backbone, config.backbone_weights, device=device)
    else:
        backbone = backbone.to(device)
    if config.class_names:
        backbone.class_names = config_class_names(config, backbone.num_classes)
    if auxiliary is None:
        auxiliary = load_classifier(config.auxiliary, config.auxiliary_weights, device=device)
    return backbone, auxiliary


def build_explainer(
    config: TrainConfig,
    device: torch.device,
    calibration_files: Sequence[Path] | None = None,
    backbone: Classifier | None = None,
    report: bool = True,
    auxiliary: Classifier | None = None,
    distilled: Readout | None = None,
) -> PTameExplainer:
    """Backbone (``config.backbone`` unless given), auxiliary and a freshly initialised head
    (see ``TrainConfig.init``).

    The auxiliary-CAM start and the shared head read the auxiliary's last features through
    a classifier of the backbone's classes: the auxiliary's own when it has them, else one
    distilled from the backbone's outputs on ``calibration_files`` (the training images), or
    ``distilled``, one distilled before (a resumed run's). Without ``calibration_files`` the CAM
    start is not calibrated; the backbone is called only to distill and to calibrate
    (:func:`setup_calls` of them).
    ``report`` prints which start and head were chosen, and why.
    """
    backbone, auxiliary = load_networks(config, device, backbone, auxiliary)
    size = tuple(config.aux_input_size) if config.aux_input_size else None
    features = FeatureExtractor(auxiliary, config.layers or default_layers(auxiliary), size)
    own = features.cam_weights(backbone.class_names)
    # a black box also needs one: its differentiable surrogate reads the auxiliary through it
    wants_readout = config.init == "aux-cam" or config.head == "shared" or not backbone.differentiable
    readout = None
    fit = None
    if own is not None:
        weight, bias = own
        fit = Readout(weight, torch.zeros(len(weight)) if bias is None else bias)
        why = f"auxiliary {auxiliary.name} classifies the backbone's {backbone.num_classes} classes: its own classifier"
    elif not wants_readout:
        why = "the paper's recipe: no readout"
    elif distilled is None and not calibration_files:
        raise ValueError(
            f"auxiliary {auxiliary.name} does not classify backbone {backbone.name}'s classes, so the start needs "
            "a readout distilled on training images; none were given"
        )
    else:
        fit = distilled or distill_readout(features, backbone, calibration_files, tuple(config.crop_scale), config.seed)
        readout = fit.weight
        why = (
            f"auxiliary {auxiliary.name} does not have backbone {backbone.name}'s {backbone.num_classes} classes: a "
            f"readout distilled from the backbone on {fit.images} images x {fit.views} views (held-out top-1 "
            f"agreement {fit.agreement:.2f}, ridge {fit.ridge:g})"
        )
    explainer = PTameExplainer(
        backbone,
        auxiliary,
        features.layers,
        size,
        head_bias=config.uses_head_bias(),
        head=config.head,  # type: ignore[arg-type]
        extra_aux_sizes=config.aux_sides(max(features.input_size))[1],
        readout=readout,
        # the class gate localizes with the auxiliary's own classifier ("auto" picks the shared head there); a
        # distilled 9-class readout moved little (docs/results.md)
        gate_margin=DEFAULT_GATE_MARGIN if own is not None and config.head in ("shared", "auto") else None,
    )
    if readout is not None:
        explainer.training_info["readout"] = fit.info()
    explainer.start_readout = fit  # the surrogate of a black-box backbone starts from it
    if config.init == "aux-cam":
        explainer.head.init_from_cam(own[0] if own is not None else readout)  # type: ignore[arg-type]
        if calibration_files:
            images = calibration_batch(explainer, calibration_files, config)
            calibrate_cam(explainer, images.to(device), config.cam_keep)
        start = "the auxiliary's CAM, calibrated"
    elif config.init == "paper":
        start = "the paper's random init"
    else:
        raise ValueError(f"unknown init {config.init!r}: use 'aux-cam' or 'paper'")
    if config.init_from:
        from ..explainer import load_explainer

        start_from = load_explainer(config.init_from, backbone=explainer.backbone, auxiliary=explainer.auxiliary)
        if (
            start_from.layers != explainer.layers
            or start_from.head.state_dict().keys() != explainer.head.state_dict().keys()
        ):
            raise ValueError(
                f"{config.init_from} has another head layout ({start_from.head.kind} head, layers "
                f"{start_from.layers}); cannot start from it"
            )
        explainer.head.load_state_dict(start_from.head.state_dict())
        start = f"the head of {config.init_from}"
    if report:
        gate = (
            f"shown with the class gate (margin {explainer.gate_margin:g})"
            if explainer.gate_margin is not None
            else "shown without the class gate"
        )
        print(f"glancemap: start: {start}; head: {explainer.head.kind}; readout: {why}; maps {gate}", file=sys.stderr)
    return explainer.to(device)


@torch.no_grad()
def calibrate_cam(explainer: PTameExplainer, images: torch.Tensor, keep: float) -> None:
    """Rescales a CAM-initialised head so its sigmoid maps are soft, not saturated.

    Raw CAM values are logit-sized (tens), so ``sigmoid(CAM)`` is ~1 almost
    everywhere. We scale the fusion so the target maps' pixel values have a
    standard deviation of 2 and set the bias so a ``keep`` fraction of pixels
    lies above 0.5: the head starts as a soft, thresholded auxiliary CAM.
    """
    head = explainer.head
    targets = explainer.backbone(images).argmax(dim=1)
    raw = head(explainer.features(images), targets, per_sample=True).flatten()
    scale = 2.0 / raw.std().clamp_min(1e-6)
    threshold = torch.quantile(raw.float(), 1.0 - keep)
    head.rescale_(scale.item(), -(threshold * scale).item())


def calibration_size(n_images: int, batch_size: int) -> int:
    """How many images calibrate the CAM start: one batch, at least 8."""
    return min(n_images, max(batch_size, 8))


def setup_calls(config: TrainConfig, n_images: int, distills: bool) -> int:
    """Backbone calls :func:`build_explainer` makes on ``n_images`` calibration files: the readout's
    distillation (if ``distills``) and the CAM start's calibration."""
    return (distill_calls(n_images) if distills else 0) + (
        calibration_size(n_images, config.batch_size) if config.init == "aux-cam" else 0
    )


def calibration_batch(explainer: PTameExplainer, files: Sequence[Path], config: TrainConfig) -> torch.Tensor:
    """Up to one batch of centre-cropped images, the same on every rank (for aux-cam calibration)."""
    transform = explainer.backbone.preprocessing.eval_transform()
    g = torch.Generator().manual_seed(config.seed)
    pick = torch.randperm(len(files), generator=g)[: calibration_size(len(files), config.batch_size)].tolist()
    return torch.stack([transform(load_image(files[i])) for i in pick])


def config_class_names(config: TrainConfig, expected: int) -> list[str]:
    """The class names ``config.class_names`` asks for: a file's lines, or the data folder's subfolders."""
    from ..models.loading import folder_class_names, read_class_names

    if config.class_names == "folders":
        folders = [d for d in config.data if Path(d).is_dir()]
        if len(folders) != 1:
            raise ValueError("class_names='folders' needs exactly one data folder (its subfolders name the classes)")
        return read_class_names(folder_class_names(folders[0]), expected)
    return read_class_names(config.class_names, expected)
