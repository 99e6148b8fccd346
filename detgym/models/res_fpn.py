"""ResFPN (paper 004, section "Modification of the Original FPN"): a residual block after each FPN output.

Paper 004 appends "an additional residual block after the FPN outputs" to deepen the non-linear
transformation of every pyramid level before the heads / RoI Align while keeping the multi-scale
structure. Each level gets its own block ``relu(x + norm(conv3x3(relu(norm(conv3x3(x))))))`` with the
FPN's channel count, so any detector head sees the same shapes as with the plain FPN.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable, Optional

from torch import Tensor, nn

__all__ = ["ResidualBlock", "ResFPN", "group_norm"]


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``max_groups`` that divides ``channels``."""
    return nn.GroupNorm(math.gcd(channels, max_groups), channels)


class ResidualBlock(nn.Module):
    """conv3x3-norm-ReLU-conv3x3-norm plus identity, then ReLU (a ResNet basic block at fixed width).

    GroupNorm by default: the coarsest FPN maps are 1x1 at small image sizes, where BatchNorm would
    see a single value per channel for batch size 1. The last norm's scale starts at 0, so the
    block starts as ``relu(x)`` (zero-init residual, Goyal et al. 2017) and training begins close to the
    plain-FPN detector.
    """

    def __init__(self, channels: int, norm_layer: Optional[Callable[[int], nn.Module]] = None) -> None:
        super().__init__()
        norm_layer = norm_layer or group_norm
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = norm_layer(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = norm_layer(channels)
        self.relu = nn.ReLU(inplace=True)
        for m in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if getattr(self.norm2, "weight", None) is not None:
            nn.init.zeros_(self.norm2.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + x)


class ResFPN(nn.Module):
    """Wrap an FPN backbone (``out_channels``, returns an OrderedDict of maps) with one block per level.

    Args:
        fpn_backbone: e.g. torchvision's ``BackboneWithFPN``.
        num_levels: number of maps it returns.
        norm_layer: norm of the residual blocks (GroupNorm by default, see :class:`ResidualBlock`).
    """

    def __init__(
        self, fpn_backbone: nn.Module, num_levels: int, norm_layer: Optional[Callable[[int], nn.Module]] = None
    ) -> None:
        super().__init__()
        if not hasattr(fpn_backbone, "out_channels"):
            raise ValueError("fpn_backbone must have an out_channels attribute (an FPN backbone)")
        self.body = fpn_backbone
        self.out_channels: int = fpn_backbone.out_channels
        self.blocks = nn.ModuleList(ResidualBlock(self.out_channels, norm_layer) for _ in range(num_levels))

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        feats = self.body(x)
        if len(feats) != len(self.blocks):
            raise RuntimeError(f"ResFPN built for {len(self.blocks)} levels, backbone returned {len(feats)}")
        return OrderedDict((k, blk(v)) for (k, v), blk in zip(feats.items(), self.blocks))

