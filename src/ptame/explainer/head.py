"""The trainable attention head that fuses multi-scale features into class maps."""

from __future__ import annotations

from typing import Sequence

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


class AttentionHead(nn.Module):
    """Feature blocks per stage, bilinear upsampling to the finest stage, 1x1 fusion to K maps.

    The fusion is computed stage by stage at each stage's own resolution and
    the (few) projected maps are upsampled, which equals upsample-concat-conv
    exactly (bilinear interpolation and 1x1 convolution are both linear and
    commute) while costing far less when only some classes are wanted.

    Args:
        channels: channels of each feature map, shallow to deep.
        num_classes: K, the backbone's class count.
        bias: give the fusion conv a bias (the paper's head has none).
    """

    def __init__(self, channels: Sequence[int], num_classes: int, bias: bool = False) -> None:
        super().__init__()
        self.channels = [int(c) for c in channels]
        self.num_classes = int(num_classes)
        self.blocks = nn.ModuleList(FeatureBlock(c) for c in self.channels)
        self.fuse = nn.Conv2d(sum(self.channels), self.num_classes, kernel_size=1, bias=bias)

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
        size = features[0].shape[-2:]
        weight = self.fuse.weight.flatten(1)  # (K, sum C)
        bias = self.fuse.bias
        if classes is not None:
            weight = weight[classes]
            bias = None if bias is None else bias[classes]
        if per_sample:
            if classes is None or classes.shape != (features[0].shape[0],):
                raise ValueError("per_sample=True needs one class index per image")
            weight = weight.unsqueeze(1)  # (B,1,C)
        else:
            weight = weight.unsqueeze(0).expand(features[0].shape[0], -1, -1)  # (B,n,C)
        out = None
        start = 0
        for block, feat in zip(self.blocks, features):
            c = feat.shape[1]
            projected = torch.einsum("bchw,bnc->bnhw", block(feat), weight[:, :, start : start + c])
            start += c
            if projected.shape[-2:] != size:
                projected = F.interpolate(projected, size=size, mode="bilinear", align_corners=False)
            out = projected if out is None else out + projected
        assert out is not None
        if bias is not None:
            out = out + (bias.view(1, -1, 1, 1) if not per_sample else bias.view(-1, 1, 1, 1))
        return out

    @torch.no_grad()
    def init_from_cam(self, weight: torch.Tensor, bias: torch.Tensor | None = None, scale: float = 1.0) -> None:
        """Start as the auxiliary's CAM: the last stage passes through unchanged and the
        fusion reads it with the auxiliary's classifier weights; other stages start at zero.

        BN scales start at zero so each block is ``ReLU(F)`` (identity on the post-ReLU
        pre-pooling map) and learns from there, like zero-init residual branches.
        """
        if weight.shape != (self.num_classes, self.channels[-1]):
            raise ValueError(
                f"CAM weights {tuple(weight.shape)} do not fit head (K={self.num_classes}, C_last={self.channels[-1]})"
            )
        for block in self.blocks:
            nn.init.zeros_(block.bn.weight)
            nn.init.zeros_(block.bn.bias)
        w = torch.zeros_like(self.fuse.weight)
        w[:, -self.channels[-1] :, 0, 0] = weight.to(w) * scale
        self.fuse.weight.copy_(w)
        if self.fuse.bias is not None:
            self.fuse.bias.zero_()
            if bias is not None:
                # spread the logit bias over the map so its mean equals the aux logit
                self.fuse.bias.copy_(bias.to(w) * scale)
