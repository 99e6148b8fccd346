"""detgym's Gymnasium environments and their registration table.

``import detgym`` calls :func:`register_envs`, so ``gymnasium.make("DetLossWeight-v0")`` works after it, and
``gymnasium.make("detgym:DetLossWeight-v0")`` works without it (gymnasium imports ``detgym`` first).
Entry points are strings, so registering imports neither torch nor the detectors.

Every env family is a package (``loss_weight``, ...) on the shared substrate (:mod:`detgym.envs.substrate`,
:mod:`detgym.envs.base`). Adding a family means adding rows to :data:`VARIANTS` (one per env class) and to
:data:`PRESET_IDS` (one per preset that gets an id): every family registers its CPU default (no suffix), a
``-Test`` id (seconds per episode: what the test suite and quick checks use) and its GPU presets.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

__all__ = ["ENV_IDS", "FAMILIES", "PRESET_IDS", "VARIANTS", "VECTOR_ENTRY_POINTS", "env_ids", "register_envs"]

#: (id prefix, entry point, family): one row per env class.
VARIANTS: tuple[tuple[str, str, str], ...] = (
    ("DetLossWeight", "detgym.envs.loss_weight.env:DetLossWeightEnv", "loss_weight"),
    ("DetLossWeightContinuous", "detgym.envs.loss_weight.env:DetLossWeightContinuousEnv", "loss_weight"),
    ("DetSampleSelect", "detgym.envs.sample_select.env:DetSampleSelectEnv", "sample_select"),
    ("DetSampleSelectSeq", "detgym.envs.sample_select.env:DetSampleSelectSeqEnv", "sample_select"),
    ("DetBoxSelect", "detgym.envs.box_select.env:DetBoxSelectEnv", "box_select"),
    ("DetBoxSelectSeq", "detgym.envs.box_select.env:DetBoxSelectSeqEnv", "box_select"),
    ("DetBoxRescore", "detgym.envs.box_select.env:DetBoxRescoreEnv", "box_select"),
)

#: family -> (id suffix, preset name): the presets that get an id, for every variant of the family.
PRESET_IDS: dict[str, tuple[tuple[str, str], ...]] = {
    "loss_weight": (
        ("", "default"),
        ("-RetinaNet", "retinanet"),
        ("-FCOS", "fcos"),
        ("-FasterRCNN", "fasterrcnn"),
        ("-RetinaNet-R50", "retinanet-r50"),
        ("-FCOS-R50", "fcos-r50"),
        ("-FasterRCNN-R50", "fasterrcnn-r50"),
        ("-Test", "test"),
    ),
    "box_select": (
        ("", "default"),
        ("-RetinaNet", "retinanet"),
        ("-FCOS", "fcos"),
        ("-FasterRCNN-R50", "fasterrcnn-r50"),
        ("-Test", "test"),
    ),
    "sample_select": (
        ("", "default"),
        ("-VOC", "voc"),
        ("-Test", "test"),
    ),
}

#: id prefix -> native vector env (``gymnasium.make_vec(id, num_envs, vectorization_mode="vector_entry_point")``),
#: registered for every preset id of that variant.
VECTOR_ENTRY_POINTS: dict[str, str] = {
    "DetBoxSelect": "detgym.envs.box_select.vector:DetBoxSelectVectorEnv",
    "DetLossWeight": "detgym.envs.loss_weight.vector:DetLossWeightVectorEnv",
    "DetLossWeightContinuous": "detgym.envs.loss_weight.vector:DetLossWeightContinuousVectorEnv",
}

#: Env family names, in table order.
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(family for _, _, family in VARIANTS))

#: Every env id registered by :func:`register_envs`: id -> (entry point, default kwargs, family).
ENV_IDS: dict[str, tuple[str, dict, str]] = {
    f"{prefix}{suffix}-v0": (entry_point, {"preset": preset}, family)
    for prefix, entry_point, family in VARIANTS
    for suffix, preset in PRESET_IDS[family]
}


def env_ids(family: str | None = None, *, test: bool | None = None) -> list[str]:
    """Registered ids, optionally of one family, and only the ``-Test`` ids (``test=True``) or none of them."""
    return [
        env_id for env_id, (_, kwargs, fam) in ENV_IDS.items()
        if (family is None or fam == family) and (test is None or (kwargs["preset"] == "test") == test)
    ]


def register_envs() -> None:
    """Register every detgym env id with gymnasium (idempotent)."""
    vector = {f"{prefix}{suffix}-v0": VECTOR_ENTRY_POINTS[prefix] for prefix, _, family in VARIANTS
              if prefix in VECTOR_ENTRY_POINTS for suffix, _ in PRESET_IDS[family]}
    for env_id, (entry_point, kwargs, _) in ENV_IDS.items():
        if env_id not in registry:
            # no max_episode_steps: every env ends its episodes itself (end of schedule, budget, image)
            register(id=env_id, entry_point=entry_point, kwargs=dict(kwargs), disable_env_checker=False,
                     vector_entry_point=vector.get(env_id))
