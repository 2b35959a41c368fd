"""What defines a training run: :class:`TrainConfig` and the paper's presets of loss weights."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..checks import COUNT, COUNT_OR_ZERO, NON_NEGATIVE, POSITIVE, SIDE, Range
from ..explainer import LossWeights


@dataclass(frozen=True)
class Preset:
    loss: LossWeights
    weight_decay: float
    note: str


# The paper's tuned values per backbone (its objective: no removal term); "default" is glancemap's
# general setting, with the removal term (docs/experiments.md: the shared head needs it).
PRESETS: dict[str, Preset] = {
    "default": Preset(LossWeights(), 1e-4, "general defaults"),
    "paper-vgg16": Preset(
        LossWeights(ce=0.07278, area=0.977712, tv=1e-4, destroy=0.0), 0.13324, "P-TAME paper, VGG-16"
    ),
    "paper-resnet50": Preset(
        LossWeights(ce=0.16143, area=0.83857, tv=0.0, destroy=0.0), 2.4267e-4, "P-TAME paper, ResNet-50"
    ),
    "paper-vit_b_16": Preset(
        LossWeights(ce=0.13129, area=0.83857, tv=0.0, beta=0.0, p_area=0.5, destroy=0.0),
        1.3309e-4,
        "P-TAME paper, ViT-B/16",
    ),
}

# the default schedule: about AUTO_EPOCHS passes over the images, within [AUTO_MIN_STEPS, AUTO_MAX_STEPS]
AUTO_EPOCHS = 48
AUTO_MIN_STEPS = 200
AUTO_MAX_STEPS = 1200


def auto_steps(images: int, batch_size: int) -> int:
    """Steps of the default schedule for ``images`` training images: a budget of steps, so a few hundred
    images still get enough updates (200 at least) and large sets stop at 1200 (the shipped head's)."""
    return min(AUTO_MAX_STEPS, max(AUTO_MIN_STEPS, math.ceil(AUTO_EPOCHS * images / batch_size)))


def option(default=None, help: str = "", *, factory=None, **cli) -> Any:
    """A :class:`TrainConfig` field that is also a ``train`` flag: ``help`` and argparse settings
    (``type``, ``nargs``, ``choices``, ``metavar``; ``parse`` turns the parsed value into the field's)
    live beside the default, so the command line cannot drift from the config."""
    metadata = {"help": help, **cli}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in checkpoints and the explainer config).

    Fields made with :func:`option` are the ``train`` command's flags (``--batch-size`` for
    ``batch_size``); the others are set from Python only.
    """

    data: list[str]
    out: str
    backbone: str = option(
        "efficientnet_lite2", "classifier to explain (a registered name, timm:NAME, torchvision:NAME)"
    )
    backbone_weights: str | None = option(None, "local weights file of the backbone, or 'random'")
    class_names: str | None = option(
        None,
        "the backbone's class names: a text file with one per line, or 'folders' for the subfolder names of the "
        "(single) data folder, ImageFolder-style; stored in the explainer",
    )
    auxiliary: str = option("efficientnet_lite0", "frozen feature network")
    auxiliary_weights: str | None = option(None, "local weights file of the auxiliary, or 'random'")
    layers: list[str] | None = option(
        None,
        "comma-separated auxiliary module names (default per network)",
        parse=lambda v: v.split(",") if v else None,
        type=str,
    )
    aux_input_size: list[int] | None = option(
        None,
        "side the auxiliary sees (default: its own input size)",
        type=int,
        parse=lambda v: [v, v] if v else None,
        range=SIDE,
    )
    extra_aux_sizes: list[int] | None = option(
        None,
        "multi-scale inference: also run the auxiliary at these sides and average the maps (saved in the "
        "explainer; default: one wider side, 10/7 of the auxiliary's rounded to 32, i.e. 320 for 224; "
        "the flag with no side: the paper's single pass)",
        type=int,
        nargs="*",
        metavar="SIDE",
        range=SIDE,
    )
    train_aux_sides: list[int] | None = option(
        None,
        "scale augmentation: each step runs the auxiliary at one of these sides, drawn at random, so the head "
        "also learns the features multi-scale inference reads (default: the auxiliary's side and the wider "
        "one above; the flag with no side: the auxiliary's side only)",
        type=int,
        nargs="*",
        metavar="SIDE",
        range=SIDE,
    )
    preset: str = option("default", "loss weights and weight decay", choices=sorted(PRESETS))
    loss: dict[str, float | str] = field(default_factory=dict)  # overrides of the preset's weights
    weight_decay: float | None = option(
        None, "AdamW weight decay (default: the preset's)", type=float, range=NON_NEGATIVE
    )
    init: str = option(
        "aux-cam",
        "aux-cam: start from the auxiliary's calibrated CAM (ours); paper: default init",
        choices=["aux-cam", "paper"],
    )
    init_from: str | None = option(None, "start from this saved explainer's head (fine-tune)")
    head: str = option(
        "auto",
        "shared: one projection read through the auxiliary's classifier, so classes absent "
        "from the training images are trained too (needs the backbone's classes on the auxiliary); "
        "per-class: the paper's head, fusion weights of its own per class; auto: shared when possible",
        choices=["auto", "shared", "per-class"],
    )
    low_rank: int | None = option(
        None,
        "train only a change of this rank of the shared head's projection, its feature blocks frozen "
        "(about 50 k weights at rank 16 instead of 4.1 M), so the head keeps its start's localization on "
        "images it has not seen (docs/results.md); default: train every weight",
        type=int,
        range=COUNT,
    )
    head_bias: bool | None = None  # None: with aux-cam (the calibration needs an offset), not with paper
    cam_keep: float = 0.4  # aux-cam calibration: fraction of pixels the initial sigmoid maps keep above 0.5
    epochs: int | None = option(
        None,
        f"passes over the images (default: a step budget picked from the image count, ~{AUTO_EPOCHS} passes "
        f"within {AUTO_MIN_STEPS}-{AUTO_MAX_STEPS} steps)",
        type=int,
        range=COUNT,
    )
    batch_size: int = option(32, "images per step (per process)", type=int, range=COUNT)
    lr: float = option(3e-4, "peak learning rate of the one-cycle schedule", type=float, range=POSITIVE)
    crop_scale: tuple[float, float] = option(
        (0.25, 1.0),
        "RandomResizedCrop's area range",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        parse=tuple,
        range=Range(above=0, maximum=1),
    )
    max_steps: int | None = option(
        None, "stop after this many steps (0: save the untrained start)", type=int, range=COUNT_OR_ZERO
    )
    holdout: float | None = option(
        None,
        "share of the images held out of training to check the trained head against its start; the better "
        "one on a ROAD-shaped test is saved (0: no check; default: 0.15 when the auxiliary does not classify "
        "the backbone's classes, else 0). Only with --init aux-cam, and only if at least 8 images are held out",
        type=float,
        range=Range(minimum=0, below=1),
    )
    call_budget: float = option(
        100.0,
        "a black-box backbone (onnx:, a callable) is called at most this many times per training image: for "
        "the readout's fit, each batch's targets, the masked images its surrogate is refitted on and the "
        "held-out check",
        type=float,
        range=POSITIVE,
    )
    checkpoint_every: int = option(50, "steps between atomic checkpoints", type=int, range=COUNT)
    workers: int = option(1, "image-loading processes (0: load in the training process)", type=int, range=COUNT_OR_ZERO)
    seed: int = option(0, "seed of the crops, the order and the auxiliary sides", type=int)
    device: str = option("auto", "cpu, cuda, cuda:N or auto")
    command: str | None = None  # the command line, recorded in the explainer's config

    def validate(self) -> None:
        """Refuses out-of-range numbers (ValueError naming the field and the allowed range)."""
        for f in fields(self):
            if "range" in f.metadata:
                f.metadata["range"].check(f.name, getattr(self, f.name))
        if self.crop_scale[0] > self.crop_scale[1]:
            raise ValueError(f"crop_scale must be (MIN, MAX) with MIN <= MAX, got {self.crop_scale}")
        self.loss_weights()  # unknown presets and loss fields, out-of-range weights

    def loss_weights(self) -> LossWeights:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {sorted(PRESETS)}")
        unknown = sorted(set(self.loss) - {f.name for f in fields(LossWeights)})
        if unknown:
            raise ValueError(f"unknown loss weight(s) {', '.join(unknown)}")
        return replace(PRESETS[self.preset].loss, **self.loss)

    def resolved_weight_decay(self) -> float:
        return PRESETS[self.preset].weight_decay if self.weight_decay is None else self.weight_decay

    # fields that must agree between a checkpoint and a resumed run (the optimiser settings in
    # RESUMABLE may change on resume: they change how fast the head moves, not what it learns from)
    RESUMABLE = ("lr", "weight_decay")
    IDENTITY = (
        "backbone",
        "backbone_weights",
        "auxiliary",
        "auxiliary_weights",
        "layers",
        "aux_input_size",
        "train_aux_sides",
        "preset",
        "loss",
        "init",
        "init_from",
        "head",
        "head_bias",
        "low_rank",
        "epochs",
        "batch_size",
        "call_budget",
        "holdout",
        "seed",
    )

    def aux_sides(self, aux_side: int) -> tuple[list[int], list[int]]:
        """``(train_aux_sides, extra_aux_sizes)`` with the defaults filled in for an auxiliary that runs at
        ``aux_side``: scale augmentation over that side and a wider one, and inference at both (the
        shipped explainers' recipe; multi-scale inference measured +0.03 ROAD LeRF-MoRF,
        docs/experiments.md)."""
        wider = max(aux_side + 32, round(aux_side * 10 / 7 / 32) * 32)
        train = [aux_side, wider] if self.train_aux_sides is None else list(self.train_aux_sides)
        extra = [wider] if self.extra_aux_sizes is None else list(self.extra_aux_sizes)
        return train, extra

    def uses_head_bias(self) -> bool:
        return self.init == "aux-cam" if self.head_bias is None else self.head_bias


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""
