"""Detectors whose training loss is split by pyramid level (subclasses of torchvision's detectors).

``build_detector(family, backbone="tiny", num_classes=10, ...)`` builds RetinaNet, FCOS or Faster R-CNN
with the CPU-trainable ``tiny`` backbone (default), ``mobilenet_v3``, ``resnet50`` or ``resnet50_v2``,
optionally with a ResFPN (paper 004). Every model has ``level_names``, ``num_levels`` and
``level_losses(images, targets) -> dict[str, Tensor[num_levels]]`` whose sums are torchvision's losses, and
(``_candidates.py``):

* ``candidates(images, max_candidates=None)``: per image the scored, class-labelled boxes that post-processing
  runs NMS on, sorted by score, with ``logit_index`` into the image's ``class_logits`` (with grad when enabled);
* ``postprocess(candidates)``: the model's own NMS on them, exactly ``model(images)`` for the full candidates;
* ``embed(images) -> [N, embed_dim]``: every FPN level's map averaged over space, levels concatenated.
"""

from .backbones import TinyCNN, mobilenet_v3_fpn_backbone, tiny_fpn_backbone
from .builder import BACKBONES, FAMILIES, TINY_DEFAULTS, as_torchvision, build_detector, count_parameters
from .faster_rcnn import LevelFasterRCNN, LevelRegionProposalNetwork, LevelRoIHeads
from .fcos import LevelFCOS, LevelFCOSHead
from .res_fpn import ResFPN, ResidualBlock
from .retinanet import LevelRetinaNet, LevelRetinaNetHead

__all__ = [
    "BACKBONES",
    "FAMILIES",
    "TINY_DEFAULTS",
    "as_torchvision",
    "build_detector",
    "count_parameters",
    "LevelRetinaNet",
    "LevelRetinaNetHead",
    "LevelFCOS",
    "LevelFCOSHead",
    "LevelFasterRCNN",
    "LevelRegionProposalNetwork",
    "LevelRoIHeads",
    "ResFPN",
    "ResidualBlock",
    "TinyCNN",
    "tiny_fpn_backbone",
    "mobilenet_v3_fpn_backbone",
]
