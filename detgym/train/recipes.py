"""Recipes: a detector and the training schedule that makes it learn, as data.

A recipe names everything needed to train a detector from scratch: the family and backbone handed to
:func:`detgym.models.build_detector`, the image size of the data, and a :class:`TrainConfig`. The ``tiny``
recipes are tuned so that the detector finds digits after about two minutes on a 2-core CPU; the
``resnet50`` ones follow the papers' settings for GPUs. Environments, benchmarks and the CLI all start
from these, so a change here changes them together.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from detgym._validation import replace_fields

from .config import TrainConfig


@dataclass(frozen=True)
class Recipe:
    """A detector (``build_detector(family, backbone, image_size=..., **model_kwargs)``) and its schedule."""

    family: str
    backbone: str = "tiny"
    image_size: int | None = 128
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)

    def replace(self, **changes: Any) -> "Recipe":
        """A copy with some fields changed; unknown names raise ValueError listing the accepted ones."""
        return replace_fields(self, **changes)

    def build_model(self, num_classes: int = 10, **overrides: Any):
        """Build this recipe's detector (``overrides`` win over ``model_kwargs``)."""
        from detgym.models import build_detector

        kwargs = {**self.model_kwargs, **overrides}
        return build_detector(self.family, self.backbone, num_classes, image_size=self.image_size, **kwargs)


RECIPES: dict[str, Recipe] = {
    # Sized to about two minutes on a 2-core CPU (measured 13 / 15 / 7 it/s at batch 8, 128 px, 2 threads).
    "retinanet-tiny": Recipe("retinanet", train=TrainConfig(iterations=1500, lr=2e-3, warmup_iters=100)),
    "fcos-tiny": Recipe("fcos", train=TrainConfig(iterations=1800, lr=2e-3, warmup_iters=100)),
    "fasterrcnn-tiny": Recipe("fasterrcnn", train=TrainConfig(iterations=750, lr=2e-3, warmup_iters=75)),
    # GPU recipes: torchvision's resnet50-FPN detectors at their default resolution, the 1x schedule of paper 000
    # (SGD 0.01, batch 8, 90k iterations, steps at 2/3 and 8/9) scaled to the data by the caller.
    "retinanet-resnet50": Recipe(
        "retinanet", "resnet50", None, train=TrainConfig(iterations=90_000, optimizer="sgd", lr=0.01,
                                                         weight_decay=1e-4, schedule="multistep", warmup_iters=500)
    ),
    "fcos-resnet50": Recipe(
        "fcos", "resnet50", None, train=TrainConfig(iterations=90_000, optimizer="sgd", lr=0.01,
                                                    weight_decay=1e-4, schedule="multistep", warmup_iters=500)
    ),
    "fasterrcnn-resnet50": Recipe(
        "fasterrcnn", "resnet50", None, train=TrainConfig(iterations=90_000, optimizer="sgd", lr=0.02,
                                                          weight_decay=1e-4, schedule="multistep", warmup_iters=500)
    ),
    # paper 004: fasterrcnn_resnet50_fpn_v2 + ResFPN, AdamW-style warmup + cosine, backbone at 0.5x lr
    "fasterrcnn-resnet50_v2-resfpn": Recipe(
        "fasterrcnn", "resnet50_v2", None, {"res_fpn": True},
        TrainConfig(iterations=30_000, lr=1e-4, weight_decay=5e-4, warmup_iters=1000, backbone_lr_mult=0.5),
    ),
}


def get_recipe(name: str) -> Recipe:
    """A copy of the recipe called ``name`` (see :data:`RECIPES`), free to change."""
    try:
        return copy.deepcopy(RECIPES[name])
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; accepted: {', '.join(RECIPES)}") from None
