"""Frozen configurations of the DetBoxSelect env family (paper 001), as data.

A preset is a :class:`~detgym.envs.substrate.Substrate` (the detector recipe and its data) plus the family's own
fields: how the candidate detector is trained (``detector_iterations``, ``detector_seed``), how many candidates
an observation holds (``n_max``), which split episodes draw images from, and the reward (``reward``: per-image AP, or
pool AP with its ``pool_size`` and ``pool_seed``; the per-image AP's ``baseline`` and ``absent_classes``). Every field
is also an env constructor argument of the same name. Which preset ``DetBoxSelect-v0`` (``"default"``) means is
``PRESETS.default``.

==================  ======================  ======  ================================================================
preset              recipe                  n_max   meant for
==================  ======================  ======  ================================================================
``fasterrcnn``      fasterrcnn-tiny         100     CPU default: digits 128 px, paper 001's detector family (Faster
                                                    R-CNN), trained once (750 iterations, about 2-3 CPU minutes)
``retinanet``       retinanet-tiny          100     CPU, one-stage (sigmoid) candidates
``fcos``            fcos-tiny               100     CPU, anchor-free candidates
``fasterrcnn-r50``  fasterrcnn-resnet50     100     GPU: torchvision's fasterrcnn_resnet50_fpn, 3000 iterations
``test``            fasterrcnn-tiny, 48 px  16      the test suite: the detector trains in seconds
==================  ======================  ======  ================================================================

Only the fields that change the detector or its candidates key the on-disk candidate cache
(:func:`detector_fields`); ``split``, the reward's fields and ``nms_iou`` only change how the env reads it (the
-v0 and -v1 ids share one trained detector and its candidates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from detgym._validation import check_choice
from detgym.envs.substrate import PresetTable, Substrate, check_positive_int, frozen

__all__ = [
    "ABSENT_CLASSES", "BASELINES", "DEFAULT_POOL_SIZE", "BoxSelectPreset", "PRESETS", "REWARDS", "SPLITS",
    "detector_fields",
]

#: Accepted ``reward`` values: paper 001's per-image AP (the -v0 ids), or the change of COCO AP over a fixed pool of
#: greedy-NMS outputs (the -v1 ids).
REWARDS: tuple[str, ...] = ("image_ap", "pool_ap")
#: Images in the pool of ``reward="pool_ap"`` when ``pool_size`` is None (or every image of a smaller split).
DEFAULT_POOL_SIZE = 200
#: Accepted ``baseline`` values: the reward is the kept set's AP, or that minus the AP of greedy NMS.
BASELINES: tuple[str, ...] = ("none", "nms")
#: Accepted ``absent_classes`` values: how the reward treats kept boxes of classes the image has no GT of.
ABSENT_CLASSES: tuple[str, ...] = ("ignore", "penalize")
#: Splits an env can draw its images from.
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Preset fields that change how the env reads the cache, not what is cached.
_ENV_ONLY_FIELDS = ("split", "baseline", "nms_iou", "n_max", "absent_classes", "reward", "pool_size", "pool_seed")


@dataclass(frozen=True)
class BoxSelectPreset(Substrate):
    """One configuration of the DetBoxSelect envs (see :class:`detgym.envs.box_select.DetBoxSelectEnv`)."""

    # the -v1 reward's fields: at their defaults the -v0 configurations keep their published keys
    KEY_SINCE_DEFAULT = ("reward", "pool_size", "pool_seed")

    #: Candidates per observation: the ``n_max`` highest-scored of an image (COCO evaluates at most 100).
    n_max: int = 100
    #: Split the episodes draw their images from (learned selectors train on "train", report on "test").
    split: str = "train"
    #: ``"image_ap"``: the per-image COCO AP of the kept set (paper 001, eq. 5; table 1 of the paper uses it);
    #: ``"pool_ap"``: ``pool_size`` times the change of COCO AP over a fixed pool of images' greedy-NMS outputs when the
    #: episode's image has its kept set instead of its NMS result (0 for NMS; what the -v1 ids reward).
    reward: str = "image_ap"
    #: Images of the split in the reference pool of ``reward="pool_ap"`` (at most the split's images); ``None``:
    #: ``DEFAULT_POOL_SIZE`` (200), or every image of a smaller split.
    pool_size: int | None = None
    #: Seed of the draw of the pool's images.
    pool_seed: int = 0
    #: ``reward="image_ap"`` only. ``"none"``: reward = per-image AP of the kept set; ``"nms"``: minus the AP of
    #: greedy NMS on the same candidates (so 0 means "as good as NMS").
    baseline: str = "none"
    #: ``reward="image_ap"`` only. ``"ignore"``: the reward is pycocotools' per-image AP (paper 001), which leaves out
    #: the classes without GT in the image, so their false positives cost nothing there (but cost AP over a
    #: dataset); ``"penalize"``: each such class among the kept boxes joins the per-class mean with AP 0.
    absent_classes: str = "ignore"
    #: IoU threshold of the greedy NMS behind ``baseline="nms"`` and ``info["nms_ap"]`` (paper 001: 0.5).
    nms_iou: float = 0.5
    #: Training iterations of the candidate detector (``None``: the recipe's schedule).
    detector_iterations: int | None = None
    #: Seed of the candidate detector's initialisation and training (one cached detector per seed).
    detector_seed: int = 0

    def validate(self) -> None:
        super().validate()
        check_positive_int("n_max", self.n_max)
        check_choice("split", self.split, SPLITS)
        check_choice("baseline", self.baseline, BASELINES)
        check_choice("absent_classes", self.absent_classes, ABSENT_CLASSES)
        check_choice("reward", self.reward, REWARDS)
        if self.pool_size is not None:
            check_positive_int("pool_size", self.pool_size)
        if isinstance(self.pool_seed, bool) or not isinstance(self.pool_seed, int) or self.pool_seed < 0:
            raise ValueError(f"pool_seed must be an integer >= 0, got {self.pool_seed!r}")
        if self.reward == "pool_ap":
            for name, value, default in (("baseline", self.baseline, "none"),
                                         ("absent_classes", self.absent_classes, "ignore")):
                if value != default:
                    raise ValueError(f"{name}={value!r} applies to reward='image_ap'; reward='pool_ap' is already "
                                     f"relative to greedy NMS and counts every class (use {name}={default!r})")
        iou = self.nms_iou
        if isinstance(iou, bool) or not isinstance(iou, (int, float)) or math.isnan(iou) or not 0.0 <= iou <= 1.0:
            raise ValueError(f"nms_iou must be a number in [0, 1] (paper 001: 0.5), got {iou!r}")
        if self.detector_iterations is not None:
            check_positive_int("detector_iterations", self.detector_iterations)
        seed = self.detector_seed
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"detector_seed must be an integer >= 0, got {seed!r}")


def detector_fields(config: BoxSelectPreset) -> dict[str, Any]:
    """The resolved fields that determine the trained detector (and so its candidates): the cache key's input."""
    return {k: v for k, v in config.to_dict().items() if k not in _ENV_ONLY_FIELDS}


#: Preset name -> preset; ``PRESETS.default`` is the one behind ``DetBoxSelect-v0``.
PRESETS: PresetTable[BoxSelectPreset] = PresetTable(
    {
        "fasterrcnn": BoxSelectPreset("fasterrcnn-tiny"),
        "retinanet": BoxSelectPreset("retinanet-tiny"),
        "fcos": BoxSelectPreset("fcos-tiny"),
        # torchvision's fasterrcnn_resnet50_fpn at its own resolution; the digits set stands in until a COCO / VOC
        # path is given with dataset=...
        "fasterrcnn-r50": BoxSelectPreset("fasterrcnn-resnet50", detector_iterations=3000, device="auto"),
        # Seconds to build on 2 CPU cores: 48 px, 32 train / 8 val / 8 test images, 100 iterations of batch 4.
        # A lower score threshold and fewer proposals keep a few candidates per image from a barely trained detector.
        "test": BoxSelectPreset(
            "fasterrcnn-tiny",
            n_max=16,
            image_size=48,
            detector_iterations=100,
            dataset_kwargs=frozen(
                train_size=32, val_size=8, test_size=8, min_digit_height=10.0, max_digit_height=40.0, max_digits=2
            ),
            train_overrides=frozen(batch_size=4, warmup_iters=5, eval_batch_size=16, lr=5e-3),
            device="cpu",
            model_overrides=frozen(
                fpn_channels=16, representation_size=64, box_score_thresh=0.02,
                rpn_post_nms_top_n_test=30, rpn_pre_nms_top_n_test=100,
            ),
        ),
    },
    default="fasterrcnn",
)
