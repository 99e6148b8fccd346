"""DetSampleSelect: pool-based active learning for object detection (papers 002/003, MGRAL).

Modules: ``env`` (the envs), ``presets`` (frozen configurations and the published initial labeled sets),
``observation`` (the observation's column layout, NumPy only), ``features`` (embeddings and detection statistics
of the current detector), ``lookup`` (MGRAL's look-up table, section III-F), ``build`` (``detgym build-table``).
The envs (and torch) load on first use of their names here.
"""

from __future__ import annotations

from typing import Any

from .observation import COLUMNS, DETECTION_STATS, GLOBAL_COLUMNS, N_EXTRA, column
from .presets import LABEL_MODES, PRESETS, REWARD_MODES, TRAINING_MODES, SampleSelectPreset, draw_initial_sets

__all__ = [
    "COLUMNS",
    "DETECTION_STATS",
    "GLOBAL_COLUMNS",
    "LABEL_MODES",
    "N_EXTRA",
    "PRESETS",
    "REWARD_MODES",
    "TRAINING_MODES",
    "DetSampleSelectEnv",
    "DetSampleSelectSeqEnv",
    "LookupTable",
    "SampleSelectPreset",
    "build_table",
    "column",
    "draw_initial_sets",
]

_LAZY = {"DetSampleSelectEnv": ".env", "DetSampleSelectSeqEnv": ".env", "LookupTable": ".lookup",
         "build_table": ".build"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
