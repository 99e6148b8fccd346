"""DetLossWeight: per-FPN-level loss weighting during detector training (paper 000, AVW / RLO).

Modules: ``env`` (the envs), ``vector`` (their native vector envs: N detectors trained in lockstep), ``presets``
(frozen configurations), ``weighting`` (eq. 2-5, 7, 9 as pure functions), ``observation`` (the observation
layout), ``wrappers`` (observation scaling for learning agents).
``weighting`` and ``observation`` are NumPy only; the envs (and torch) load on first use of their names here.
"""

from __future__ import annotations

from typing import Any

from .observation import build_observation, split_observation
from .presets import PRESETS, REWARDS, LossWeightPreset

__all__ = [
    "PRESETS",
    "REWARDS",
    "DetLossWeightContinuousEnv",
    "DetLossWeightContinuousVectorEnv",
    "DetLossWeightEnv",
    "DetLossWeightVectorEnv",
    "LogScaleObservation",
    "LossWeightPreset",
    "build_observation",
    "split_observation",
]

_LAZY = {"DetLossWeightEnv": ".env", "DetLossWeightContinuousEnv": ".env", "LogScaleObservation": ".wrappers",
         "DetLossWeightVectorEnv": ".vector", "DetLossWeightContinuousVectorEnv": ".vector"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
