"""The P-TAME explainer: auxiliary features -> attention head -> one map per class."""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from ..checks import Range
from ..maps import minmax_normalize, resize_maps
from ..methods.base import Explainer, Targets, check_images
from ..models import Classifier, FeatureExtractor, default_layers
from ..version import __version__
from .head import AttentionHead, FusionHead, SharedReadoutHead

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "head.safetensors"
FORMAT = "glancemap-explainer/1"
# explainer folders written before the project was renamed from ptame: read the same way
LEGACY_FORMATS = ("ptame-explainer/1",)
# the class gate's margin for new explainers whose readout is the auxiliary's own classifier: chosen on train-split
# grids and images, then measured on the dev split (docs/results.md, "Selective maps: the class gate")
DEFAULT_GATE_MARGIN = 4.0
DEFAULT_EXPLAINER_DIR = Path(__file__).resolve().parent.parent / "weights" / "default"


def check_sizes(sizes: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """``[(h, w), ...]`` of positive ints, from pairs or single sides (a side ``s`` means ``(s, s)``)."""
    out = []
    for size in sizes:
        pair = (size, size) if isinstance(size, int) else tuple(size)
        if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
            raise ValueError(f"an auxiliary size must be a positive side or (height, width), got {size!r}")
        out.append(pair)
    return out


def write_explainer_folder(directory: str | os.PathLike, state: dict[str, torch.Tensor], config: dict) -> Path:
    """Writes a head's ``state`` and its ``config`` into ``directory``, each file atomically."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (WEIGHTS_NAME + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp), metadata={"format": FORMAT})
    os.chmod(tmp, 0o644)
    os.replace(tmp, out / WEIGHTS_NAME)
    tmp = out / (CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps(config, indent=1))
    os.replace(tmp, out / CONFIG_NAME)
    return out


NEGATIVE_AT = ("readout", "zero")


def check_negative_at(at: str) -> str:
    """``at`` if it names where ``negative_slope`` reads a pixel's sign (one of :data:`NEGATIVE_AT`)."""
    if at not in NEGATIVE_AT:
        raise ValueError(f"negative_at must be one of {', '.join(NEGATIVE_AT)}, got {at!r}")
    return at


def check_gate_margin(margin: float | None) -> float | None:
    """``margin`` as a float, if it is a valid ``gate_margin`` (None, or a finite number >= 0)."""
    if margin is None:
        return None
    if not Range(minimum=0).allows(margin):
        raise ValueError(f"gate_margin must be None or a finite number >= 0, got {margin!r}")
    return float(margin)


def readout_logits(last_features: torch.Tensor, readout: torch.Tensor) -> torch.Tensor:
    """Every readout row's CAM on the last features: ``(B,D,h,w)`` and ``(K,D)`` give ``(B,K,h,w)``,
    each pixel's class logits as the readout sees it."""
    return torch.einsum("bdhw,kd->bkhw", last_features, readout)


def class_gate(
    last_features: torch.Tensor,
    readout: torch.Tensor,
    classes: torch.Tensor | None,
    margin: float,
    size: tuple[int, int] | torch.Size,
    per_sample: bool = False,
) -> torch.Tensor:
    """How much of each pixel a class's map keeps, in [0,1], from the readout's own view of the pixel.

    p(c | pixel) is the softmax over all K classes of the readout applied to the last auxiliary
    features at that pixel (every class's CAM logit there); see :func:`gate_from_logits`.

    Args:
        last_features: ``(B,D,h,w)``.
        readout: ``(K,D)``.
        classes, margin, size, per_sample: as :func:`gate_from_logits` takes them.
    Returns:
        ``(B,n,*size)``.
    """
    return gate_from_logits(readout_logits(last_features, readout), classes, margin, size, per_sample)


def gate_from_logits(
    logits: torch.Tensor,
    classes: torch.Tensor | None,
    margin: float,
    size: tuple[int, int] | torch.Size,
    per_sample: bool = False,
) -> torch.Tensor:
    """``min(1, e^margin * p / max_pixels p)``, p the softmax over all K classes of per-pixel
    ``logits`` ``(B,K,h,w)``: 1 wherever a class is within a factor e^margin of its most likely
    pixel, falling in proportion below that, so a map keeps its object and darkens another object
    given to another class.

    Args:
        classes: as :meth:`FusionHead.forward` takes them (None: all K).
        margin: >= 0.
        size: the gate's output resolution (bilinear).
        per_sample: one class per image.
    Returns:
        ``(B,n,*size)``.
    """
    log_p = logits.log_softmax(1)
    if classes is not None:
        if per_sample:
            log_p = log_p.gather(1, classes.view(-1, 1, 1, 1).expand(-1, 1, *log_p.shape[-2:]))
        else:
            log_p = log_p[:, classes]
    # p / max p in log space first: an absent class's p underflows float32, its ratio does not
    q = resize_maps((log_p - log_p.amax((2, 3), keepdim=True)).exp(), size)
    return (q / q.amax((2, 3), keepdim=True).clamp_min(1e-30) * math.exp(margin)).clamp(max=1.0)


def check_slope(slope: float) -> float:
    """``slope`` as a float, if it is a valid ``negative_slope`` (a number in (0, 1])."""
    if isinstance(slope, bool) or not isinstance(slope, int | float) or not 0.0 < slope <= 1.0:
        raise ValueError(f"negative_slope must be in (0, 1], got {slope}")
    return float(slope)


class PTameExplainer(nn.Module, Explainer):
    """Explains ``backbone`` with maps from a frozen auxiliary network and a trained head.

    Images are [0,1] RGB ``(B,3,H,W)`` at the backbone's input size (use
    ``explainer.backbone.preprocessing.eval_transform()`` on photos).
    The backbone is only run to pick its top-1 class when no targets are given;
    the maps themselves never read it.

    Args:
        backbone: the classifier to explain (frozen).
        auxiliary: the frozen feature network.
        layers: auxiliary module names to read (default per known network).
        aux_input_size: resolution the auxiliary sees (default: its own input size);
            the head is trained at this one.
        extra_aux_sizes: further resolutions to run the auxiliary at when
            explaining (multi-scale inference): the map is the mean of the
            min-max-normalised maps at ``aux_input_size`` and at each of these,
            one auxiliary pass each. Empty (the default) is the paper's single pass.
        head_bias: bias on the fusion conv of the per-class head (the paper's has none).
        head: ``"per-class"`` (the paper's: each class its own fusion weights),
            ``"shared"`` (one learned projection read through a classifier over the
            auxiliary's last features, so every class is trained) or ``"auto"``
            (shared where there is such a classifier). See :mod:`glancemap.explainer.head`.
        readout: ``(K, D)`` weights of that classifier, for a backbone whose classes the
            auxiliary does not have (see :mod:`glancemap.training.readout`); default: the
            auxiliary's own classifier, when it has the backbone's classes.
        negative_slope: how the maps show pixels scored against the class (shared-readout
            heads only); 1.0 (the default) is the plain min-max of the logits. Below 1, see
            ``negative_at``.
        negative_at: which pixels count as scored against the class. ``"readout"``: each
            auxiliary pass's min-max map is multiplied by ``negative_slope`` wherever the frozen
            readout, applied to the auxiliary's last features (the untrained start's CAM), is
            negative for the class; the trained head still ranks the rest (on the shipped
            explainer 0.05 raised grid localization with no measured cost in ROAD or Average
            Drop). ``"zero"``: each pass's logits, less the head's offset, go through a leaky
            ReLU of slope ``negative_slope`` before the min-max, so what the head scores against
            the class lies just above 0 and the lowest of the rest starts there; order-preserving
            per pass. It suits heads that keep their start's zero (``train --low-rank``;
            docs/results.md).
        gate_margin: None (the default) for no gate; else each auxiliary pass's map (shown as
            above) is multiplied by :func:`class_gate` with this margin (shared-readout heads
            only): pixels the frozen readout gives to other classes, such as another object in
            the photo, are darkened. It re-ranks pixels (docs/results.md measures it).
    """

    def __init__(
        self,
        backbone: Classifier,
        auxiliary: Classifier,
        layers: Sequence[str] | None = None,
        aux_input_size: tuple[int, int] | None = None,
        head_bias: bool = False,
        head: str = "per-class",
        extra_aux_sizes: Sequence[tuple[int, int]] = (),
        readout: torch.Tensor | None = None,
        negative_slope: float = 1.0,
        negative_at: str = "readout",
        gate_margin: float | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone.freeze()
        self.features = FeatureExtractor(auxiliary, layers or default_layers(auxiliary), aux_input_size)
        self.extra_aux_sizes = check_sizes(extra_aux_sizes)
        shapes = self.features.feature_shapes()
        channels = [s[0] for s in shapes]
        self.head: FusionHead
        if readout is not None and tuple(readout.shape) != (backbone.num_classes, channels[-1]):
            raise ValueError(
                f"readout of shape {tuple(readout.shape)} does not fit K={backbone.num_classes} classes "
                f"and {channels[-1]} channels of the last auxiliary layer"
            )
        if readout is None and head in ("shared", "auto"):
            cam = self.features.cam_weights(backbone.class_names)
            readout = None if cam is None else cam[0]
            stored = False
        else:
            stored = readout is not None
        if head == "auto":
            head = "per-class" if readout is None else "shared"
        if head == "per-class":
            self.head = AttentionHead(channels, backbone.num_classes, bias=head_bias)
        elif head == "shared":
            if readout is None:
                raise ValueError(
                    f"the shared head reads maps through a classifier over auxiliary {auxiliary.name!r}'s last "
                    f"layer; its own classifier does not have backbone {backbone.name!r}'s classes, so give a "
                    "readout (glancemap.training.readout.distill_readout) or use head='per-class'"
                )
            self.head = SharedReadoutHead(channels, readout, stored=stored)
        else:
            raise ValueError(f"unknown head {head!r}: use 'per-class', 'shared' or 'auto'")
        self.head.to(auxiliary.device)
        self.negative_slope = self._checked_slope(negative_slope)
        self.negative_at = check_negative_at(negative_at)
        self.gate_margin = self._checked_gate(gate_margin)
        self.training_info: dict[str, Any] = {}
        self.source_dir: Path | None = None  # set by load_explainer
        self.start_readout: Any = None  # set by training's build_explainer: the readout the head started from
        self.eval()

    # ------------------------------------------------------------ properties
    @property
    def auxiliary(self) -> Classifier:
        return self.features.classifier

    @property
    def layers(self) -> list[str]:
        return self.features.layers

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def class_names(self) -> list[str]:
        return self.backbone.class_names

    @property
    def input_size(self) -> tuple[int, int]:
        return self.backbone.input_size

    @property
    def device(self) -> torch.device:
        return self.head.blocks[0].conv.weight.device

    def train(self, mode: bool = True) -> PTameExplainer:
        super().train(mode)
        self.backbone.eval()  # frozen networks keep their BN statistics
        self.features.train(mode)
        for block in getattr(self.head, "blocks", []):  # frozen blocks (low-rank training) keep theirs too
            if not any(p.requires_grad for p in block.parameters()):
                block.eval()
        return self

    # ------------------------------------------------------------ maps
    def class_logits(
        self, images: torch.Tensor, classes: torch.Tensor | None = None, per_sample: bool = False
    ) -> torch.Tensor:
        """Unnormalised maps at the head's resolution (see :meth:`AttentionHead.forward`)."""
        return self.head(self.features(images), classes, per_sample=per_sample)

    def map_logits(
        self, features: list[torch.Tensor], classes: torch.Tensor | None = None, per_sample: bool = False
    ) -> torch.Tensor:
        """The head's maps as the explanations show them (see ``negative_slope`` and
        ``gate_margin``), before the multi-scale mean: ``(B,n,h,w)`` for ``classes`` as
        :meth:`FusionHead.forward` takes them."""
        shown = self._shown_logits(features, classes, per_sample)
        if self.gate_margin is None:
            return shown
        gate = class_gate(features[-1], self.head.readout, classes, self.gate_margin, shown.shape[-2:], per_sample)
        return minmax_normalize(shown) * gate

    def _shown_logits(
        self, features: list[torch.Tensor], classes: torch.Tensor | None, per_sample: bool
    ) -> torch.Tensor:
        logits = self.head(features, classes, per_sample=per_sample)
        if self.negative_slope == 1.0:
            return logits
        if self.negative_at == "zero":
            return F.leaky_relu(logits - self.head.offset, self.negative_slope)
        readout = self.head.readout if classes is None else self.head.readout[classes]
        if per_sample:  # the start's sign: (B,n,h',w') CAMs of the readout on the last features
            cam = torch.einsum("bchw,bc->bhw", features[-1], readout).unsqueeze(1)
        else:
            cam = readout_logits(features[-1], readout)
        maps = minmax_normalize(logits)
        return torch.where(resize_maps(cam, maps.shape[-2:]) < 0, self.negative_slope * maps, maps)

    @property
    def aux_sizes(self) -> list[tuple[int, int]]:
        """Every resolution the auxiliary runs at when explaining, the training one first."""
        return [tuple(self.features.input_size), *self.extra_aux_sizes]

    def with_extra_aux_sizes(self, sizes: Sequence[tuple[int, int] | int]) -> PTameExplainer:
        """This explainer (the same networks and head, not copies) with other multi-scale sides;
        ``[]`` gives the single-pass explainer."""
        return self.with_aux_sizes([self.features.input_size, *sizes])

    def with_aux_sizes(self, sizes: Sequence[tuple[int, int] | int]) -> PTameExplainer:
        """This explainer (the same networks and head, not copies) running the auxiliary at ``sizes``
        (sides or ``(h, w)``), one pass each, the first in place of the side it was trained at.

        Each pass costs about one auxiliary forward at its size, so one smaller pass is the
        cheapest explanation; docs/results.md measures what each choice costs and keeps.
        """
        sizes = check_sizes(sizes)
        if not sizes:
            raise ValueError("the auxiliary must run at one size at least")
        other = copy.copy(self)
        other.extra_aux_sizes = sizes[1:]
        if sizes[0] != tuple(self.features.input_size):
            features = copy.copy(self.features)
            features.input_size, features._shapes = sizes[0], None
            other._modules = dict(self._modules)  # a shallow copy shares the module dict: the original keeps its own
            other.features = features
        return other

    def _checked_slope(self, slope: float) -> float:
        slope = check_slope(slope)
        self._check_readout("negative_slope below 1", slope != 1.0)
        return slope

    def _checked_gate(self, margin: float | None) -> float | None:
        margin = check_gate_margin(margin)
        self._check_readout("gate_margin", margin is not None)
        return margin

    def _check_readout(self, setting: str, used: bool) -> None:
        if used and not isinstance(self.head, SharedReadoutHead):
            raise ValueError(
                f"{setting} reads the class's readout, which a {self.head.kind} head does not have; "
                "use a shared head (head='shared')"
            )

    def with_negative_slope(self, slope: float | None = None, at: str | None = None) -> PTameExplainer:
        """This explainer (the same networks and head, not copies) showing its maps with another
        ``negative_slope`` and ``negative_at`` (each kept when not given); slope 1.0 gives the plain
        min-max of the logits."""
        other = copy.copy(self)
        other.negative_slope = self._checked_slope(self.negative_slope if slope is None else slope)
        other.negative_at = self.negative_at if at is None else check_negative_at(at)
        return other

    def with_gate(self, margin: float | None) -> PTameExplainer:
        """This explainer (the same networks and head, not copies) with another ``gate_margin``
        (None: no gate)."""
        other = copy.copy(self)
        other.gate_margin = self._checked_gate(margin)
        return other

    def multiscale_maps(
        self,
        images: torch.Tensor,
        size: tuple[int, int] | torch.Size,
        heads: Callable[[list[torch.Tensor]], torch.Tensor],
    ) -> torch.Tensor:
        """``heads(features) -> (B,n,h,w)`` logits at each auxiliary size, resized to ``size``,
        min-max normalised per map and averaged over the sizes: ``(B,n,*size)`` in [0,1]."""
        maps = [minmax_normalize(resize_maps(heads(self.features(images, s)), size)) for s in self.aux_sizes]
        return maps[0] if len(maps) == 1 else minmax_normalize(torch.stack(maps).mean(0))

    @torch.no_grad()
    def forward(self, images: torch.Tensor, targets: Targets = None) -> torch.Tensor:
        """Maps ``(B,1,H,W)`` in [0,1] at the images' resolution, for ``targets`` or the backbone's top-1."""
        t = self.targets(images, targets)
        return self.multiscale_maps(images, images.shape[-2:], lambda f: self.map_logits(f, t, per_sample=True))

    def explain(self, images: torch.Tensor, targets: Targets = None) -> torch.Tensor:
        """The common method interface (:class:`~glancemap.methods.Explainer`): same as calling the explainer."""
        return self(images, targets)

    @torch.no_grad()
    def all_maps(self, images: torch.Tensor, resolution: str = "input") -> torch.Tensor:
        """Every class's map from one pass: ``(B,K,H,W)`` in [0,1].

        ``resolution="head"`` returns them at the head's own (coarser) resolution,
        which is K times cheaper in memory than upsampling all of them.
        """
        check_images(images)
        if resolution not in ("input", "head"):
            raise ValueError("resolution must be 'input' or 'head'")
        size = images.shape[-2:] if resolution == "input" else self.features.feature_shapes()[0][1:]
        return self.multiscale_maps(images, size, self.map_logits)

    @torch.no_grad()
    def predict_and_explain(self, images: torch.Tensor, top_k: int = 1) -> dict[str, torch.Tensor]:
        """Backbone top-k classes ``(B,k)``, their softmax scores ``(B,k)`` and maps ``(B,k,H,W)``."""
        check_images(images)
        probs = self.backbone(images).softmax(dim=1)
        scores, classes = probs.topk(top_k, dim=1)
        maps = self.multiscale_maps(
            images,
            images.shape[-2:],
            lambda f: torch.cat([self.map_logits(f, classes[:, j], per_sample=True) for j in range(top_k)], dim=1),
        )
        return {"classes": classes, "scores": scores, "maps": maps}

    # ------------------------------------------------------------ persistence
    def config(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "glancemap_version": __version__,
            "backbone": self.backbone.describe()
            | {"weights": getattr(self.backbone, "weights_ref", None), "fingerprint": self.backbone.fingerprint()},
            "auxiliary": self.auxiliary.describe()
            | {"weights": getattr(self.auxiliary, "weights_ref", None), "fingerprint": self.auxiliary.fingerprint()},
            "layers": self.layers,
            "aux_input_size": list(self.features.input_size),
            "extra_aux_sizes": [list(s) for s in self.extra_aux_sizes],
            "input_size": list(self.input_size),
            "num_classes": self.num_classes,
            "feature_channels": self.head.channels,
            "head": self.head.kind,
            "head_bias": self.head.has_bias,
            "readout": ("distilled" if self.head.stored else "auxiliary")
            if isinstance(self.head, SharedReadoutHead)
            else None,
            "class_names": self.class_names,
            "negative_slope": self.negative_slope,
            "negative_at": self.negative_at,
            "gate_margin": self.gate_margin,
            "training": self.training_info,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Writes ``config.json`` and ``head.safetensors`` (each atomically) into ``directory``."""
        return write_explainer_folder(directory, self.head.state_dict(), self.config())
