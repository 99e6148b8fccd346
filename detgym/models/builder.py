"""``build_detector``: one entry point for every family x backbone, returning level-aware detectors.

Class-count convention. ``num_classes`` counts object classes; ground-truth labels are
``1..num_classes`` and 0 is background. torchvision's RetinaNet and FCOS index their sigmoid logits
directly by label and Faster R-CNN's softmax includes background, so all three get
``num_classes + 1`` outputs (for RetinaNet / FCOS logit 0 is never a target and its score stays near
the prior; it is a harmless spare output). Detections carry labels in ``1..num_classes``.

Weights. Nothing is downloaded unless asked: ``weights`` (full detector, torchvision's COCO weights)
and ``weights_backbone`` (ImageNet) default to None. With COCO detector weights and
``num_classes != 90`` the class-dependent output layers are re-initialised for ``num_classes + 1``
outputs (torchvision's fine-tuning recipe); everything else keeps the pretrained values.
"""

from __future__ import annotations

import copy
import inspect
import math
import warnings
from typing import Any, Callable, Optional

from torch import nn
from torchvision.models.detection import (
    FCOS,
    FasterRCNN,
    RetinaNet,
    fasterrcnn_mobilenet_v3_large_fpn,
    fasterrcnn_resnet50_fpn,
    fasterrcnn_resnet50_fpn_v2,
    fcos_resnet50_fpn,
    retinanet_resnet50_fpn,
    retinanet_resnet50_fpn_v2,
)
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

from detgym._validation import check_choice

from ._utils import group_norm_layer
from .backbones import TWO_STAGE_LEVELS, mobilenet_v3_fpn_backbone, tiny_fpn_backbone
from .faster_rcnn import LevelFasterRCNN
from .fcos import LevelFCOS, LevelFCOSHead
from .res_fpn import ResFPN
from .retinanet import LevelRetinaNet, LevelRetinaNetHead

__all__ = ["build_detector", "as_torchvision", "FAMILIES", "BACKBONES", "TINY_DEFAULTS"]

FAMILIES = ("retinanet", "fcos", "fasterrcnn")
BACKBONES = ("tiny", "mobilenet_v3", "resnet50", "resnet50_v2")

# (family, backbone) -> torchvision builder; "tiny" and the one-stage mobilenet_v3 models are built here.
_TORCHVISION_BUILDERS: dict[tuple[str, str], Callable[..., nn.Module]] = {
    ("retinanet", "resnet50"): retinanet_resnet50_fpn,
    ("retinanet", "resnet50_v2"): retinanet_resnet50_fpn_v2,
    ("fcos", "resnet50"): fcos_resnet50_fpn,
    ("fasterrcnn", "resnet50"): fasterrcnn_resnet50_fpn,
    ("fasterrcnn", "resnet50_v2"): fasterrcnn_resnet50_fpn_v2,
    ("fasterrcnn", "mobilenet_v3"): fasterrcnn_mobilenet_v3_large_fpn,
}
_COMBINATIONS = tuple((f, b) for f in FAMILIES for b in BACKBONES if b == "tiny" or (f, b) in _TORCHVISION_BUILDERS) + (
    ("retinanet", "mobilenet_v3"),
    ("fcos", "mobilenet_v3"),
)

# Defaults of the tiny detectors (128 px digits: objects 12..100 px tall; width/height 0.6..0.9).
# Tuned for learning speed on a 2-core CPU; every entry can be overridden through build_detector(**overrides).
TINY_DEFAULTS: dict[str, dict[str, Any]] = {
    "retinanet": {
        # Three octave scales per level and tall anchors (torchvision aspect ratios are h/w): IoU matching with
        # one square anchor per level leaves small, tall digits without a good positive. Base size 1.5 x stride
        # (torchvision: 4 x stride at 800 px) gives ~8.6 anchors with IoU >= 0.4 per digit (vs 4.7 at 1 x stride,
        # 2.4 with torchvision's 0.5 threshold) and learned fastest in 600-iteration trials on the digits set.
        "anchor_sizes": tuple(tuple(s * 2.0 ** (k / 3) for k in range(3)) for s in (12, 24, 48, 96, 192)),
        "aspect_ratios": (1.0, 2.0),
        "head_num_convs": 2,
        "fg_iou_thresh": 0.4,
        "bg_iou_thresh": 0.3,
    },
    "fcos": {
        "head_num_convs": 2,
    },
    "fasterrcnn": {
        "anchor_sizes": tuple((s, s * math.sqrt(2.0)) for s in (8, 16, 32, 64, 128)),
        "aspect_ratios": (1.0, 2.0),
        "rpn_pre_nms_top_n_train": 300,
        "rpn_pre_nms_top_n_test": 300,
        "rpn_post_nms_top_n_train": 100,
        "rpn_post_nms_top_n_test": 100,
        "rpn_batch_size_per_image": 128,
        "box_batch_size_per_image": 64,
        "representation_size": 256,
    },
}
_TINY_IMAGE_SIZE = 128
_TINY_FPN_CHANNELS = 64
# Builder-level options (everything else in **overrides goes to the torchvision class constructor).
_TINY_KEYS = {
    "retinanet": {"anchor_sizes", "aspect_ratios", "head_num_convs", "fpn_channels"},
    "fcos": {"anchor_sizes", "head_num_convs", "fpn_channels"},
    "fasterrcnn": {"anchor_sizes", "aspect_ratios", "representation_size", "fpn_channels"},
}
_OTHER_KEYS = {"trainable_backbone_layers", "progress"}
# Modules the builders construct themselves (build the Level* classes directly to pass your own).
_MODULE_KEYS = {"head", "anchor_generator", "rpn_anchor_generator", "rpn_head", "box_roi_pool", "box_head",
                "box_predictor"}
_TV_CLASS = {"retinanet": RetinaNet, "fcos": FCOS, "fasterrcnn": FasterRCNN}
# Keyword arguments torchvision forwards to GeneralizedRCNNTransform.
_TRANSFORM_KEYS = {"size_divisible", "fixed_size", "image_mean", "image_std"}


def _check_overrides(family: str, backbone: str, overrides: dict[str, Any]) -> None:
    """Reject misspelt overrides: torchvision passes unknown keywords to its transform, which ignores them."""
    params = set(inspect.signature(_TV_CLASS[family].__init__).parameters)
    params -= {"self", "backbone", "num_classes", "kwargs", "min_size", "max_size"} | _MODULE_KEYS
    params |= _TRANSFORM_KEYS
    accepted = params | (_TINY_KEYS[family] if backbone == "tiny" else _OTHER_KEYS)
    if "min_size" in overrides or "max_size" in overrides:
        raise ValueError("set the image size with image_size=..., not min_size / max_size overrides")
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ValueError(
            f"unknown override(s) {unknown} for {family}/{backbone}; accepted: {', '.join(sorted(accepted))}"
        )


def _anchor_generator(sizes: Any, aspect_ratios: Any, num_levels: int) -> AnchorGenerator:
    sizes = tuple(tuple(float(x) for x in (s if isinstance(s, (tuple, list)) else (s,))) for s in sizes)
    if len(sizes) != num_levels:
        raise ValueError(f"anchor_sizes must have one entry per level ({num_levels}), got {len(sizes)}")
    if not isinstance(aspect_ratios[0], (tuple, list)):
        aspect_ratios = (tuple(aspect_ratios),) * num_levels
    if len(aspect_ratios) != num_levels:
        raise ValueError(f"aspect_ratios must have one entry per level ({num_levels}), got {len(aspect_ratios)}")
    gen = AnchorGenerator(sizes, tuple(tuple(float(r) for r in a) for a in aspect_ratios))
    if len(set(gen.num_anchors_per_location())) != 1:
        raise ValueError("every level must have the same number of anchors (len(sizes) * len(aspect_ratios))")
    return gen


def _size_kwargs(image_size: Optional[int], default: Optional[int]) -> dict[str, int]:
    size = image_size if image_size is not None else default
    if size is None:
        return {}
    if isinstance(size, bool) or not isinstance(size, int) or size < 32:
        raise ValueError(f"image_size must be an int >= 32 (pixels), got {size!r}")
    # min_size == max_size == image_size: square images of that size pass through without resizing.
    return {"min_size": size, "max_size": size}


def _with_res_fpn(backbone: nn.Module, res_fpn: bool, num_levels: int) -> nn.Module:
    return ResFPN(backbone, num_levels) if res_fpn else backbone


def _build_tiny(family: str, k: int, res_fpn: bool, size_kw: dict[str, int], overrides: dict[str, Any]) -> nn.Module:
    cfg = {**TINY_DEFAULTS[family], **overrides}
    fpn_channels = int(cfg.pop("fpn_channels", _TINY_FPN_CHANNELS))
    backbone, names = tiny_fpn_backbone(two_stage=family == "fasterrcnn", out_channels=fpn_channels)
    backbone = _with_res_fpn(backbone, res_fpn, len(names))
    groups = math.gcd(fpn_channels, 16)
    kwargs = {**size_kw}
    if family == "retinanet":
        gen = _anchor_generator(cfg.pop("anchor_sizes"), cfg.pop("aspect_ratios"), len(names))
        head = LevelRetinaNetHead(
            fpn_channels,
            gen.num_anchors_per_location()[0],
            k,
            norm_layer=group_norm_layer(groups),  # GroupNorm head as torchvision's RetinaNet v2
            num_convs=int(cfg.pop("head_num_convs")),
            loss_type="giou",
        )
        return LevelRetinaNet(backbone, k, level_names=names, anchor_generator=gen, head=head, **kwargs, **cfg)
    if family == "fcos":
        head = LevelFCOSHead(
            fpn_channels, 1, k, num_convs=int(cfg.pop("head_num_convs")), norm_layer=group_norm_layer(groups)
        )
        if "anchor_sizes" in cfg:
            # FCOS: one "anchor" per location whose size sets the centre-sampling radius and the level's size range
            kwargs["anchor_generator"] = _anchor_generator(cfg.pop("anchor_sizes"), (1.0,), len(names))
        return LevelFCOS(backbone, k, level_names=names, head=head, **kwargs, **cfg)
    gen = _anchor_generator(cfg.pop("anchor_sizes"), cfg.pop("aspect_ratios"), len(names))
    rep = int(cfg.pop("representation_size"))
    image_size = size_kw.get("min_size", _TINY_IMAGE_SIZE)
    # torchvision maps a 224-px RoI to P4 for ~800-px images (eq. 1 of the FPN paper); scale the canonical
    # size with the image so RoIs of the small images spread over P2..P5 instead of all landing on P2.
    canonical = max(8, round(224 * image_size / 800))
    # One bilinear sample per bin (torchvision: 2x2): the RoIs of small images cover few feature cells, and
    # RoIAlign's CPU backward is the slowest op of a tiny Faster R-CNN step.
    pool = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=1, canonical_scale=canonical)
    return LevelFasterRCNN(
        backbone,
        None,  # torchvision takes the class count from box_predictor
        level_names=names,
        rpn_anchor_generator=gen,
        rpn_head=RPNHead(fpn_channels, gen.num_anchors_per_location()[0]),
        box_roi_pool=pool,
        box_head=TwoMLPHead(fpn_channels * 7 * 7, rep),
        box_predictor=FastRCNNPredictor(rep, k),
        **kwargs,
        **cfg,
    )


def _weights_enum(builder: Callable[..., nn.Module], name: str) -> Any:
    """The WeightsEnum class of a torchvision builder argument (``weights`` / ``weights_backbone``)."""
    import typing

    hint = typing.get_type_hints(builder)[name]
    for arg in typing.get_args(hint) or (hint,):
        if isinstance(arg, type) and hasattr(arg, "verify"):
            return arg
    raise TypeError(f"no WeightsEnum for {name} of {builder.__name__}")  # pragma: no cover


def _replace_class_layers(model: nn.Module, k: int) -> None:
    """Re-initialise the class-dependent outputs for ``k`` logits (fine-tuning COCO weights)."""
    if isinstance(model, FasterRCNN):
        in_features = model.roi_heads.box_predictor.cls_score.in_features
        model.roi_heads.box_predictor = FastRCNNPredictor(in_features, k)
        return
    head = model.head.classification_head
    old = head.cls_logits
    num_anchors = old.out_channels // head.num_classes
    new = nn.Conv2d(old.in_channels, num_anchors * k, kernel_size=3, stride=1, padding=1)
    nn.init.normal_(new.weight, std=0.01)
    nn.init.constant_(new.bias, -math.log((1 - 0.01) / 0.01))  # prior 0.01, as torchvision
    head.cls_logits = new
    head.num_classes = k


def _adopt(model: nn.Module, level_names: tuple[str, ...]) -> nn.Module:
    """Level-aware detector sharing the modules and settings of a torchvision-built ``model``."""
    if isinstance(model, FasterRCNN):
        return LevelFasterRCNN.from_torchvision(model, level_names)
    if isinstance(model, RetinaNet):
        return LevelRetinaNet.from_torchvision(model, level_names)
    if isinstance(model, FCOS):
        return LevelFCOS.from_torchvision(model, level_names)
    raise TypeError(f"cannot adopt {type(model).__name__}")  # pragma: no cover


def _level_names_of(family: str, backbone: str) -> tuple[str, ...]:
    if family != "fasterrcnn":
        return ("P3", "P4", "P5", "P6", "P7")
    if backbone == "mobilenet_v3":
        # torchvision's fasterrcnn_mobilenet_v3_large_fpn takes two stride-32 maps (the last two stages) + pool.
        return ("C5a", "C5b", "pool")
    return TWO_STAGE_LEVELS


def build_detector(
    family: str,
    backbone: str = "tiny",
    num_classes: int = 10,
    *,
    res_fpn: bool = False,
    weights: Optional[Any] = None,
    weights_backbone: Optional[Any] = None,
    image_size: Optional[int] = None,
    **overrides: Any,
) -> nn.Module:
    """Build a detector whose training loss is available split by pyramid level.

    Args:
        family: "retinanet", "fcos" or "fasterrcnn".
        backbone: "tiny" (CPU-trainable, default), "mobilenet_v3", "resnet50" or "resnet50_v2"
            (torchvision's ``*_v2`` models: RetinaNet and Faster R-CNN only).
        num_classes: object classes; ground-truth labels are ``1..num_classes`` (0 is background).
        res_fpn: put a residual block after every FPN output (ResFPN, paper 004).
        weights: pretrained detector weights, e.g. "DEFAULT" (torchvision's COCO weights; downloads).
            Not available for tiny and for the one-stage mobilenet_v3 models.
        weights_backbone: pretrained backbone weights, e.g. "DEFAULT" (ImageNet; downloads); not for tiny.
        image_size: the transform's min_size = max_size (no resizing for square images of that size).
            Default 128 for tiny; torchvision's 800 / 1333 for the other backbones.
        **overrides: tiny only: ``anchor_sizes`` (one tuple per level), ``aspect_ratios`` (h/w; RetinaNet,
            Faster R-CNN), ``head_num_convs`` (RetinaNet, FCOS), ``representation_size`` (Faster R-CNN box
            head), ``fpn_channels``; other backbones:
            ``trainable_backbone_layers``, ``progress``; any backbone: keyword arguments of torchvision's
            RetinaNet / FCOS / FasterRCNN constructor (e.g. ``score_thresh``, ``fg_iou_thresh``,
            ``rpn_batch_size_per_image``, ``detections_per_img``).

    Returns:
        a :class:`LevelRetinaNet`, :class:`LevelFCOS` or :class:`LevelFasterRCNN` (subclasses of
        torchvision's classes) with ``level_names``, ``num_levels`` and ``level_losses``, and ``candidates``,
        ``postprocess``, ``embed`` / ``embed_dim``.

    Raises:
        ValueError: unknown family / backbone / combination, bad num_classes / image_size, pretrained
            weights where none exist, unknown override names.
    """
    _check_family_backbone_classes(family, backbone, num_classes)
    k = num_classes + 1
    _check_overrides(family, backbone, overrides)
    if backbone == "tiny":
        if weights is not None or weights_backbone is not None:
            raise ValueError(
                "weights / weights_backbone must be None for the tiny backbone (no pretrained weights exist)"
            )
        return _build_tiny(family, k, res_fpn, _size_kwargs(image_size, _TINY_IMAGE_SIZE), overrides)
    size_kw = _size_kwargs(image_size, None)
    if (family, backbone) in _TORCHVISION_BUILDERS:
        return _build_torchvision(family, backbone, k, res_fpn, weights, weights_backbone, size_kw, overrides)
    return _build_mobilenet_one_stage(family, k, res_fpn, weights, weights_backbone, size_kw, overrides)


def _check_family_backbone_classes(family: str, backbone: str, num_classes: Any) -> None:
    check_choice("family", family, FAMILIES)
    check_choice("backbone", backbone, BACKBONES)
    if (family, backbone) not in _COMBINATIONS:
        have = ", ".join(b for f, b in _COMBINATIONS if f == family)
        raise ValueError(f"backbone {backbone!r} is not available for family {family!r}; accepted: {have}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"num_classes must be a positive int (object classes, labels 1..num_classes), got {num_classes!r}"
        )


def _build_torchvision(
    family: str,
    backbone: str,
    k: int,
    res_fpn: bool,
    weights: Optional[Any],
    weights_backbone: Optional[Any],
    size_kw: dict[str, int],
    overrides: dict[str, Any],
) -> nn.Module:
    """A model from torchvision's own builder (optionally with its pretrained weights), adopted as level-aware."""
    names = _level_names_of(family, backbone)
    builder = _TORCHVISION_BUILDERS[(family, backbone)]
    if weights is not None:
        weights = _weights_enum(builder, "weights").verify(weights)
    if weights_backbone is not None:
        weights_backbone = _weights_enum(builder, "weights_backbone").verify(weights_backbone)
    kw: dict[str, Any] = {**size_kw, **overrides}
    if weights is None:
        kw["num_classes"] = k
    with warnings.catch_warnings():
        # torchvision warns that trainable_backbone_layers is ignored without pretrained weights.
        warnings.filterwarnings("ignore", message="Changing trainable_backbone_layers")
        # weights_backbone is passed explicitly: fasterrcnn_mobilenet_v3_large_fpn defaults to ImageNet.
        model = builder(weights=weights, weights_backbone=weights_backbone, **kw)
    if weights is not None and k != 91:
        _replace_class_layers(model, k)
    if res_fpn:
        model.backbone = ResFPN(model.backbone, len(names))
    return _adopt(model, names)


def _build_mobilenet_one_stage(
    family: str,
    k: int,
    res_fpn: bool,
    weights: Optional[Any],
    weights_backbone: Optional[Any],
    size_kw: dict[str, int],
    overrides: dict[str, Any],
) -> nn.Module:
    """RetinaNet / FCOS on mobilenet_v3: torchvision has no builder (nor COCO weights) for these."""
    if weights is not None:
        raise ValueError(
            f"no pretrained detector weights exist for {family} with mobilenet_v3; "
            "use weights_backbone='DEFAULT' for ImageNet backbone weights"
        )
    from torchvision.models import MobileNet_V3_Large_Weights

    wb = MobileNet_V3_Large_Weights.verify(weights_backbone) if weights_backbone is not None else None
    trainable = overrides.pop("trainable_backbone_layers", None)
    overrides.pop("progress", None)
    body, names = mobilenet_v3_fpn_backbone(wb, trainable)
    body = _with_res_fpn(body, res_fpn, len(names))
    if family == "retinanet":
        # torchvision's v2 head (GroupNorm, GIoU loss): the v1 head learns far slower from scratch
        head = LevelRetinaNetHead(body.out_channels, 9, k, norm_layer=group_norm_layer(32), loss_type="giou")
        return LevelRetinaNet(body, k, level_names=names, head=head, **size_kw, **overrides)
    return LevelFCOS(body, k, level_names=names, **size_kw, **overrides)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def as_torchvision(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose modules are demoted to their torchvision base classes.

    The copy has the same state dict but runs torchvision's untouched forward and loss code: the reference
    for the per-level loss equality tests and the plain training loop of ``benchmarks/substrate.py``.
    """
    stock = copy.deepcopy(model)
    for module in stock.modules():
        for cls in type(module).__mro__:
            if cls.__module__.startswith("torchvision"):
                module.__class__ = cls
                break
    return stock
