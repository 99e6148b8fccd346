"""DetBoxSelect: keep a trained detector's best candidate boxes instead of running NMS (paper 001).

Modules: ``presets`` (frozen configurations), ``candidates`` (the on-disk cache: the preset's detector trained once
and its pre-NMS candidates for every image), ``features`` (the per-candidate observation), ``table`` (a split laid
out for fast episodes), ``reward`` (per-image COCO AP of kept sets, prepared once per image), ``env`` (the three envs:
``DetBoxSelectEnv``, ``DetBoxSelectSeqEnv``, ``DetBoxRescoreEnv``) and ``vector`` (the native vector env of
``DetBoxSelect-v0``). The envs (and torch) load on first use of their names here.
"""

from __future__ import annotations

from typing import Any

from .presets import BASELINES, PRESETS, SPLITS, BoxSelectPreset

__all__ = [
    "BASELINES",
    "PRESETS",
    "SPLITS",
    "BoxSelectPreset",
    "DetBoxRescoreEnv",
    "DetBoxSelectEnv",
    "DetBoxSelectSeqEnv",
    "DetBoxSelectVectorEnv",
    "feature_layout",
    "load_candidates",
    "load_detector",
]

_LAZY = {
    "DetBoxSelectEnv": ".env", "DetBoxSelectSeqEnv": ".env", "DetBoxRescoreEnv": ".env",
    "DetBoxSelectVectorEnv": ".vector", "feature_layout": ".features", "load_candidates": ".candidates",
    "load_detector": ".candidates",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
