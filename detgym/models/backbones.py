"""Backbones with FPN: the CPU-trainable ``tiny`` CNN, and the mobilenet_v3 builders.

The ResNet-50 backbones come with torchvision's own detector builders (see ``builder.py``). All FPNs
here are torchvision's ``BackboneWithFPN`` / ``FeaturePyramidNetwork``:

* one-stage detectors (RetinaNet, FCOS): P3-P7, P6/P7 from ``LastLevelP6P7`` (as torchvision),
* Faster R-CNN: P2-P5 plus a stride-2 max-pooled P6 (``LastLevelMaxPool``, torchvision's 'pool' map).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Callable, Optional

from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN, mobilenet_backbone
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

__all__ = ["TinyCNN", "tiny_fpn_backbone", "mobilenet_v3_fpn_backbone", "ONE_STAGE_LEVELS", "TWO_STAGE_LEVELS"]

ONE_STAGE_LEVELS = ("P3", "P4", "P5", "P6", "P7")
TWO_STAGE_LEVELS = ("P2", "P3", "P4", "P5", "P6")

# Stage widths and extra (stride-1) convs per stage of the tiny CNN; strides 2, 4, 8, 16, 32.
TINY_CHANNELS = (16, 32, 64, 96, 128)
TINY_EXTRA_CONVS = (0, 1, 1, 1, 1)


def _conv_norm_relu(cin: int, cout: int, stride: int, norm_layer: Callable[[int], nn.Module]) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), norm_layer(cout), nn.ReLU(inplace=True)]


class TinyCNN(nn.Sequential):
    """Five-stage plain CNN (conv3x3-BN-ReLU blocks), strides 2..32, about 0.45 M parameters.

    Children are named ``stage1``..``stage5`` so torchvision's ``IntermediateLayerGetter`` (inside
    ``BackboneWithFPN``) can return any of them. Each stage opens with a stride-2 conv.

    Args:
        channels: output width of each of the five stages.
        extra_convs: stride-1 convs after the stride-2 conv of each stage.
        norm_layer: normalisation after every conv (BatchNorm2d by default).
    """

    def __init__(
        self,
        channels: Sequence[int] = TINY_CHANNELS,
        extra_convs: Sequence[int] = TINY_EXTRA_CONVS,
        norm_layer: Optional[Callable[[int], nn.Module]] = None,
    ) -> None:
        if len(channels) != 5 or len(extra_convs) != 5:
            raise ValueError(
                f"channels and extra_convs must have 5 entries (one per stage), got {channels}, {extra_convs}"
            )
        norm_layer = norm_layer or nn.BatchNorm2d
        stages = []
        cin = 3
        for cout, n_extra in zip(channels, extra_convs):
            layers = _conv_norm_relu(cin, cout, 2, norm_layer)
            for _ in range(n_extra):
                layers += _conv_norm_relu(cout, cout, 1, norm_layer)
            stages.append(nn.Sequential(*layers))
            cin = cout
        super().__init__(OrderedDict((f"stage{i + 1}", m) for i, m in enumerate(stages)))
        self.channels = tuple(channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def tiny_fpn_backbone(
    two_stage: bool,
    out_channels: int = 64,
    channels: Sequence[int] = TINY_CHANNELS,
    extra_convs: Sequence[int] = TINY_EXTRA_CONVS,
) -> tuple[BackboneWithFPN, tuple[str, ...]]:
    """The ``tiny`` backbone: :class:`TinyCNN` + torchvision FPN.

    Args:
        two_stage: True for Faster R-CNN (P2-P5 + pool), False for RetinaNet / FCOS (P3-P7).
        out_channels: FPN width.
        channels, extra_convs: see :class:`TinyCNN`.

    Returns:
        ``(backbone, level_names)``.
    """
    body = TinyCNN(channels, extra_convs)
    if two_stage:
        stages = [2, 3, 4, 5]
        extra: nn.Module = LastLevelMaxPool()
        names = TWO_STAGE_LEVELS
    else:
        stages = [3, 4, 5]
        extra = LastLevelP6P7(out_channels, out_channels)  # P6 from P5, as torchvision's FCOS / RetinaNet v1
        names = ONE_STAGE_LEVELS
    return_layers = {f"stage{s}": str(i) for i, s in enumerate(stages)}
    in_channels = [body.channels[s - 1] for s in stages]
    return BackboneWithFPN(body, return_layers, in_channels, out_channels, extra_blocks=extra), names


def mobilenet_v3_fpn_backbone(
    weights_backbone: Optional[object], trainable_layers: Optional[int] = None
) -> tuple[BackboneWithFPN, tuple[str, ...]]:
    """MobileNetV3-Large + FPN P3-P7 for RetinaNet / FCOS (torchvision has no such builder).

    Uses torchvision's ``mobilenet_backbone`` with the stride-8, stride-16 and last (stride-32, 960-ch)
    feature maps and ``LastLevelP6P7(256, 256)``. BatchNorm is frozen only with pretrained weights, as in
    torchvision's detection builders.

    Args:
        weights_backbone: ImageNet weights (a ``MobileNet_V3_Large_Weights`` or None).
        trainable_layers: trainable stages counted from the top (0..6); all when untrained.
    """
    from torchvision.ops import misc as misc_nn_ops

    is_trained = weights_backbone is not None
    if trainable_layers is None or not is_trained:
        trainable_layers = 6 if not is_trained else 3
    norm_layer = misc_nn_ops.FrozenBatchNorm2d if is_trained else nn.BatchNorm2d
    backbone = mobilenet_backbone(
        backbone_name="mobilenet_v3_large",
        weights=weights_backbone,
        fpn=True,
        norm_layer=norm_layer,
        trainable_layers=trainable_layers,
        returned_layers=[2, 3, 5],  # stage indices 4, 7, 16 of features: strides 8, 16, 32
        extra_blocks=LastLevelP6P7(256, 256),
    )
    return backbone, ONE_STAGE_LEVELS
