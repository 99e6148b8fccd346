"""detgym's Gymnasium environments and their registration table.

``import detgym`` calls :func:`register_envs`, so ``gymnasium.make("DetLossWeight-v0")`` works after it, and
``gymnasium.make("detgym:DetLossWeight-v0")`` works without it (gymnasium imports ``detgym`` first).
Entry points are strings, so registering imports neither torch nor the detectors.

Every env family is a package (``loss_weight``, ...) on the shared substrate (:mod:`detgym.envs.substrate`,
:mod:`detgym.envs.base`). Adding a family means adding rows to :data:`VARIANTS` (one per env class) and its
presets to :data:`PRESET_IDS`: every family registers its CPU default (no suffix), a ``-Test`` id (seconds per
episode: what the test suite and quick checks use) and its GPU presets.

Versions follow Gymnasium's rule: an id's dynamics, reward and defaults never change under the same version. A
change registers the next version (``-v1``) beside the old one, through :data:`VERSIONS` (the constructor
arguments that make the new version) or a new row of :data:`PRESET_IDS` (a new default preset);
``tests/test_env_versions.py`` replays a recorded rollout of every ``-Test`` id and checks every id's resolved
configuration, so an accidental change fails there.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from gymnasium.envs.registration import register, registry

__all__ = [
    "ENV_IDS", "FAMILIES", "PRESET_IDS", "VARIANTS", "VECTOR_ENTRY_POINTS", "VERSIONS", "env_ids", "register_envs",
]

#: (id prefix, entry point, family): one row per env class.
VARIANTS: tuple[tuple[str, str, str], ...] = (
    ("DetLossWeight", "detgym.envs.loss_weight.env:DetLossWeightEnv", "loss_weight"),
    ("DetLossWeightContinuous", "detgym.envs.loss_weight.env:DetLossWeightContinuousEnv", "loss_weight"),
    ("DetLossWeightTabular", "detgym.envs.loss_weight.tabular:DetLossWeightTabularEnv", "loss_weight"),
    ("DetSampleSelect", "detgym.envs.sample_select.env:DetSampleSelectEnv", "sample_select"),
    ("DetSampleSelectSeq", "detgym.envs.sample_select.env:DetSampleSelectSeqEnv", "sample_select"),
    ("DetBoxSelect", "detgym.envs.box_select.env:DetBoxSelectEnv", "box_select"),
    ("DetBoxSelectSeq", "detgym.envs.box_select.env:DetBoxSelectSeqEnv", "box_select"),
    ("DetBoxRescore", "detgym.envs.box_select.env:DetBoxRescoreEnv", "box_select"),
)

#: family (or id prefix, which wins) -> version -> (id suffix, preset name): the presets that get an id, for
#: every variant of the family.
PRESET_IDS: dict[str, dict[int, tuple[tuple[str, str], ...]]] = {
    "loss_weight": {
        0: (
            ("", "default"),
            ("-RetinaNet", "retinanet"),
            ("-FCOS", "fcos"),
            ("-FasterRCNN", "fasterrcnn"),
            ("-RetinaNet-R50", "retinanet-r50"),
            ("-FCOS-R50", "fcos-r50"),
            ("-FasterRCNN-R50", "fasterrcnn-r50"),
            ("-Test", "test"),
        ),
    },
    # the tabular twin has trees of the CPU default and of the test preset only
    "DetLossWeightTabular": {0: (("", "default"), ("-Test", "test"))},
    "box_select": {
        version: (
            ("", "default"),
            ("-RetinaNet", "retinanet"),
            ("-FCOS", "fcos"),
            ("-FasterRCNN-R50", "fasterrcnn-r50"),
            ("-Test", "test"),
        )
        for version in (0, 1)
    },
    "sample_select": {
        0: (
            ("", "default"),
            ("-VOC", "voc"),
            ("-Test", "test"),
        ),
        # DetSampleSelect-v1: a pool with empty images, near-duplicates, a class tail and hard images, where the
        # choice of images matters (benchmarks.al_headroom); the look-up table keys on the labeled set's labels
        1: (
            ("", "digits-pool"),
            ("-Test", "test-pool"),
        ),
    },
}

#: family (or id prefix, which wins) -> version -> constructor arguments every id of that version passes over its
#: preset (e.g. a new default reward). A version absent here passes none.
VERSIONS: dict[str, dict[int, Mapping[str, Any]]] = {
    # DetBoxSelect-v1: the pool-AP reward, which ranks selections as COCO AP over a dataset does (-v0: paper 001's
    # per-image AP)
    "box_select": {1: {"reward": "pool_ap"}},
}

#: id prefix -> native vector env (``gymnasium.make_vec(id, num_envs, vectorization_mode="vector_entry_point")``),
#: registered for every id of that variant.
VECTOR_ENTRY_POINTS: dict[str, str] = {
    "DetBoxSelect": "detgym.envs.box_select.vector:DetBoxSelectVectorEnv",
    "DetLossWeight": "detgym.envs.loss_weight.vector:DetLossWeightVectorEnv",
    "DetLossWeightContinuous": "detgym.envs.loss_weight.vector:DetLossWeightContinuousVectorEnv",
}

#: Env family names, in table order.
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(family for _, _, family in VARIANTS))


def _id_rows() -> dict[str, tuple[str, str, dict[str, Any], str]]:
    rows = {}
    for prefix, entry_point, family in VARIANTS:
        versions = PRESET_IDS.get(prefix, PRESET_IDS[family])
        for version, presets in versions.items():
            extra = VERSIONS.get(prefix, VERSIONS.get(family, {})).get(version, {})
            for suffix, preset in presets:
                rows[f"{prefix}{suffix}-v{version}"] = (entry_point, {"preset": preset, **extra}, family, prefix)
    return rows


_ROWS = _id_rows()

#: Every env id registered by :func:`register_envs`: id -> (entry point, default kwargs, family).
ENV_IDS: Mapping[str, tuple[str, dict, str]] = MappingProxyType(
    {env_id: (entry, kwargs, family) for env_id, (entry, kwargs, family, _) in _ROWS.items()}
)


def env_ids(family: str | None = None, *, test: bool | None = None, version: int | None = None) -> list[str]:
    """Registered ids, optionally of one family, only the ``-Test`` ids (``test=True``) or none of them, and
    only those of one version."""
    return [
        env_id for env_id, (_, kwargs, fam) in ENV_IDS.items()
        if (family is None or fam == family)
        and (test is None or kwargs["preset"].startswith("test") == test)
        and (version is None or env_id.endswith(f"-v{version}"))
    ]


def register_envs() -> None:
    """Register every detgym env id with gymnasium (idempotent)."""
    for env_id, (entry_point, kwargs, _, prefix) in _ROWS.items():
        if env_id not in registry:
            # no max_episode_steps: every env ends its episodes itself (end of schedule, budget, image)
            register(id=env_id, entry_point=entry_point, kwargs=dict(kwargs), disable_env_checker=False,
                     vector_entry_point=VECTOR_ENTRY_POINTS.get(prefix))
