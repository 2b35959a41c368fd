"""A fresh explainer to train: backbone, auxiliary and a head initialised as the config says."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..explainer import PTameExplainer
from ..images import load_image
from ..models import Classifier, load_classifier
from .config import TrainConfig


def build_explainer(
    config: TrainConfig,
    device: torch.device,
    calibration_files: Sequence[Path] | None = None,
    backbone: Classifier | None = None,
) -> PTameExplainer:
    """Backbone (``config.backbone`` unless given), auxiliary and a freshly initialised head
    (see ``TrainConfig.init``)."""
    if backbone is None:
        backbone = load_classifier(config.backbone, config.backbone_weights, device=device)
    if config.class_names:
        backbone.class_names = config_class_names(config, backbone.num_classes)
    auxiliary = load_classifier(config.auxiliary, config.auxiliary_weights, device=device)
    size = tuple(config.aux_input_size) if config.aux_input_size else None
    explainer = PTameExplainer(
        backbone,
        auxiliary,
        config.layers,
        size,
        head_bias=config.uses_head_bias(),
        head=config.head,  # type: ignore[arg-type]
        extra_aux_sizes=config.extra_aux_sizes,
    )
    if config.init == "aux-cam":
        cam = explainer.features.cam_weights(backbone.class_names)
        if cam is None:
            print(
                "glancemap: aux-cam init needs the last auxiliary layer to feed its linear classifier and the same "
                "classes as the backbone; using the paper's default init instead",
                file=sys.stderr,
            )
        else:
            explainer.head.init_from_cam(cam[0])
            if calibration_files:
                images = calibration_batch(explainer, calibration_files, config)
                calibrate_cam(explainer, images.to(device), config.cam_keep)
    elif config.init != "paper":
        raise ValueError(f"unknown init {config.init!r}: use 'aux-cam' or 'paper'")
    if config.init_from:
        from ..explainer import load_explainer

        start = load_explainer(config.init_from, backbone=explainer.backbone, auxiliary=explainer.auxiliary)
        if start.layers != explainer.layers or start.head.state_dict().keys() != explainer.head.state_dict().keys():
            raise ValueError(
                f"{config.init_from} has another head layout ({start.head.kind} head, layers {start.layers}); "
                "cannot start from it"
            )
        explainer.head.load_state_dict(start.head.state_dict())
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


def calibration_batch(explainer: PTameExplainer, files: Sequence[Path], config: TrainConfig) -> torch.Tensor:
    """Up to one batch of centre-cropped images, the same on every rank (for aux-cam calibration)."""
    transform = explainer.backbone.preprocessing.eval_transform()
    g = torch.Generator().manual_seed(config.seed)
    pick = torch.randperm(len(files), generator=g)[: max(config.batch_size, 8)].tolist()
    return torch.stack([transform(load_image(files[i])) for i in pick])


def config_class_names(config: TrainConfig, expected: int) -> list[str]:
    """The class names ``config.class_names`` asks for: a file's lines, or the data folder's subfolders."""
    from ..models.classifier import folder_class_names, read_class_names

    if config.class_names == "folders":
        folders = [d for d in config.data if Path(d).is_dir()]
        if len(folders) != 1:
            raise ValueError("class_names='folders' needs exactly one data folder (its subfolders name the classes)")
        return read_class_names(folder_class_names(folders[0]), expected)
    return read_class_names(config.class_names, expected)
