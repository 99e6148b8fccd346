"""detgym's Gymnasium environments and their registration.

``import detgym`` calls :func:`register_envs`, so ``gymnasium.make("DetLossWeight-v0")`` works after it, and
``gymnasium.make("detgym:DetLossWeight-v0")`` works without it (gymnasium imports ``detgym`` first).
Entry points are strings, so registering imports neither torch nor the detectors.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

__all__ = ["ENV_IDS", "register_envs"]

_LOSS_WEIGHT = "detgym.envs.loss_weight:DetLossWeightEnv"
_LOSS_WEIGHT_CONT = "detgym.envs.loss_weight:DetLossWeightContinuousEnv"

# env id suffix -> preset name of detgym.envs.presets.PRESETS
_LOSS_WEIGHT_VARIANTS: dict[str, str] = {
    "": "default",
    "-RetinaNet": "retinanet",
    "-FCOS": "fcos",
    "-FasterRCNN": "fasterrcnn",
    "-RetinaNet-R50": "retinanet-r50",
    "-FCOS-R50": "fcos-r50",
    "-FasterRCNN-R50": "fasterrcnn-r50",
    "-Test": "test",
}

#: Every env id registered by :func:`register_envs`, with its entry point and default kwargs.
ENV_IDS: dict[str, tuple[str, dict]] = {}
for _suffix, _preset in _LOSS_WEIGHT_VARIANTS.items():
    ENV_IDS[f"DetLossWeight{_suffix}-v0"] = (_LOSS_WEIGHT, {"preset": _preset})
    ENV_IDS[f"DetLossWeightContinuous{_suffix}-v0"] = (_LOSS_WEIGHT_CONT, {"preset": _preset})


def register_envs() -> None:
    """Register every detgym env id with gymnasium (idempotent)."""
    for env_id, (entry_point, kwargs) in ENV_IDS.items():
        if env_id not in registry:
            # no max_episode_steps: the env truncates itself at the end of the training schedule
            register(id=env_id, entry_point=entry_point, kwargs=dict(kwargs), disable_env_checker=False)
