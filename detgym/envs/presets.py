"""Frozen configurations of the DetLossWeight-v0 env family, as data.

A preset names a training recipe of :mod:`detgym.train.recipes` (detector + schedule), the dataset, the
interval length ``alpha`` and the reward. Every field can be overridden by the env constructor argument of the
same name; ``None`` in a preset means "the recipe's value". Which preset ``DetLossWeight-v0`` (``"default"``)
means is the single line :data:`DEFAULT_PRESET`.

========================  =====================  ======  ====================================================
preset                    recipe                 alpha   meant for
========================  =====================  ======  ====================================================
``retinanet``             retinanet-tiny         20      CPU, digits 128 px (paper 000's main detector)
``fcos``                  fcos-tiny              20      CPU, digits 128 px
``fasterrcnn``            fasterrcnn-tiny        20      CPU, digits 128 px
``retinanet-r50``         retinanet-resnet50     100     GPU, paper 000 settings (alpha = 100, N = 2)
``fcos-r50``              fcos-resnet50          100     GPU
``fasterrcnn-r50``        fasterrcnn-resnet50    100     GPU
``test``                  fcos-tiny, 32 px       2       the test suite: seconds per episode
========================  =====================  ======  ====================================================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

__all__ = ["DEFAULT_PRESET", "LossWeightPreset", "PRESETS", "get_preset", "preset_names"]


@dataclass(frozen=True)
class LossWeightPreset:
    """One configuration of :class:`detgym.envs.loss_weight.DetLossWeightEnv` (see its docstring for each field)."""

    #: Name of a :data:`detgym.train.RECIPES` entry: detector family / backbone / image size / TrainConfig.
    recipe: str
    #: Training iterations per env step (the interval of eq. 2 of paper 000).
    alpha: int = 100
    #: Total training iterations T of one episode (``None``: the recipe's); rounded down to a multiple of alpha.
    iterations: int | None = None
    #: Square input size of the detector and of generated digits (``None``: the recipe's).
    image_size: int | None = None
    #: ``"digits"`` (generated, the default), a COCO-layout directory, or a VOC root (see detgym.data.load_dataset).
    dataset: str = "digits"
    #: Extra arguments of the loader; for digits: DigitsConfig fields plus ``seed`` and ``cache_dir``.
    dataset_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: Use only the first ``train_size`` / ``val_size`` images of the splits (``None``: all).
    train_size: int | None = None
    val_size: int | None = None
    #: Changes to the recipe's TrainConfig (lr, batch_size, device, ...).
    train_overrides: Mapping[str, Any] = field(default_factory=dict)
    #: Extra ``build_detector`` arguments (over the recipe's model_kwargs).
    model_overrides: Mapping[str, Any] = field(default_factory=dict)
    #: ``"loss"`` (eq. 7 of paper 000) or ``"map"`` (change of val ``map_metric`` every ``map_every`` steps).
    reward: str = "loss"
    map_every: int = 1
    map_metric: str = "AP"
    #: N levels enhanced and their amplification factors (eq. 5).
    n_enhance: int = 2
    lambdas: tuple[float, ...] = (1.5, 1.0)

    def replace(self, **changes: Any) -> "LossWeightPreset":
        """A copy with some fields changed; unknown names raise ValueError listing the accepted ones."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise ValueError(f"unknown LossWeightPreset field(s) {unknown}; accepted: {names}")
        return dataclasses.replace(self, **changes)


def _frozen(**kw: Any) -> Mapping[str, Any]:
    return MappingProxyType(dict(kw))


#: Preset name -> preset. ``"default"`` is an alias resolved through :data:`DEFAULT_PRESET`.
PRESETS: Mapping[str, LossWeightPreset] = MappingProxyType(
    {
        "retinanet": LossWeightPreset("retinanet-tiny", alpha=20),
        "fcos": LossWeightPreset("fcos-tiny", alpha=20),
        "fasterrcnn": LossWeightPreset("fasterrcnn-tiny", alpha=20),
        # GPU presets keep the paper's alpha = 100 and N = 2; the digits set stands in until a COCO / VOC path
        # is given with dataset=...
        "retinanet-r50": LossWeightPreset("retinanet-resnet50", alpha=100),
        "fcos-r50": LossWeightPreset("fcos-resnet50", alpha=100),
        "fasterrcnn-r50": LossWeightPreset("fasterrcnn-resnet50", alpha=100),
        # Under a second per episode on 2 CPU cores: 32 px, 24 train / 8 val images, 8 intervals of 2 iterations.
        "test": LossWeightPreset(
            "fcos-tiny",
            alpha=2,
            iterations=16,
            image_size=32,
            dataset_kwargs=_frozen(
                train_size=24, val_size=8, test_size=0, min_digit_height=6.0, max_digit_height=24.0, max_digits=2
            ),
            train_overrides=_frozen(batch_size=2, warmup_iters=2, device="cpu", eval_batch_size=8),
            # narrower FPN and head: about 2x faster per iteration at 32 px, which the SB3 tests need
            model_overrides=_frozen(fpn_channels=16, head_num_convs=1),
        ),
    }
)

#: The preset behind ``DetLossWeight-v0``: change this one line to switch the default family.
DEFAULT_PRESET: str = "retinanet"


def preset_names() -> list[str]:
    """Accepted preset names, ``"default"`` first."""
    return ["default", *PRESETS]


def get_preset(name: str) -> LossWeightPreset:
    """The preset called ``name`` (``"default"`` -> :data:`DEFAULT_PRESET`)."""
    key = DEFAULT_PRESET if name == "default" else name
    if not isinstance(key, str) or key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; accepted: {', '.join(preset_names())}")
    return PRESETS[key]
