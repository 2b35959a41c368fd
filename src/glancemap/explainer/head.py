"""The trainable attention head that fuses multi-scale features into class maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class FeatureBlock(nn.Module):
    """``ReLU(BN(Conv1x1(F)) + F)``: a residual re-weighting of one feature map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=1)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)) + x)


class FusionHead(nn.Module):
    """Feature blocks per stage, bilinear upsampling to the finest stage, 1x1 fusion to class maps.

    The fusion is computed stage by stage at each stage's own resolution and
    the (few) projected maps are upsampled, which equals upsample-concat-conv
    exactly (bilinear interpolation and 1x1 convolution are both linear and
    commute) while costing far less when only some classes are wanted.
    Subclasses say where each class's fusion weights come from
    (:meth:`class_weights`).

    Args:
        channels: channels of each feature map, shallow to deep.
        num_classes: K, the backbone's class count.
    """

    kind = "abstract"

    def __init__(self, channels: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.channels = [int(c) for c in channels]
        self.num_classes = int(num_classes)
        self.blocks = nn.ModuleList(FeatureBlock(c) for c in self.channels)

    def class_weights(self, classes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fusion weights ``(n, sum C)`` and bias ``(n,)`` (or None) of ``classes`` (all K if None)."""
        raise NotImplementedError

    def init_from_cam(self, weight: torch.Tensor) -> None:
        """Start as the auxiliary's CAM (``weight``: its ``(K, C_last)`` classifier weights)."""
        raise NotImplementedError

    def rescale_(self, scale: float, offset: float) -> None:
        """Multiplies every class map's logits by ``scale`` and then adds ``offset`` (if the head has a bias)."""
        raise NotImplementedError

    @property
    def has_bias(self) -> bool:
        """Whether the class maps get an additive offset."""
        raise NotImplementedError

    @torch.no_grad()
    def _zero_residual_branches(self) -> None:
        # BN scales at zero make each block ReLU(F): identity on a post-ReLU map,
        # like zero-init residual branches; the blocks learn from there
        for block in self.blocks:
            nn.init.zeros_(block.bn.weight)
            nn.init.zeros_(block.bn.bias)

    def _check_cam(self, weight: torch.Tensor) -> None:
        if weight.shape != (self.num_classes, self.channels[-1]):
            raise ValueError(
                f"CAM weights {tuple(weight.shape)} do not fit head (K={self.num_classes}, C_last={self.channels[-1]})"
            )

    def forward(
        self,
        features: Sequence[torch.Tensor],
        classes: torch.Tensor | None = None,
        per_sample: bool = False,
    ) -> torch.Tensor:
        """Unnormalised class maps (logits) at the finest feature resolution.

        Args:
            features: ``(B,C_i,h_i,w_i)`` per stage.
            classes: ``None`` for all K maps -> ``(B,K,h,w)``; a 1-D tensor of n class
                indices -> ``(B,n,h,w)``, the same classes for every image; with
                ``per_sample=True`` a ``(B,)`` tensor -> ``(B,1,h,w)``, one class per image.
        """
        if len(features) != len(self.blocks):
            raise ValueError(f"head expects {len(self.blocks)} feature maps, got {len(features)}")
        if per_sample and (classes is None or classes.shape != (features[0].shape[0],)):
            raise ValueError("per_sample=True needs one class index per image")
        weight, bias = self.class_weights(classes)
        if per_sample:
            weight = weight.unsqueeze(1)  # (B,1,C)
            bias = None if bias is None else bias.view(-1, 1)
        else:
            weight = weight.unsqueeze(0).expand(features[0].shape[0], -1, -1)  # (B,n,C)
            bias = None if bias is None else bias.view(1, -1)
        return self.fuse_with(features, weight, bias)

    def fuse_with(
        self, features: Sequence[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Maps ``(B,n,h,w)`` from per-image fusion weights ``(B,n,sum C)`` and bias ``(B,n)``
        (broadcastable), through this head's feature blocks: :meth:`forward` with weights
        given instead of classes."""
        out = torch.stack(self.stage_maps(features, weight)).sum(0)
        return out if bias is None else out + bias[..., None, None]

    def stage_maps(self, features: Sequence[torch.Tensor], weight: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's share of :meth:`fuse_with`'s maps (no bias), shallow to deep: ``(B,n,h,w)``
        per stage at the finest stage's resolution; their sum is the fused map."""
        size = features[0].shape[-2:]
        parts = []
        start = 0
        for block, feat in zip(self.blocks, features):
            c = feat.shape[1]
            projected = torch.einsum("bchw,bnc->bnhw", block(feat), weight[:, :, start : start + c])
            start += c
            if projected.shape[-2:] != size:
                projected = F.interpolate(projected, size=size, mode="bilinear", align_corners=False)
            parts.append(projected)
        return parts


class AttentionHead(FusionHead):
    """The paper's head: each class has its own fusion weights (a ``K x sum C`` 1x1 conv).

    A class's weights learn only from images whose backbone prediction is that
    class, so classes rare or absent in the training images keep their start.

    Args:
        channels: channels of each feature map, shallow to deep.
        num_classes: K, the backbone's class count.
        bias: give the fusion conv a bias (the paper's head has none).
    """

    kind = "per-class"

    def __init__(self, channels: Sequence[int], num_classes: int, bias: bool = False) -> None:
        super().__init__(channels, num_classes)
        self.fuse = nn.Conv2d(sum(self.channels), self.num_classes, kernel_size=1, bias=bias)

    @property
    def has_bias(self) -> bool:
        return self.fuse.bias is not None

    def class_weights(self, classes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        weight = self.fuse.weight.flatten(1)  # (K, sum C)
        bias = self.fuse.bias
        if classes is not None:
            weight = weight[classes]
            bias = None if bias is None else bias[classes]
        return weight, bias

    @torch.no_grad()
    def init_from_cam(self, weight: torch.Tensor) -> None:
        """The last stage passes through unchanged and the fusion reads it with the
        auxiliary's classifier weights; other stages start at zero."""
        self._check_cam(weight)
        self._zero_residual_branches()
        w = torch.zeros_like(self.fuse.weight)
        w[:, -self.channels[-1] :, 0, 0] = weight.to(w)
        self.fuse.weight.copy_(w)
        if self.fuse.bias is not None:
            self.fuse.bias.zero_()

    @torch.no_grad()
    def rescale_(self, scale: float, offset: float) -> None:
        # without a bias (the paper's layout) there is nowhere to put the offset: scale only
        self.fuse.weight.mul_(scale)
        if self.fuse.bias is not None:
            self.fuse.bias.mul_(scale).add_(offset)


class SharedReadoutHead(FusionHead):
    """Every class reads the same learned features through the auxiliary's own classifier.

    Class c's fusion weights are ``readout[c] @ projection``: ``projection``
    ``(D, sum C)`` maps every stage into the auxiliary classifier's D-dim input
    space and is shared by all classes; ``readout`` ``(K, D)`` is frozen: the
    auxiliary's own classifier when it has the backbone's classes (not saved;
    rebuilt from the auxiliary), else one distilled from the backbone's outputs
    (:mod:`glancemap.training.readout`; saved with the head). Every trainable
    weight therefore learns from every training image, so classes never seen in
    training get trained maps too.

    Args:
        channels: channels of each feature map, shallow to deep (the last must be D).
        readout: ``(K, D)`` classifier weights over the last stage's pooled features.
        stored: save ``readout`` in the head's state (a distilled readout), instead of
            rebuilding it from the auxiliary.
    """

    kind = "shared"

    def __init__(self, channels: Sequence[int], readout: torch.Tensor, stored: bool = False) -> None:
        super().__init__(channels, readout.shape[0])
        self.stored = stored
        self.register_buffer("readout", readout.detach().clone().float(), persistent=stored)
        self.projection = nn.Parameter(torch.empty(readout.shape[1], sum(self.channels)))
        self.offset = nn.Parameter(torch.zeros(1))
        nn.init.normal_(self.projection, std=readout.shape[1] ** -0.5)

    has_bias = True

    def class_weights(self, classes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        readout = self.readout if classes is None else self.readout[classes]
        return readout @ self.projection, self.offset.expand(readout.shape[0])

    @torch.no_grad()
    def init_from_cam(self, weight: torch.Tensor) -> None:
        """Projection = identity on the last stage, zero elsewhere: the plain auxiliary CAM."""
        self._check_cam(weight)
        if not torch.equal(weight.to(self.readout), self.readout):
            raise ValueError("a shared-readout head starts from the CAM of its own readout weights only")
        self._zero_residual_branches()
        self.projection.zero_()
        d = self.channels[-1]
        self.projection[:, -d:] = torch.eye(d, device=self.projection.device)
        self.offset.zero_()

    @torch.no_grad()
    def rescale_(self, scale: float, offset: float) -> None:
        self.projection.mul_(scale)
        self.offset.mul_(scale).add_(offset)
